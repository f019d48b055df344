"""``python -m cgpu_kit.runtime.driver WORK_DIR``: run a job's template with papermill, detached.

Started in its own process session with no stdin and its output in ``runtime.log``. It records its pid,
runs the template with the parameters of ``job.json``, and writes ``status.json`` when it ends (exit code,
error), so that pollers learn the outcome from files, not from a connection that may have dropped.
A SIGTERM (or a ``cancel`` file) asks the item loop to stop after it has zipped what finished.

``python -m cgpu_kit.runtime.driver WORK_DIR --standby [--warm MODULE]... [--preload JSON]`` starts the same
driver ahead of its batch and waits to be claimed by the launch (standby.py); the kernel is started by the driver
itself (kernel.py).

A part of the same batch sent ahead to this runtime while this one runs may be handed to this driver
(handover.py): once its own part is over, the driver runs that one too, in the same kernel, with its output
in that part's ``runtime.log``.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ..util import write_json
from . import handover, kernel, layout, prespawn, standby


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    work_dir = Path(argv[0]).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        os.setsid()  # outlive the shell (and the cgpu terminal) that started us
    except OSError:
        pass
    km = None
    if "--standby" in argv[1:]:
        # the kernel most jobs name, launched before anything imports jupyter_client (prespawn.py)
        pre = prespawn.spawn(work_dir, prespawn.NATIVE)
        claimed, km = standby.wait(work_dir, [a for n, a in enumerate(argv) if n and argv[n - 1] == "--warm"],
                                   next((a for n, a in enumerate(argv) if n and argv[n - 1] == "--preload"), None),
                                   _skip_slow_imports, pre, _after(argv))
        if not claimed:
            return 0
    else:
        (work_dir / layout.PID).write_text(str(os.getpid()))
    current = [work_dir]  # the part the SIGTERM handler cancels
    signal.signal(signal.SIGTERM, lambda *_: (current[0] / layout.CANCEL).touch())
    fresh = "--standby" not in argv[1:]  # no kernel launched ahead yet
    handed: collections.deque[Path] = collections.deque()  # parts handed to this driver (handover.py)
    try:
        while True:
            status, km = _run_part(work_dir, km, fresh)
            handed.extend(handover.close(work_dir))  # no part is handed over to this one after this
            write_json(work_dir / layout.STATUS, status)  # the part is over: said before anything else (0.1 s)
            following = None
            while handed and following is None:  # a part not taken is left to its launch
                part = handed.popleft()
                following = part if handover.claim(part, standby.ended_well(status)) else None
            if following is None:
                return int(status["exit_code"])
            work_dir, fresh = following, False
            current[0] = work_dir
            kernel.close_stray_clients()
            os.chdir(work_dir)  # the part before's folder goes away once its final poll has it all
            _log_to(work_dir)
            if km is not None and not kernel.move(km, work_dir):
                kernel.stop(km)
                km = None
    finally:
        if current[0] != Path(argv[0]).resolve():  # it ran a part handed over: its clients were not collected yet
            kernel.close_stray_clients()
        kernel.stop(km)


def _run_part(work_dir: Path, km: Any, fresh: bool) -> tuple[dict[str, Any], Any]:
    """Run the template of the part in ``work_dir`` in ``km`` (started here where None: launched ahead of
    jupyter_client when ``fresh``); its status (not yet written) and the kernel it ran in."""
    (work_dir / layout.STATUS).unlink(missing_ok=True)
    job = json.loads((work_dir / layout.JOB_FILE).read_text())
    started = time.time()
    status = {"exit_code": 0, "error": None, "started": started}
    kernel_name = job.get("kernel_name") or "python3"
    if km is not None and km.kernel_name != kernel_name:  # the standby guessed the default kernel; the job names another
        kernel.stop(km)
        km = None
    # launched before jupyter_client is imported (prespawn.py), or by jupyter_client where it cannot be: either
    # way its boot overlaps papermill's import; one launched ahead is adopted after it, once it has bound its ports
    pre = prespawn.spawn(work_dir, kernel_name) if km is None and fresh else None
    if km is None and pre is None:
        km = kernel.start(work_dir, kernel_name)
    try:
        _skip_slow_imports()
        import papermill

        if pre is not None:
            km, pre = kernel.start(work_dir, kernel_name, pre), None
        papermill.execute_notebook(
            str(work_dir / layout.TEMPLATE), str(work_dir / layout.EXECUTED),
            parameters={
                "work_dir": str(work_dir), "params": job["params"], "processor": job.get("processor", ""),
                "item_timeout": float(job["item_timeout"]), "workers": int(job.get("workers", 0)),
            },
            cwd=str(work_dir), kernel_name=kernel_name, progress_bar=False, km=km,
            log_output=True, request_save_on_cell_execute=True,
            execution_timeout=math.ceil(job["timeout"]) if job.get("timeout") else None,  # nbclient takes whole seconds
        )
    except Exception as exc:  # the executed notebook is already written by papermill
        # a failed cell: its exception's own name and message, not the whole formatted traceback
        error = f"{exc.ename}: {exc.evalue}" if getattr(exc, "ename", None) else f"{type(exc).__name__}: {exc}"
        status.update(exit_code=1, error=error[-4000:])
        logging.getLogger("cgpu_kit.runtime").error("template failed: %s", exc)
    except BaseException:  # interrupted: a kernel started here is not yet the caller's to stop
        kernel.stop(km)
        raise
    finally:
        if pre is not None:  # papermill could not be imported: the kernel launched ahead was never adopted
            prespawn.discard(pre)
    status.update(ended=time.time(), cancelled=(work_dir / layout.CANCEL).exists())
    return status, km


def _log_to(work_dir: Path) -> None:
    """This process's output (its log lines, papermill's) from now on in ``work_dir``'s runtime.log."""
    fd = os.open(work_dir / layout.RUNTIME_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.getLogger("cgpu_kit.runtime").info("handed over by the part before it on this runtime: run in its "
                                               "driver and kernel (process %d)", os.getpid())


def _after(argv: list[str]) -> Path | None:
    """``--after WORK_DIR``: the batch whose end starts this standby driver (standby.py)."""
    named = next((a for n, a in enumerate(argv) if n and argv[n - 1] == "--after"), None)
    return Path(named) if named else None


def _skip_slow_imports() -> None:
    """Keep jsonschema from loading ``rfc3987_syntax`` when nbformat imports it: that module builds a parser
    at import, 2.3 s of every batch's start here, for the ``iri`` string format that no notebook schema uses;
    jsonschema goes without that one format check when the import fails, as it does when it is absent."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    # papermill's S3 handler, which it leaves out when boto3 cannot be imported: 0.2 s of boto3 imports where
    # boto3 is installed, for s3:// notebook paths the driver never uses (its notebooks are local files)
    sys.modules.setdefault("boto3", None)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
