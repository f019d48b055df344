"""Remote terminals that a killed ``cgpu run`` leaves behind, and the command that ends them.

Each ``cgpu run`` opens a new Jupyter terminal, then types the command followed by ``exit``. Killed after
it typed, the terminal ends by itself when the command does (the command has no stdin, so it cannot hang
on input). Killed in the short gap between opening the terminal and typing (a Ctrl-C, a timeout), the
terminal is a bare shell that Jupyter keeps for ever; one per such kill would pile up over a long session.

So every kill before the command began is noted here, on this machine (a file in the user's cache, so that
the next process, after a Ctrl-C, knows too), as the wall-clock window in which its terminal was opened.
The next ``cgpu run`` first ends the runtime's terminal shells that match one of those windows: siblings of
its own terminal's shell (children of the same Jupyter server), running nothing, and started within the
window (their age, which needs no clock shared with the runtime). A user's own terminal opened in that very
second and left idle is the only one that could match.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..util import cache_dir, write_json

#: seconds of slack on both sides of a window (process start ages are whole seconds)
SLACK = 2
#: windows older than this are forgotten
FORGET_AFTER = 86400.0


def ledger_path() -> Path:
    return cache_dir("cgpu_killed_calls.json")


def note_killed(executable: str, started: float, killed: float) -> None:
    """Record that a ``cgpu run`` started at ``started`` was killed at ``killed`` (wall clock) before it began."""
    path = ledger_path()
    windows = [w for w in _load(path) if time.time() - w["killed"] < FORGET_AFTER]
    windows.append({"cgpu": executable, "started": started, "killed": killed})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, windows)


def pending(executable: str) -> list[dict]:
    return [w for w in _load(ledger_path()) if w.get("cgpu") == executable and time.time() - w["killed"] < FORGET_AFTER]


def forget(windows: list[dict]) -> None:
    path = ledger_path()
    left = [w for w in _load(path) if w not in windows]
    if left:
        write_json(path, left)
    else:
        path.unlink(missing_ok=True)


def _load(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [w for w in data if isinstance(w, dict) and {"started", "killed"} <= set(w)] if isinstance(data, list) else []


def cleanup_command(windows: list[dict]) -> str:
    """A silent shell snippet (ends with ``; ``) that ends bare terminal shells opened within ``windows``."""
    now = time.time()
    tests = " || ".join(
        f'{{ [ "$a" -ge {max(int(now - w["killed"]) - SLACK, 0)} ] && [ "$a" -le {int(now - w["started"]) + SLACK} ]; }}'
        for w in windows
    )
    return (
        'pp=$(ps -o ppid= -p $$ | tr -d " "); '
        'ps -o pid=,etimes=,comm= --ppid "$pp" | while read -r p a c; do '
        'case "$c" in bash|sh) ;; *) continue ;; esac; '
        '[ "$p" = "$$" ] && continue; [ -n "$(ps -o pid= --ppid "$p")" ] && continue; '
        f'if {tests}; then kill -9 "$p"; fi; done >/dev/null 2>&1; '
    )
