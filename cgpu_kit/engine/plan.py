"""Step 2: the pending items packed into parts, the space checked on both sides, the parts, the template and
the job file sent, and the plan (what was sent where) recorded so that a later run or ``cgpu-kit attach``
picks the job up."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..batch import pack_part, split_parts
from ..exceptions import DiskSpaceError
from ..ledger import STATE_DIR
from ..runtime import layout
from ..transports.base import Transport
from ..util import cache_dir, write_json
from .delivery import find_item

if TYPE_CHECKING:
    from ..jobs.base import CGPUJob

log = logging.getLogger("cgpu_kit.jobs.base")

PLAN = "plan.json"
CLOSED = "closed"
#: parts are at most this big by default: one cgpu upload request carries it reliably
DEFAULT_PART_BYTES = 48 << 20


def pack(job: CGPUJob, *, by_reference: bool = False) -> list[Path]:
    """Zip the pending items into parts with their manifest (done again after a runtime is lost);
    ``by_reference``: manifests naming the inputs where they are, for a runtime that shares this machine's files."""
    pending = job.pending
    header = {"job_type": job.job_type, "job_id": job.job_id, "params": job.params, "version": __version__}
    parts_dir = job.state_dir / "parts"
    if parts_dir.exists():
        shutil.rmtree(parts_dir)
    paths = []
    for index, members in enumerate(split_parts(pending, job.part_bytes)):
        paths.append(pack_part(members, parts_dir / layout.part_name(index), dict(header, part=index),
                               by_reference=by_reference))
    return paths


def job_file(job: CGPUJob, chunk_seconds: float) -> Path:
    path = job.state_dir / layout.JOB_FILE
    write_json(path, {
        "job_type": job.job_type, "job_id": job.job_id, "params": job.params, "processor": job.processor,
        "item_timeout": job.item_timeout, "timeout": job.timeout, "workers": job.workers,
        "chunk_seconds": chunk_seconds, "version": __version__,
    })
    return path


def upload(job: CGPUJob, transport: Transport) -> None:
    """Stage the parts, the template and the job file; the launch sends them together (and what the runtime
    already holds is not sent again), after the runtime's free space is checked (:func:`check_free`)."""
    if job.sent_ahead:  # already there (lookahead.py); a retry after a lost runtime sends them again
        job.sent_ahead = False
        return
    started = time.monotonic()
    remote = job.remote(transport)
    remote.expect_space(lambda free: check_free(job, transport, free), need_bytes=job.space_needed()[1])
    parts = job.pack(by_reference=transport.shares_files)
    for part in parts:
        remote.upload(part, f"{layout.PARTS}/{part.name}", timeout=job.transfer_timeout(part.stat().st_size))
        log.info("to send: %s (%.1f MB)", part.name, part.stat().st_size / 1e6)
    remote.upload(job.template_file(), layout.TEMPLATE, timeout=120)
    remote.upload(job.job_file(chunk_seconds=transport.chunk_seconds), layout.JOB_FILE, timeout=60)
    job.write_plan(transport)
    job.timings["upload"] = round(job.timings.get("upload", 0) + time.monotonic() - started, 3)


def write_plan(job: CGPUJob, transport: Transport) -> None:
    """Record what was sent where, so a later run (or ``cgpu-kit attach``) can pick the job up."""
    write_json(job.state_dir / PLAN, {
        "job_type": job.job_type, "job_id": job.job_id, "params": job.params,
        "backend": getattr(job.backend, "name", job.backend), "remote_root": transport.remote_root,
        "remote_work_dir": job.remote_work_dir, "out_dir": str(job.out_dir), "time": time.time(),
        "items": [dict(vars(b), input_path=find_item(job, b.item_id).input_path) for b in job.pending],
    })
    (job.state_dir / CLOSED).unlink(missing_ok=True)
    _remember_job(job.job_id, job.out_dir)


def space_needed(job: CGPUJob) -> tuple[int, int]:
    """Bytes the batch needs (here, on the runtime): parts and chunks in transit, inputs and outputs."""
    inputs = sum(b.size for b in job.pending)
    outputs = sum(job.estimated_output_bytes(b) for b in job.pending)
    return inputs + int(outputs * 1.2), 2 * inputs + 2 * outputs


def check_space(job: CGPUJob, transport: Transport) -> None:
    """Refuse a batch that cannot fit, before anything is sent."""
    check_free(job, transport, job.remote(transport).free_bytes())


def check_free(job: CGPUJob, transport: Transport, free_there: int | None) -> None:
    """Refuse a batch that cannot fit here or in the runtime's ``free_there`` bytes (None: it cannot say)."""
    local_need, remote_need = job.space_needed()
    free_here = shutil.disk_usage(job.out_dir).free
    if free_here < local_need:
        raise DiskSpaceError(
            f"{job.out_dir} has {_mb(free_here)} free but this batch needs about {_mb(local_need)}; "
            "free some space or choose another output folder"
        )
    if free_there is not None and free_there < remote_need:
        raise DiskSpaceError(
            f"the runtime has {_mb(free_there)} free in {transport.remote_root} but this batch needs about "
            f"{_mb(remote_need)}; split the batch into smaller ones"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def _jobs_index() -> Path:
    return cache_dir("jobs")


def _remember_job(job_id: str, out_dir: Path) -> None:
    """Note where a job's state lives, so ``cgpu-kit attach JOB_ID`` works without ``-o``."""
    try:
        write_json(_jobs_index() / f"{job_id}.json", {"out_dir": str(out_dir)})
    except OSError as exc:
        log.debug("could not remember job %s: %s", job_id, exc)


def find_plan(job_id: str, out_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``plan.json`` of ``job_id``, in ``out_dir`` or wherever the jobs index says."""
    if out_dir is None:
        try:
            out_dir = json.loads((_jobs_index() / f"{job_id}.json").read_text())["out_dir"]
        except (OSError, ValueError, KeyError):
            return None
    path = Path(out_dir) / STATE_DIR / f"job_{job_id}" / PLAN
    return path if path.exists() else None


def open_jobs(out_dir: Path, job_type: str | None = None) -> list[dict[str, Any]]:
    """Plans of jobs in ``out_dir`` that sent work to a runtime and were never closed (their process died,
    or the runtime could not be reached at the end): their finished items can still be fetched."""
    found = []
    for plan_path in sorted((out_dir / STATE_DIR).glob(f"job_*/{PLAN}"), key=lambda p: p.stat().st_mtime):
        if (plan_path.parent / CLOSED).exists():
            continue
        try:
            plan = json.loads(plan_path.read_text())
        except (OSError, ValueError):
            continue
        if job_type is None or plan.get("job_type") == job_type:
            found.append(plan)
    return found
