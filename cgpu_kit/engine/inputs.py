"""Step 1 of a batch: every input checked (readable, real media this job type accepts), hashed, and either
planned, skipped (done before, a duplicate, a user's file in the way) or failed with a message that names the
file and what to do. A bad input fails alone; the rest of the batch goes on."""

from __future__ import annotations

import concurrent.futures as cf
import errno
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..batch import BatchItem, member_name
from ..exceptions import InputError
from ..ledger import STATE_DIR, Ledger, item_key
from ..media import MediaInfo, forget_ahead, probe_ahead, quick_probe
from ..results import ItemResult, ItemStatus
from ..util import file_sha256, real_path

if TYPE_CHECKING:
    from ..jobs.base import CGPUJob

log = logging.getLogger("cgpu_kit.jobs.base")


def prepare(job: CGPUJob) -> None:
    """Validate every input, skip what the output folder already holds, and plan the rest.

    Outputs are never taken as inputs: whatever lies inside the output folder, or is recorded as written by
    the toolkit in a ledger, is left out (one line says how many), so a glob that reaches the output folder
    does not process the outputs of earlier runs again.
    """
    started = time.monotonic()
    job.hold_output()
    job.state_dir.mkdir(parents=True, exist_ok=True)
    job.items = []
    seen: dict[Path, ItemResult] = {}
    taken: set[str] = set()
    names, job.left_out = leave_out_outputs(job, job.input_names)
    if job.left_out:
        log.warning("%d input(s) left out: they are outputs of cgpu-kit (inside %s or recorded in a ledger)",
                    len(job.left_out), job.out_dir)
    job.inputs = [Path(n) for n in names]
    checked = check_all(job, job.inputs)
    for n, (name, raw) in enumerate(zip(names, job.inputs)):
        result = ItemResult(input_path=name, item_id=f"i{n:04d}")
        job.items.append(result)
        try:
            path = raw.expanduser().absolute()
            real = real_path(path)
            if real in seen:
                result.status = ItemStatus.SKIPPED
                result.error = f"duplicate of input {seen[real].input_path!r}; processed once"
                result.metadata["duplicate_of"] = seen[real].item_id
                continue
            seen[real] = result
            info, sha = checked[n]()
            key = item_key(job.job_type, sha, job.params, job.tool_version())
            stem = job.ledger.stem_for(path.stem, key, taken)
            taken.add(stem)
            item = BatchItem(
                result.item_id, str(path), path.name, path.stat().st_size, sha,
                member_name(result.item_id, path.name), out_stem=stem, key=key, probe=info.to_dict(),
            )
            result.metadata.update(key=key, media=info.to_dict())
            done = None if job.force else job.ledger.intact(stem, key)
            if done is not None:
                result.status = ItemStatus.SKIPPED
                result.outputs = [str(job.out_dir / o) for o in done["outputs"]]
                result.metadata["skipped"] = "already done in an earlier run; outputs checked intact"
                continue
            kept = [] if job.overwrite else job.ledger.changed_outputs(stem)
            if kept:
                keep_users_files(job, result, kept)
                continue
            if job._is_own_output(path, stem):
                raise InputError(
                    f"{path}: its output would overwrite it; choose an output folder other than its own",
                    path=str(path),
                )
            job.batch_items[result.item_id] = item
        except InputError as exc:
            result.status = ItemStatus.FAILED
            result.error = str(exc)
        except OSError as exc:
            result.status = ItemStatus.FAILED
            result.error = f"{name}: cannot be read ({exc.strerror or exc}); check the file and its permissions"
    skipped = sum(1 for i in job.items if i.status is ItemStatus.SKIPPED and "skipped" in i.metadata)
    if skipped:
        log.info("%d item(s) already done in %s: skipped (use force=True / --force to redo them)", skipped, job.out_dir)
    job.prepared = True
    job.timings["prepare"] = round(time.monotonic() - started, 3)


def leave_out_outputs(job: CGPUJob, names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``names`` into real inputs and outputs of the toolkit (inside the output folder, or recorded
    by the ledger of the folder they are in)."""
    out_real = real_path(job.out_dir)
    ledgers: dict[Path, Ledger] = {}
    keep, left = [], []
    for name in names:
        path = Path(os.path.normpath(Path(name).expanduser().absolute()))
        real = real_path(path)
        inside = real == out_real or out_real in real.parents or job.out_dir in path.parents
        if inside and job.outputs_beside_inputs:
            inside = STATE_DIR in real.parts or (real.parent == out_real and job.ledger.wrote(real.name))
        elif not inside:
            folder = real.parent
            ledger = ledgers.setdefault(folder, Ledger(folder))
            inside = ledger.wrote(real.name)
        (left if inside else keep).append(name)
    return keep, left


def keep_users_files(job: CGPUJob, result: ItemResult, names: Sequence[str]) -> None:
    """Skip an item whose output names are taken by files the toolkit did not write (or that changed since)."""
    files = ", ".join(str(job.out_dir / n) for n in names)
    result.status = ItemStatus.SKIPPED
    result.error = (
        f"{result.input_path}: kept {files}: not written by cgpu-kit, or changed since it was; "
        "use --overwrite (overwrite=True) to replace it, or choose another output folder"
    )
    result.metadata["kept_files"] = [str(job.out_dir / n) for n in names]
    log.warning("%s", result.error)


def check_all(job: CGPUJob, inputs: Sequence[Path]) -> list[Callable[[], tuple[MediaInfo, str]]]:
    """Probe and hash every input side by side (ffmpeg and disk bound); each result re-raises its error. The
    probes are made ahead, many inputs to one ffmpeg (media.probe_ahead); each check takes its own.

    An interrupt cancels the checks not yet started, so Ctrl-C ends the run within a second or two.
    """
    def check(raw: Path) -> tuple[MediaInfo, str]:
        path = raw.expanduser().absolute()
        return job.validate(path), file_sha256(path)

    pool = cf.ThreadPoolExecutor(max(1, min(8, len(inputs))))
    paths = list(dict.fromkeys(raw.expanduser().absolute() for raw in inputs))
    try:
        if len(paths) > 1:  # one ffmpeg start for many inputs, one ffmpeg per core; each check takes its probe
            cores = max(1, min(len(paths) // 2, os.cpu_count() or 1))
            list(pool.map(probe_ahead, [paths[k::cores] for k in range(cores)]))
        once: dict[Path, cf.Future[tuple[MediaInfo, str]]] = {}  # a duplicate input is checked once
        for raw in inputs:
            real = real_path(raw.expanduser().absolute())
            if real not in once:
                once[real] = pool.submit(check, raw)
        cf.wait(once.values())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        forget_ahead(paths)
    pool.shutdown(wait=True)
    return [once[real_path(raw.expanduser().absolute())].result for raw in inputs]


def validate(job: CGPUJob, path: Path) -> MediaInfo:
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link that loops back on itself; point it at a real file",
                             path=str(path)) from None
        if path.is_symlink():
            raise InputError(f"{path}: is a symbolic link to a file that does not exist; fix or remove the link",
                             path=str(path)) from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise InputError(f"{path}: no such file; check the path", path=str(path)) from None
        raise InputError(f"{path}: cannot be read ({exc.strerror}); check the file and its permissions",
                         path=str(path)) from None
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file; give the files inside it", path=str(path))
    if not path.is_file():
        raise InputError(
            f"{path}: is not a regular file (a pipe, socket or device); save its content to a file and give that",
            path=str(path),
        )
    if path.stat().st_size == 0:
        raise InputError(f"{path}: is empty (0 bytes); re-export or re-download it", path=str(path))
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot be read; check its permissions", path=str(path))
    info = quick_probe(path)
    job.check_media(path, info)
    return info
