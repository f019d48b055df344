"""A pool worker's next part, sent to its runtime while the current part ends (pool.py).

Through a Colab client every part pays its calls (a copy and a land, a second or more each) and a driver's
and kernel's start before its first item. A worker whose part is nearly done (what is left of it would take
about as long as a part's overhead, measured; the runtime's poll says when, from the time its items took)
takes its next part from the queue then and sends its files; the part is handed to the running part's
driver, which runs it in the same kernel the moment the running part ends well (runtime/handover.py), or,
where the running part has ended already, gets a standby driver that starts itself. The next part's launch
then finds it running. The next part is taken only that near the end, so a slow runtime does not hold items
a free one could take.

A part sent ahead that is not run (the runtime dropped, the batch cancelled) gives its items back to the
queue, and it is cancelled on the runtime (its standby given back, whichever driver holds it).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from .exceptions import CgpuKitError

if TYPE_CHECKING:
    from .batch import BatchItem
    from .jobs.base import CGPUJob
    from .pool import Pool, Worker

log = logging.getLogger(__name__)

#: seconds before a part's end that the next part is sent: a part's measured overhead, within these bounds
LEAD_SECONDS = 4.0
MAX_LEAD_SECONDS = 30.0


class Lookahead:
    """One worker's part sent ahead: watches the running part, then sends the next one."""

    def __init__(self, pool: Pool, worker: Worker) -> None:
        self.pool, self.worker = pool, worker
        self.sent: tuple[CGPUJob, list[BatchItem]] | None = None
        self._thread: threading.Thread | None = None

    def watch(self, current: CGPUJob) -> None:
        """Send the next part once ``current``'s runtime says it is near its end (its polls ask: polling.py)."""
        current.near_end_s = max(LEAD_SECONDS, min(self.pool.overhead_s, MAX_LEAD_SECONDS))
        current.on_near_end = self._near

    def _near(self, current: CGPUJob) -> None:  # in the part's polling thread: the send goes beside it
        if self._thread is None and not self.pool.job.cancel_event.is_set() and self.worker.label in self.pool.alive:
            self._thread = threading.Thread(target=self._send, args=(current,), name=f"cgpu-kit ahead of {current.job_id}",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """The running part ended: a send under way is finished first."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def take(self) -> tuple[CGPUJob, list[BatchItem]] | None:
        """The part sent ahead (then run it), or None."""
        sent, self.sent = self.sent, None
        return sent

    def discard(self) -> None:
        """A part sent ahead that will not run here: its items back to the queue, its driver stopped."""
        self.stop()
        sent = self.sent
        if sent is None:
            return
        part, items = sent
        if not self.pool.job.cancel_event.is_set():
            self.pool.give_back(items)
        self.sent = None  # only now: a worker waiting for items back sees this part until they are back
        state = self.worker.state
        if state is not None:
            part.remote(state.transport).discard_standby(stop=True)  # it may have started itself
        part.mark_closed()
        part.release_output()

    def _send(self, current: CGPUJob) -> None:
        state = self.worker.state
        items = self.pool.take()
        if not items or state is None:
            return
        part = self.pool.make_part(items, self.worker)
        transport = state.transport
        try:
            part.upload(transport)
            remote = part.remote(transport)
            remote.send_ahead(part.standby_command(remote, after=current.remote_work_dir))
        except (CgpuKitError, OSError) as exc:  # only a head start: the items go back, a worker takes them
            log.info("part %s not sent ahead (%s); its items go back to the queue", part.job_id, exc)
            self.pool.give_back(items)
            part.mark_closed()
            part.release_output()
            return
        part.sent_ahead = True
        self.sent = (part, items)
        log.info("part %s (%d items) sent ahead to %s", part.job_id, len(items), self.worker.label)
