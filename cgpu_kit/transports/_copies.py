"""The client copies of a send's zips, run beside the land call that waits for them (:mod:`._cgpu_send`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import CommandResult

log = logging.getLogger("cgpu_kit.transports._cgpu_send")

#: seconds a land waiting beside a copy goes on waiting after the client said that copy failed
COPY_GRACE = 5.0


@dataclass
class Sent:
    """A send's outcome: ``then``'s result, the first land call's (where a folded check printed), the zips."""

    result: CommandResult
    first: CommandResult
    zips: list[dict]


class Copies(threading.Thread):
    """The client copies of a send's zips, beside the land call that waits for them; ``failed`` tells the land
    to stop waiting: at once when a copy raised (refused, timed out), :data:`COPY_GRACE` seconds after one the
    client said failed (its answer may be what was lost: the land gets the time to find the zip and land it;
    stopped midway, it goes on on the runtime, and the retry's check skips what it landed)."""

    def __init__(self, transport: Any, zips: list[tuple[Path, dict]], deadline: float) -> None:
        super().__init__(name="cgpu-kit copy", daemon=True)
        self.transport, self.zips, self.deadline = transport, zips, deadline
        self.failed = threading.Event()
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            for path, entry in self.zips:
                sent = self.transport._send_one(path, entry["path"], deadline=self.deadline)
                log.info("sent %d file(s) in one copy (%.1f MB)", len(entry["members"]), entry["size"] / 1e6)
                if not sent.ok:
                    timer = threading.Timer(COPY_GRACE, self.failed.set)
                    timer.daemon = True
                    timer.start()
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the sending thread by finish()
            self.error = exc
            self.failed.set()

    def finish(self) -> None:
        """Wait for the copies; raise what one of them raised."""
        self.join()
        if self.error is not None:
            raise self.error
