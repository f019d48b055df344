"""A driver started ahead of its batch (``python -m cgpu_kit.runtime.driver WORK_DIR --standby``), while the
batch's inputs are still being checked or sent: it makes the work folder, starts the kernel, imports papermill,
has the kernel import the job's slow modules and the processor load its model (kernel.warm), then waits.

Launching claims it by renaming ``standby.pid`` to ``pid`` (one atomic step: a standby that gives up renames it
away first, and launching then starts a driver as before). One that nobody claims within
:data:`STANDBY_SECONDS` (``CGPU_KIT_STANDBY_SECONDS``), whose ``standby.pid`` is taken away (a discard) or whose
folder is removed, shuts its kernel down and exits.

A standby started ``--after`` another batch's work folder (the part before it on this runtime: lookahead.py)
claims itself the moment that batch has ended well (its status says so, not cancelled, and nobody cancelled
this one), so the next part starts with no call in between; the launch that comes later finds it running.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import kernel, layout, prespawn

log = logging.getLogger("cgpu_kit.runtime")

#: how long a standby driver waits to be claimed before it shuts its kernel down (``CGPU_KIT_STANDBY_SECONDS``)
STANDBY_SECONDS = 300.0


def wait(work_dir: Path, warm: list[str], preload: str | None, before_papermill: Callable[[], None],
         pre: prespawn.Prespawned | None = None, after: Path | None = None) -> tuple[bool, Any]:
    """Import papermill (after ``before_papermill``), start the kernel (adopting ``pre``, the python3 kernel
    launched ahead, where it can: kernel.start) and warm it, then wait to be claimed: (claimed, the kernel
    manager or None where the kernel did not start). Not claimed: the kernel is shut down, and the caller exits."""
    stop: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    km = kernel.start(work_dir, prespawn.NATIVE) if pre is None else None  # booting while papermill imports
    try:
        before_papermill()
        import papermill  # noqa: F401 - imported now, used once claimed
    except BaseException:
        if pre is not None:
            prespawn.discard(pre)
        kernel.stop(km)
        raise
    if pre is not None:  # launched ahead, booting meanwhile: adopted once it has bound its ports
        km = kernel.start(work_dir, prespawn.NATIVE, pre)

    let_go = kernel.warm(km, warm, preload) if km is not None and (warm or preload) else lambda: None
    log.info("standby driver ready (kernel started, papermill imported; the kernel importing %s%s)", ", ".join(warm),
             ", the processor loading ahead" if preload else "")
    try:
        return _wait_for_claim(work_dir, km, stop, after)
    finally:
        let_go()


def _wait_for_claim(work_dir: Path, km: Any, stop: list[bool], after: Path | None = None) -> tuple[bool, Any]:
    limit = float(os.environ.get("CGPU_KIT_STANDBY_SECONDS") or STANDBY_SECONDS)
    mine, deadline, seen = str(os.getpid()), time.monotonic() + limit, False
    while not claimed(work_dir, mine):
        if after is not None and _ended_well(after) and not (work_dir / layout.CANCEL).exists():
            try:  # claim ourselves, as a launch would (one atomic rename: a launch or a discard may come first)
                os.rename(work_dir / layout.STANDBY, work_dir / layout.PID)
                log.info("standby driver started itself: the batch before it (%s) ended", after.name)
            except OSError:
                after = None  # claimed by a launch, or discarded: seen below
            continue
        here = (work_dir / layout.STANDBY).exists()  # written by the shell that started us, just after
        gone, seen = seen and not here, seen or here  # renamed by a launch (claimed) or by a discard
        if gone or stop or not work_dir.is_dir() or time.monotonic() > deadline:
            if not gone:
                try:  # give up, unless a launch claimed us in the meantime (its rename came first)
                    os.replace(work_dir / layout.STANDBY, work_dir / f"{layout.STANDBY}.expired")
                except FileNotFoundError:
                    gone = True
            if gone and claimed(work_dir, mine, wait=1.0):
                break
            log.info("standby driver not claimed; stopping")
            kernel.stop(km)
            (work_dir / f"{layout.STANDBY}.expired").unlink(missing_ok=True)
            return False, None
        time.sleep(0.02)
    log.info("standby driver claimed")
    return True, km


def ended_well(status: dict[str, Any]) -> bool:
    """Whether a batch's status (``status.json``) says it ended well: exit 0, not cancelled."""
    return status.get("exit_code") == 0 and not status.get("cancelled")


def _ended_well(work_dir: Path) -> bool:
    """Whether the batch of ``work_dir`` (or of where its final poll moved it) ended, not cancelled, exit 0."""
    for folder in (work_dir, work_dir.parent.joinpath(*layout.TRASH, work_dir.name)):
        try:
            status = json.loads((folder / layout.STATUS).read_text())
        except (OSError, ValueError):
            continue
        return ended_well(status)
    return False


def claimed(work_dir: Path, mine: str, wait: float = 0.0) -> bool:
    """Whether ``work_dir``'s ``pid`` names process ``mine``: a launch renamed its ``standby.pid`` to ``pid``
    (waiting up to ``wait`` s to see it)."""
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
