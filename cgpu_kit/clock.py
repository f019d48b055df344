"""The one source of time for everything that waits (polls, grace periods, set-up waits, retries).

The manager holds a :class:`Clock` and hands it to the engine and to tenacity (``sleep=clock.sleep``), so a
test swaps in :class:`cgpu_kit.testing.FakeClock` and asserts every wait without waiting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


class Clock:
    """Real time: ``now()`` is monotonic seconds; ``sleep`` ends early when ``wake`` is set (a cancel)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if wake is not None and not wake.is_set():
            wake.wait(seconds)
        else:
            time.sleep(seconds)


#: the clock of code that was given none
SYSTEM_CLOCK = Clock()


@dataclass
class Pacing:
    """HOW OFTEN and HOW LONG a batch waits: the manager's choice, carried into the engine."""

    clock: Clock = field(default_factory=lambda: SYSTEM_CLOCK)
    #: seconds between polls of a running batch; None: the transport's own (``Transport.poll_interval``)
    poll_interval: float | None = None
    #: seconds a stopped batch (cancel, timeout, interrupt) gets to zip what finished before it is left
    stop_grace: float = 60.0
    #: times a batch whose driver died is launched again before the job fails
    max_relaunches: int = 2


__all__ = ["Clock", "Pacing", "SYSTEM_CLOCK"]
