"""The template's notebook kernel, started by the driver itself rather than by papermill: it boots (a second
or more: IPython's imports) while the driver imports papermill, or, for a standby driver (standby.py), before
the batch has even arrived; papermill hands the started kernel to nbclient, which only connects to it. The
driver launches it even before it imports jupyter_client (prespawn.py), and it is adopted here (adopt.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import prespawn

log = logging.getLogger("cgpu_kit.runtime")


def start(work_dir: Path, kernel_name: str, pre: prespawn.Prespawned | None = None) -> Any:
    """The template's kernel, started before this process imports papermill (as long again as its boot: a second
    or more of IPython's imports) so that it boots meanwhile on another core; None leaves the start to papermill.

    ``pre`` (prespawn.spawn), a kernel launched before this process imported jupyter_client and booting during
    that import, is adopted here after it, once it has bound its ports, where jupyter_client would have launched
    the same (adopt.py), else killed and a kernel started as before.
    papermill hands a kernel manager that already has a kernel to nbclient, which then only connects to it;
    the kernel runs in ``work_dir``, as papermill's ``cwd`` would have put it."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        specs = KernelSpecManager(kernel_dirs=prespawn.kernel_dirs())
        if pre is not None:
            km = _adopted(pre, kernel_name, specs)
            pre = None
            if km is not None:
                return km
        km = AsyncKernelManager(kernel_name=kernel_name, kernel_spec_manager=specs)
        run_sync(km.start_kernel)(cwd=str(work_dir))
        return km
    except Exception as exc:  # no such kernel spec, an old jupyter_client: papermill starts it, as it always did
        log.info("kernel not started early (%s); papermill starts it", exc)
        if pre is not None:
            prespawn.discard(pre)
        return None


def _adopted(pre: prespawn.Prespawned, kernel_name: str, specs: Any) -> Any:
    """``pre`` adopted into a started kernel manager, or None (then killed, its connection file removed)."""
    try:
        if pre.kernel_name != (prespawn.NATIVE if kernel_name == "python" else kernel_name):
            raise ValueError(f"it is a {pre.kernel_name} kernel, not {kernel_name}")
        from .adopt import adopt

        km = adopt(pre, specs)
        log.info("kernel launched ahead (pid %d) adopted", pre.process.pid)
        return km
    except Exception as exc:
        log.warning("kernel launched ahead not used (%s); starting one", exc)
        prespawn.discard(pre)
        return None


def stop(km: Any) -> None:
    """Shut down the kernel :func:`start` started (nbclient leaves a kernel it did not start running)."""
    if km is None:
        return
    try:
        from jupyter_core.utils import run_sync

        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    except Exception as exc:
        log.warning("could not stop the template's kernel: %s", exc)


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


def warm(km: Any, modules: list[str], preload: str | None = None) -> Callable[[], None]:
    """Have the kernel import ``modules`` and let the processor load its model ahead (``preload``: JSON of
    ``{"processor": "module:Class", "params": {...}}``; :meth:`Processor.warm`), silently and with no history, so
    that the template's first cells find them loaded; what fails is left to the template, which reports it.

    Returns once the kernel has started on it, not when it is done: papermill's requests queue behind it in
    the kernel, so a launch that comes meanwhile loses nothing and its notebook's start overlaps the warm-up.
    Call what it returns to let go of the connection (the kernel goes on with the request)."""
    from jupyter_core.utils import run_sync

    code = _WARM.format(modules=list(modules), preload=preload)
    kc = km.client()
    kc.start_channels()
    try:
        run_sync(kc.wait_for_ready)(timeout=60)
        msg_id = kc.execute(code, silent=True, store_history=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the kernel took it: closing our sockets now cannot lose it
            msg = run_sync(kc.get_iopub_msg)(timeout=max(0.1, deadline - time.monotonic()))
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg.get("msg_type") == "status":
                break
    except Exception as exc:  # a slow or odd kernel: the template imports them itself
        log.info("kernel not warmed (%s)", exc)
    return kc.stop_channels


def move(km: Any, work_dir: Path) -> bool:
    """Have the kernel (a part's, handed the next part: handover.py) work in ``work_dir`` from now on, as a
    kernel started there would; False where it no longer answers (the caller then starts another)."""
    from jupyter_core.utils import run_sync

    if not run_sync(km.is_alive)():
        return False
    kc = km.client()
    kc.start_channels()
    try:
        run_sync(kc.wait_for_ready)(timeout=30)
        reply = run_sync(kc.execute_interactive)(f"import os as _os; _os.chdir({str(work_dir)!r}); del _os",
                                                 silent=True, store_history=False, timeout=30)
        return reply["content"]["status"] == "ok"
    except Exception as exc:
        log.warning("the kernel of the part before did not take the next part (%s); starting one", exc)
        return False
    finally:
        kc.stop_channels()


def close_stray_clients() -> None:
    """Close the channels of the kernel clients papermill left open: nbclient leaves its client connected to a
    kernel it did not start (ours), which matters once the kernel runs a next part (handover.py): each part would
    leave one more client with open sockets, each warning when collected."""
    import gc

    from jupyter_client.client import KernelClient

    for obj in gc.get_objects():
        if isinstance(obj, KernelClient) and obj.channels_running:
            try:
                obj.stop_channels()
            except Exception:  # only tidying
                pass
