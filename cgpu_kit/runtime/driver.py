"""``python -m cgpu_kit.runtime.driver WORK_DIR``: run a job's template with papermill, detached.

Started in its own process session with no stdin and its output in ``runtime.log``. It records its pid,
runs the template with the parameters of ``job.json``, and writes ``status.json`` when it ends (exit code,
error), so that pollers learn the outcome from files, not from a connection that may have dropped.
A SIGTERM (or a ``cancel`` file) asks the item loop to stop after it has zipped what finished.

``python -m cgpu_kit.runtime.driver WORK_DIR --standby [--warm MODULE]... [--preload JSON]`` starts the same
driver ahead of its batch, while the batch's inputs are still checked or sent: it makes the folder, starts the
kernel, imports papermill and, in the kernel, the job's heavy modules, and lets the processor load its model
(``Processor.warm``; silently: nothing of it enters the executed notebook), then waits to be claimed.
Launching claims it by renaming ``standby.pid`` to ``pid`` (one atomic step: a standby that gives up renames it
away first, and launching then starts a driver as before). A standby that nobody claims within
:data:`STANDBY_SECONDS`, or whose folder is removed, shuts its kernel down and exits.
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

#: how long a standby driver waits to be claimed before it shuts its kernel down (``CGPU_KIT_STANDBY_SECONDS``)
STANDBY_SECONDS = 300.0


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
        km = _standby(work_dir, [a for n, a in enumerate(argv) if n and argv[n - 1] == "--warm"],
                      next((a for n, a in enumerate(argv) if n and argv[n - 1] == "--preload"), None))
        if km is None:
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
        _stop_kernel(km)
        km = None
    if km is None:
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


def _standby(work_dir: Path, warm: list[str], preload: str | None) -> Any:
    """Start the kernel, import papermill and warm the kernel, then wait to be claimed; the kernel manager, or
    None when nobody claimed this standby (it has shut its kernel down)."""
    log = logging.getLogger("cgpu_kit.runtime")
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    km = _start_kernel(work_dir, "python3")
    _skip_slow_imports()
    import papermill  # noqa: F401 - imported now, used once claimed

    if km is not None and (warm or preload):
        _warm(km, warm, preload)
    log.info("standby driver ready (kernel started, %s imported%s)", ", ".join(["papermill", *warm]),
             ", the processor warmed" if preload else "")
    wait = float(os.environ.get("CGPU_KIT_STANDBY_SECONDS") or STANDBY_SECONDS)
    mine, deadline, seen = str(os.getpid()), time.monotonic() + wait, False
    while not _claimed(work_dir, mine):
        here = (work_dir / layout.STANDBY).exists()  # written by the shell that started us, just after
        gone, seen = seen and not here, seen or here  # renamed by a launch (claimed) or by a discard
        if gone or stop or not work_dir.is_dir() or time.monotonic() > deadline:
            if not gone:
                try:  # give up, unless a launch claimed us in the meantime (its rename came first)
                    os.replace(work_dir / layout.STANDBY, work_dir / f"{layout.STANDBY}.expired")
                except FileNotFoundError:
                    gone = True
            if gone and _claimed(work_dir, mine, wait=1.0):
                break
            log.info("standby driver not claimed; stopping")
            _stop_kernel(km)
            (work_dir / f"{layout.STANDBY}.expired").unlink(missing_ok=True)
            return None
        time.sleep(0.02)
    log.info("standby driver claimed")
    return km if km is not None else _start_kernel(work_dir, "python3")


def _claimed(work_dir: Path, mine: str, wait: float = 0.0) -> bool:
    """Whether the launch renamed our ``standby.pid`` to ``pid`` (waiting up to ``wait`` s to see it)."""
    until = time.monotonic() + wait
    while True:
        try:
            if (work_dir / layout.PID).read_text().strip() == mine:
                return True
        except OSError:
            pass
        if time.monotonic() >= until:
            return False
        time.sleep(0.02)


#: run in the standby's kernel: a function (deleted after), so that nothing it imports or loads is left as a name
#: in the template's namespace
_WARM = """def _cgpu_kit_warm(modules, preload):
    import importlib, json
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    if preload:
        try:
            from cgpu_kit.runtime.processor import load_processor
            spec = json.loads(preload)
            load_processor(spec["processor"]).warm(spec["params"])
        except Exception:
            pass
_cgpu_kit_warm({modules!r}, {preload!r})
del _cgpu_kit_warm
"""


def _warm(km: Any, modules: list[str], preload: str | None = None) -> None:
    """Import ``modules`` in the kernel and let the processor load its model ahead (``preload``: JSON of
    ``{"processor": "module:Class", "params": {...}}``; :meth:`Processor.warm`), silently and with no history, so
    that the template's first cells find them loaded; what fails is left to the template, which reports it."""
    from jupyter_core.utils import run_sync

    code = _WARM.format(modules=list(modules), preload=preload)
    kc = km.client()
    kc.start_channels()
    try:
        run_sync(kc.wait_for_ready)(timeout=60)
        msg_id = kc.execute(code, silent=True, store_history=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            reply = run_sync(kc.get_shell_msg)(timeout=max(0.1, deadline - time.monotonic()))
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                break
    except Exception as exc:  # a slow or odd kernel: the template imports them itself
        logging.getLogger("cgpu_kit.runtime").info("kernel not warmed (%s)", exc)
    finally:
        kc.stop_channels()


def _start_kernel(work_dir: Path, kernel_name: str) -> Any:
    """The template's kernel, started now so that it boots (a second or more: IPython's imports) while this
    process imports papermill (as long again) on another core; None leaves the start to papermill, as before.

    papermill hands a kernel manager that already has a kernel to nbclient, which then only connects to it;
    the kernel runs in ``work_dir``, as papermill's ``cwd`` would have put it."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.paths import jupyter_path
        from jupyter_core.utils import run_sync

        # the kernel folders named here: left to its default, the spec manager imports IPython (half a second, before
        # the kernel is even launched) only to learn the legacy ~/.ipython/kernels folder
        ipython = os.path.join(os.path.expanduser(os.environ.get("IPYTHONDIR") or "~/.ipython"), "kernels")
        specs = KernelSpecManager(kernel_dirs=[*jupyter_path("kernels"), ipython])
        km = AsyncKernelManager(kernel_name=kernel_name, kernel_spec_manager=specs)
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
    # papermill's S3 handler, which it leaves out when boto3 cannot be imported: 0.2 s of boto3 imports where
    # boto3 is installed, for s3:// notebook paths the driver never uses (its notebooks are local files)
    sys.modules.setdefault("boto3", None)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
