"""Test doubles shipped with cgpu_kit, for your tests as for ours (as httpx ships ``MockTransport``).

:class:`MockTransport` is a runtime in a temporary folder of this machine, driven exactly as a remote one (the
local transport's real driver, real papermill kernel), whose every call is recorded in ``calls`` and handed
first to your ``handler``: observe it, fail it (raise a :class:`~cgpu_kit.exceptions.TransportError`: a
``ConnectionLostError`` is retried by the manager, a ``CallRefusedError`` is not), or change the runtime
under the batch (:meth:`MockTransport.lose_runtime`)::

    from cgpu_kit import CGPUJobManager
    from cgpu_kit.exceptions import ConnectionLostError
    from cgpu_kit.testing import FakeClock, MockTransport, fail_nth

    transport = MockTransport(fail_nth("put", 2, ConnectionLostError("injected")))
    manager = CGPUJobManager()
    manager.pacing.clock = FakeClock()          # every wait recorded, none waited
    result = manager.run(job_class("stabilize")(clips, "out", backend=transport))
    assert transport.count("put") > 2 and result.success

:class:`FakeClock` is a :class:`~cgpu_kit.clock.Clock` whose ``sleep`` only records the seconds and moves
its ``now`` on: give it to ``CGPUJobManager().pacing.clock`` and assert the waits (polls, grace periods,
retries) without waiting them.
"""

from __future__ import annotations

import atexit
import collections
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .clock import Clock
from .requirements import Requirements
from .transports.base import CommandResult
from .transports.local import LocalTransport
from .util import read_jsonl


@dataclass
class Call:
    """One call a transport received: ``method`` is ``run``, ``put``, ``get``, ``setup``, ``is_set_up`` or
    ``status`` (a poll); ``target`` the command or the remote path; ``n`` counts calls of that method from 1."""

    method: str
    target: str
    n: int
    local: Path | None = None
    transport: MockTransport | None = field(default=None, repr=False)


Handler = Callable[[Call], None]


def fail_nth(method: str, n: int, error: BaseException, *, times: int = 1) -> Handler:
    """A handler that raises ``error`` on the ``n``-th call of ``method`` and the ``times - 1`` calls after it,
    and lets every other call through."""
    def handler(call: Call) -> None:
        if call.method == method and n <= call.n < n + times:
            raise error

    return handler


class MockTransport(LocalTransport):
    """A runtime in a folder of this machine (a fresh temporary one by default), every call observed."""

    name = "mock"
    #: it stands for a remote runtime: its parts carry the media, as a Colab runtime's do
    shares_files = False

    def __init__(self, handler: Handler | None = None, remote_root: str | None = None) -> None:
        if remote_root is None:  # a folder of its own, removed when the process ends (tests make hundreds)
            remote_root = tempfile.mkdtemp(prefix="cgpu_kit_mock_")
            atexit.register(shutil.rmtree, remote_root, True)
        super().__init__(remote_root)
        self.handler = handler
        self.calls: list[Call] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def _see(self, method: str, target: str, local: Path | None = None) -> None:
        with self._lock:
            self._counts[method] += 1
            call = Call(method, target, self._counts[method], local, self)
            self.calls.append(call)
        if self.handler is not None:
            self.handler(call)

    def start_ahead(self, command: str) -> bool:
        """No head start: this transport stands for a remote runtime, where every call is counted and dear."""
        return False

    def count(self, method: str) -> int:
        """How many calls of ``method`` this transport received."""
        return self._counts[method]

    def run(self, command: str, *, timeout: float) -> CommandResult:
        self._see("run", command)
        return super().run(command, timeout=timeout)

    def put(self, local: Path, remote: str, *, timeout: float) -> bool:
        self._see("put", remote, local)
        return super().put(local, remote, timeout=timeout)

    def get(self, remote: str, local: Path, *, timeout: float) -> None:
        self._see("get", remote, local)
        return super().get(remote, local, timeout=timeout)

    def setup(self, requirements: Requirements, *, timeout: float) -> None:
        self._see("setup", self.remote_root)
        return super().setup(requirements, timeout=timeout)

    def is_set_up(self, requirements: Requirements, *, timeout: float) -> bool:
        self._see("is_set_up", self.remote_root)
        return super().is_set_up(requirements, timeout=timeout)

    def read_status(self, work_dir: str, since: int) -> dict:
        self._see("status", work_dir)
        return super().read_status(work_dir, since)

    # -- what a handler may look at or do -----------------------------------------------------------------

    @staticmethod
    def results_count(work_dir: str) -> int:
        """Items the batch in ``work_dir`` has finished so far (done or failed)."""
        return len(read_jsonl(Path(work_dir) / "results.jsonl"))

    def lose_runtime(self) -> None:
        """What a recycled Colab runtime does: every process working in its folder dies and its files vanish."""
        root = Path(self.remote_root)
        for pid in processes_in(root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child in root.iterdir() if root.is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def processes_in(folder: Path) -> list[int]:
    """Live processes working in ``folder`` (their working directory is in it, or their command line names it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and (cwd == folder or folder in cwd.parents or str(folder) in cmdline):
            found.append(int(proc.name))
    return found


class FakeClock(Clock):
    """A clock whose ``sleep`` records the seconds in ``sleeps`` and moves ``now`` on by them, pausing at most
    50 ms of real time (so that a real runtime behind a :class:`MockTransport` progresses meanwhile)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._now += seconds
        if seconds > 0:  # a real runtime (MockTransport's) gets on meanwhile: at most 50 ms of real time
            threading.Event().wait(min(seconds, 0.05))


__all__ = ["Call", "FakeClock", "MockTransport", "fail_nth", "processes_in"]


def processes_gone(folder: Path, within: float = 30.0) -> bool:
    """Whether every process working in ``folder`` (:func:`processes_in`) has ended within ``within`` seconds."""
    end = time.monotonic() + within
    while processes_in(folder) and time.monotonic() < end:
        time.sleep(0.1)
    return not processes_in(folder)
