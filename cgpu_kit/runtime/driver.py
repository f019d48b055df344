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
    try:
        import papermill

        papermill.execute_notebook(
            str(work_dir / layout.TEMPLATE), str(work_dir / layout.EXECUTED),
            parameters={
                "work_dir": str(work_dir), "params": job["params"], "processor": job.get("processor", ""),
                "item_timeout": float(job["item_timeout"]), "workers": int(job.get("workers", 0)),
            },
            cwd=str(work_dir), kernel_name=job.get("kernel_name") or "python3", progress_bar=False,
            log_output=True, request_save_on_cell_execute=True,
            execution_timeout=math.ceil(job["timeout"]) if job.get("timeout") else None,  # nbclient takes whole seconds
        )
    except Exception as exc:  # the executed notebook is already written by papermill
        # a failed cell: its exception's own name and message, not the whole formatted traceback
        error = f"{exc.ename}: {exc.evalue}" if getattr(exc, "ename", None) else f"{type(exc).__name__}: {exc}"
        status.update(exit_code=1, error=error[-4000:])
        logging.getLogger("cgpu_kit.runtime").error("template failed: %s", exc)
    status.update(ended=time.time(), cancelled=(work_dir / layout.CANCEL).exists())
    write_json(work_dir / layout.STATUS, status)
    return int(status["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
