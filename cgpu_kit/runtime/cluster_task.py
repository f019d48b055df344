"""One batch part on a Dask worker: the task that :mod:`cgpu_kit.cluster` submits.

No shared filesystem is assumed: the part arrives as zip bytes with the job file and the template, is
unpacked in a temporary folder of the worker, and runs there exactly as on any other runtime (the driver,
``python -m cgpu_kit.runtime.driver``, with papermill and the item loop). Each ``ready/out_NNNN.zip`` chunk
the loop cuts (one per finished item: the job file asks for ``chunk_seconds`` 0) is sent back at once on a
Dask queue with its sha256; the local side delivers it with the same code as every other transport.

A worker lost mid-part makes Dask run the task again elsewhere: it first reads the Dask variable where the
local side lists the items of this part it already delivered, and leaves them out. Cancelling is a Dask
variable too (a running task cannot be interrupted from outside): the loop's cancel file is touched, so the
running items stop and what finished still comes back.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from ..util import file_sha256, read_jsonl, tail
from . import layout

#: seconds between looks at the work folder (new chunks, the cancel flag)
POLL_SECONDS = 0.2
#: seconds a cancelled driver gets to wrap up before it is killed
STOP_GRACE = 20.0


def run_part(part: bytes, job_file: bytes, template: bytes, *, part_index: int, names: dict[str, str],
             modules: tuple[str, ...] = (), programs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one part on this worker; return how the driver ended (exit code, error, the executed notebook).

    ``names``: the Dask names of the job's ``queue`` (chunks go back there), ``done`` (a variable of the item
    ids of this part already delivered) and ``cancel`` (a variable set when the batch is stopped).
    """
    from distributed import Queue, Variable, get_worker

    worker = get_worker()
    _check_requirements(worker.address, modules, programs)
    if _read_variable(Variable(names["cancel"]), False):
        return {"part": part_index, "worker": worker.address, "exit_code": 0, "error": None, "cancelled": True}
    delivered = set(_read_variable(Variable(names["done"]), []))
    work_dir = Path(tempfile.mkdtemp(prefix=f"cgpu-kit-part{part_index:04d}-", dir=worker.local_directory))
    try:
        left = _write_part(work_dir, part, delivered)
        if not left:
            return {"part": part_index, "worker": worker.address, "exit_code": 0, "error": None, "skipped": len(delivered)}
        (work_dir / layout.JOB_FILE).write_bytes(job_file)
        (work_dir / layout.TEMPLATE).write_bytes(template)
        queue, cancel = Queue(names["queue"]), Variable(names["cancel"])
        sent: set[int] = set()
        status = _drive(work_dir, lambda: _send_chunks(work_dir, queue, part_index, worker.address, sent),
                        lambda: bool(_read_variable(cancel, False)))
        executed = work_dir / layout.EXECUTED
        return {
            "part": part_index, "worker": worker.address, "exit_code": status.get("exit_code", 1),
            "error": status.get("error"), "skipped": len(delivered), "items": left,
            "executed": executed.read_bytes() if executed.exists() else None,
            "log": tail(work_dir / layout.RUNTIME_LOG) if (work_dir / layout.RUNTIME_LOG).exists() else "",
        }
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _check_requirements(where: str, modules: tuple[str, ...], programs: tuple[str, ...]) -> None:
    """Refuse at once on a worker that lacks what the job needs: the message names the worker and the fix."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    absent = [p for p in programs if shutil.which(p) is None]
    if missing or absent:
        lacks = ", ".join([f"the Python module {m}" for m in missing] + [f"the program {p}" for p in absent])
        raise RuntimeError(f"the Dask worker {where} lacks {lacks}: install them in the workers' environment "
                           "(see docs/dask.md)")


def _read_variable(variable: Any, default: Any) -> Any:
    try:
        return variable.get(timeout=5)
    except Exception:  # not set yet, or the scheduler slow to answer: the default is safe
        return default


def _write_part(work_dir: Path, part: bytes, delivered: set[str]) -> list[str]:
    """Write the part into the work folder, without the items already delivered; return the item ids left."""
    parts = work_dir / layout.PARTS
    parts.mkdir(parents=True)
    dest = parts / layout.part_name(0)
    dest.write_bytes(part)
    if not delivered:
        with zipfile.ZipFile(dest) as zf:
            return [rec["item_id"] for rec in json.loads(zf.read("manifest.json"))["items"]]
    whole = dest.with_suffix(".whole")
    dest.rename(whole)
    with zipfile.ZipFile(whole) as src, zipfile.ZipFile(dest, "w", allowZip64=True) as out:
        manifest = json.loads(src.read("manifest.json"))
        keep = [rec for rec in manifest["items"] if rec["item_id"] not in delivered]
        out.writestr("manifest.json", json.dumps(dict(manifest, items=keep), indent=1, sort_keys=True))
        for rec in keep:
            out.writestr(src.getinfo(rec["file"]), src.read(rec["file"]))
    whole.unlink()
    return [rec["item_id"] for rec in keep]


def _drive(work_dir: Path, send: Any, cancelled: Any) -> dict[str, Any]:
    """Run the driver in its own process and send each chunk as it appears; return its ``status.json``."""
    with open(work_dir / layout.RUNTIME_LOG, "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "cgpu_kit.runtime.driver", str(work_dir)], cwd=work_dir,
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
    stop_by = None
    try:
        while proc.poll() is None:
            send()
            if stop_by is None and cancelled():
                (work_dir / layout.CANCEL).touch()
                stop_by = time.monotonic() + STOP_GRACE
            elif stop_by is not None and time.monotonic() > stop_by:
                proc.kill()
            time.sleep(POLL_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    send()
    try:
        return json.loads((work_dir / layout.STATUS).read_text())
    except (OSError, ValueError):
        return {"exit_code": proc.returncode or 1, "error": f"the driver ended with exit code {proc.returncode}"}


def _die_with_parent() -> None:
    """The driver dies with the worker process (Linux): a killed worker leaves no batch running behind it."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _send_chunks(work_dir: Path, queue: Any, part_index: int, worker: str, sent: set[int]) -> None:
    """Put each new ``ready/out_NNNN.zip`` on the queue (bytes, sha256, its items), then drop it here."""
    for rec in read_jsonl(work_dir / layout.READY / "index.jsonl"):
        if rec["chunk"] in sent:
            continue
        path = work_dir / layout.READY / layout.ready_name(rec["chunk"])
        data = path.read_bytes()
        queue.put({"part": part_index, "chunk": f"{work_dir.name}_{path.name}", "sha256": file_sha256(path), "data": data,
                   "items": rec["items"], "worker": worker})
        sent.add(rec["chunk"])
        path.unlink()
