"""``python -m cgpu_kit.runtime.driver WORK_DIR``: run a job's template with papermill, detached.

Started in its own process session with no stdin and its output in ``runtime.log``. It records its pid,
runs the template with the parameters of ``job.json``, and writes ``status.json`` when it ends (exit code,
error), so that pollers learn the outcome from files, not from a connection that may have dropped.
A SIGTERM (or a ``cancel`` file) asks the item loop to stop after it has zipped what finished.
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
from typing import Any

from ..util import write_json
from . import layout


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    work_dir = Path(argv[0]).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        os.setsid()  # outlive the shell (and the cgpu terminal) that started us
    except OSError:
        pass
    (work_dir / layout.PID).write_text(str(os.getpid()))
    (work_dir / layout.STATUS).unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: (work_dir / layout.CANCEL).touch())
    job = json.loads((work_dir / layout.JOB_FILE).read_text())
    started = time.time()
    status = {"exit_code": 0, "error": None, "started": started}
    kernel_name = job.get("kernel_name") or "python3"
    km = _start_kernel(work_dir, kernel_name)
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
    finally:
        _stop_kernel(km)
    status.update(ended=time.time(), cancelled=(work_dir / layout.CANCEL).exists())
    write_json(work_dir / layout.STATUS, status)
    return int(status["exit_code"])


def _start_kernel(work_dir: Path, kernel_name: str) -> Any:
    """The template's kernel, started now so that it boots (a second or more: IPython's imports) while this
    process imports papermill (as long again) on another core; None leaves the start to papermill, as before.

    papermill hands a kernel manager that already has a kernel to nbclient, which then only connects to it;
    the kernel runs in ``work_dir``, as papermill's ``cwd`` would have put it."""
    try:
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        km = AsyncKernelManager(kernel_name=kernel_name)
        run_sync(km.start_kernel)(cwd=str(work_dir))
        return km
    except Exception as exc:  # no such kernel spec, an old jupyter_client: papermill starts it, as it always did
        logging.getLogger("cgpu_kit.runtime").info("kernel not started early (%s); papermill starts it", exc)
        return None


def _stop_kernel(km: Any) -> None:
    """Shut down the kernel :func:`_start_kernel` started (nbclient leaves a kernel it did not start running)."""
    if km is None:
        return
    try:
        from jupyter_core.utils import run_sync

        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    except Exception as exc:
        logging.getLogger("cgpu_kit.runtime").warning("could not stop the template's kernel: %s", exc)


def _skip_slow_imports() -> None:
    """Keep jsonschema from loading ``rfc3987_syntax`` when nbformat imports it: that module builds a parser
    at import, 2.3 s of every batch's start here, for the ``iri`` string format that no notebook schema uses;
    jsonschema goes without that one format check when the import fails, as it does when it is absent."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
