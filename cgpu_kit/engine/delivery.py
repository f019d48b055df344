"""Steps 4-5: results come home. Each finished chunk is fetched (checked by sha256), unpacked safely, and each
item's outputs are moved into the output folder under their final names and recorded in the ledger; an
output that arrived damaged, or whose name a user's file holds, fails or skips that item alone."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..batch import safe_extract
from ..results import ItemResult, ItemStatus
from ..runtime import layout
from ..transports.base import Transport
from ..util import file_sha256
from .inputs import keep_users_files

if TYPE_CHECKING:
    from ..jobs.base import CGPUJob

log = logging.getLogger("cgpu_kit.jobs.base")


def absorb(job: CGPUJob, status: dict[str, Any], transport: Transport) -> None:
    """Take new item results (progress) and fetch every finished chunk not yet here."""
    for rec in status.get("results", []):
        job.results_seen += 1
        result = find_item(job, rec["item_id"])
        if result is not None and result.status is ItemStatus.PENDING:
            result.timings.update(rec.get("timings", {}))
    for name, meta in sorted(status.get("ready", {}).items()):
        if name not in job.chunks_done:
            take_chunk(job, transport, name, meta)


def take_chunk(job: CGPUJob, transport: Transport, name: str, meta: dict[str, Any]) -> None:
    started = time.monotonic()
    local = job.state_dir / "chunks" / name
    if not (local.exists() and file_sha256(local) == meta.get("sha256")):
        job.remote(transport).fetch(f"{layout.READY}/{name}", local, sha256=meta.get("sha256"),
            timeout=job.transfer_timeout(meta.get("size", 0)))
    dest = job.state_dir / "chunks" / (name + ".d")
    if dest.exists():
        shutil.rmtree(dest)
    safe_extract(local, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    for rec in manifest["results"]:
        deliver(job, rec, dest / rec["item_id"])
    shutil.rmtree(dest, ignore_errors=True)
    local.unlink(missing_ok=True)
    job.chunks_done.add(name)
    job.timings["download"] = round(job.timings.get("download", 0) + time.monotonic() - started, 3)


def reset_remote_progress(job: CGPUJob) -> None:
    """Forget what was seen of a runtime that was lost; items already delivered stay delivered."""
    job.results_seen = 0
    job.chunks_done = set()
    job.logs_local = False
    for result in job.items:
        if result.status is ItemStatus.CANCELLED:
            result.status = ItemStatus.PENDING


def find_item(job: CGPUJob, item_id: str) -> ItemResult | None:
    return next((i for i in job.items if i.item_id == item_id), None)


def deliver(job: CGPUJob, rec: dict[str, Any], folder: Path) -> None:
    """Move one item's outputs into the output folder under their final names and record them."""
    result = find_item(job, rec["item_id"])
    item = job.batch_items.get(rec["item_id"])
    if result is None or item is None or result.status not in (ItemStatus.PENDING, ItemStatus.CANCELLED):
        return
    result.timings.update(rec.get("timings", {}))
    result.metadata.update(rec.get("metadata", {}))
    if rec.get("stderr_tail"):
        result.metadata["stderr_tail"] = rec["stderr_tail"]
    if rec["status"] != "done":
        result.status = ItemStatus.FAILED if rec["status"] == "failed" else ItemStatus.CANCELLED
        result.error = f"{item.source}: {rec.get('error') or 'failed'}"
        notify(job, result)
        return
    earlier = job.ledger.get(item.out_stem)
    if earlier is not None and earlier.get("job_id") == job.job_id and job.ledger.intact(item.out_stem, item.key):
        # a resumed job meets a chunk it already delivered: the item is done, nothing is moved or recorded again
        result.status = ItemStatus.DONE
        result.outputs = [str(job.out_dir / o) for o in earlier["outputs"]]
        notify(job, result)
        return
    for name in rec["outputs"]:
        src = folder / name
        digest = rec.get("sha256", {}).get(name)
        if not src.is_file() or (digest and file_sha256(src) != digest):
            result.status = ItemStatus.FAILED
            result.error = f"{item.source}: its output {name} arrived damaged; run again to redo it"
            notify(job, result)
            return
    finals = [job.output_name(item.out_stem, name) for name in rec["outputs"]]
    kept = [] if job.overwrite else [f for f in finals if not job.ledger.owns(f)]
    if kept:
        keep_users_files(job, result, kept)
        notify(job, result)
        return
    outputs, sizes, digests = [], {}, {}
    for name, final in zip(rec["outputs"], finals):
        src = folder / name
        digest = rec.get("sha256", {}).get(name)
        dest = job.out_dir / final
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        outputs.append(final)
        sizes[final] = dest.stat().st_size
        digests[final] = digest or file_sha256(dest)
    result.outputs = [str(job.out_dir / o) for o in outputs]
    result.status = ItemStatus.DONE
    job.ledger.add({
        "key": item.key, "status": "done", "input": item.source, "out_stem": item.out_stem,
        "outputs": outputs, "sizes": sizes, "sha256": digests, "job_id": job.job_id, "job_type": job.job_type,
        "time": time.time(),
    })
    from .settle import preview_early  # settle imports this module

    preview_early(job, result)
    notify(job, result)


def notify(job: CGPUJob, result: ItemResult) -> None:
    if job.on_item is not None:
        try:
            job.on_item(job, result)
        except Exception:  # a broken progress display must not cost the batch
            log.exception("progress callback failed")
