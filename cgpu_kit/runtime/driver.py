"""``python -m cgpu_kit.runtime.driver WORK_DIR``: run a job's template with papermill, detached.

Started in its own process session with no stdin and its output in ``runtime.log``. It records its pid,
runs the template with the parameters of ``job.json``, and writes ``status.json`` when it ends (exit code,
error), so that pollers learn the outcome from files, not from a connection that may have dropped.
A SIGTERM (or a ``cancel`` file) asks the item loop to stop after it has zipped what finished.

``python -m cgpu_kit.runtime.driver WORK_DIR --standby [--warm MODULE]... [--preload JSON]`` starts the same
driver ahead of its batch and waits to be claimed by the launch (standby.py); the kernel is started by the driver
itself (kernel.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

from ..util import write_json
from . import kernel, layout, prespawn, standby


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
    (work_dir / layout.STATUS).unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: (work_dir / layout.CANCEL).touch())
    job = json.loads((work_dir / layout.JOB_FILE).read_text())
    started = time.time()
    status = {"exit_code": 0, "error": None, "started": started}
    kernel_name = job.get("kernel_name") or "python3"
    if km is not None and km.kernel_name != kernel_name:  # the standby guessed the default kernel; the job names another
        kernel.stop(km)
        km = None
    if km is None:
        # launched before jupyter_client is imported (prespawn.py): its boot overlaps that import
        pre = None if "--standby" in argv[1:] else prespawn.spawn(work_dir, kernel_name)
        km = kernel.start(work_dir, kernel_name, pre)
    try:
        try:
            _skip_slow_imports()
            import papermill

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
        status.update(ended=time.time(), cancelled=(work_dir / layout.CANCEL).exists())
        write_json(work_dir / layout.STATUS, status)  # the batch is over: said before the kernel's shutdown (0.1 s)
    finally:
        kernel.stop(km)
    return int(status["exit_code"])


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
