"""A part sent ahead, handed to the driver of the part before it on the same runtime.

A runtime's next part is sent while its current one ends (cgpu_kit/lookahead.py). Rather than a standby
driver of its own (a second papermill import and kernel boot, while the current part still runs), the part
is handed to the driver that runs the current one: the send writes that driver's pid as the part's
``standby.pid`` and the part's folder name in the current one's ``next`` (remote.py: a runtime's parts are
folders side by side under its remote root, and a name is one line whatever that root's path holds). When the
current part ends, its driver closes its ``next`` (no hand-over after that), takes the part as a launch would
claim a standby (``standby.pid`` renamed to ``pid``) and runs it in the same kernel: its imports and the
processor's model are already loaded.

The door is a lock (``flock``) on ``next.lock``: the send writes ``next`` only while it holds the lock and
``next.closed`` is absent, and the driver makes ``next.closed`` under the same lock before it reads
``next``, so a part is either seen by the driver or gets a standby driver of its own. A part that a launch
claimed meanwhile (its ``pid`` is the driver's) is run whatever became of the part before it; one that
nobody claimed runs only after a part that ended well and was not cancelled, else its ``standby.pid`` is
taken away and the launch starts a driver for it as before.

The kernel's own output (what it writes to its stdout and stderr, outside the cells the executed notebook
shows) stays in the first part's ``runtime.log``; the driver's and papermill's go to each part's own.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import layout
from .standby import claimed


def close(work_dir: Path) -> list[Path]:
    """Close ``work_dir``'s door to hand-overs and return the parts handed to it (in the order they came)."""
    try:
        import fcntl  # POSIX only, as the shell's flock that hands parts over: elsewhere none is handed over
    except ImportError:
        return []
    try:
        with open(work_dir / layout.NEXT_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            (work_dir / layout.NEXT_CLOSED).touch()
            named = (work_dir / layout.NEXT).read_text().splitlines()
    except OSError:  # no hand-over (no next file), or the folder is gone
        return []
    return [work_dir.parent / line for line in named if line.strip()]  # a name beside this folder, or a whole path


def claim(part: Path, ended_well: bool) -> bool:
    """Whether this process runs ``part`` now: claimed from its ``standby.pid`` (after a part that ended well,
    not cancelled, and the part itself not cancelled) or by a launch that came first. A part not taken has
    its ``standby.pid`` moved away, so that its launch starts a driver for it."""
    mine = str(os.getpid())
    standby = part / layout.STANDBY
    try:
        waiting = standby.read_text().strip() == mine
    except OSError:
        waiting = False
    if waiting:
        try:
            if ended_well and not (part / layout.CANCEL).exists():
                os.rename(standby, part / layout.PID)  # as a launch claims a standby: one atomic step
                return True
            os.replace(standby, part / f"{layout.STANDBY}.expired")
        except OSError:  # a launch or a discard renamed it first
            pass
    return claimed(part, mine)
