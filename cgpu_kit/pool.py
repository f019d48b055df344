"""One batch spread over several runtimes: a pool of workers, one per runtime, pulling parts from one queue.

The prepared batch (validated, planned, finished items skipped) is cut into parts as the workers ask for them:
about ``2/3`` of a fair share each at first, then the rest split evenly over the runtimes still alive, so a fast
runtime takes more and the last parts finish close together (:func:`part_size`). A runtime reached through a
Colab client gets its next part sent while the current one ends (lookahead.py), so a second part costs about
one call, not a send and a kernel's start. A finished part's remote folder is removed in the background while
its runtime already runs the next part.

Each part runs as a *part-job* (same type, params, output folder and ledger; its own job id and remote work
folder) through the manager's usual per-runtime steps (set-up once, upload, run, download, transport retries,
lost-runtime resume), so it delivers through the normal engine and leaves a plan that a later run or
``cgpu-kit attach`` picks up.

A runtime that fails for good (login lost, quota refused, recycled beyond ``max_runtime_losses``, transport
retries exhausted) is dropped with a warning naming it and why; its unfinished items go back to the queue. A
slow runtime is never dropped. When every runtime is dropped, the items left fail with the reasons.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch import BatchItem
from .engine.delivery import notify
from .exceptions import CgpuKitError, describe_failure
from .lookahead import Lookahead
from .results import ItemResult, ItemStatus, JobResult, JobStatus
from .runtimes import Runner, RuntimeSpec, open_runtime, runtime_label
from .transports.base import Transport

if TYPE_CHECKING:
    from .jobs.base import CGPUJob
    from .manager import CGPUJobManager, SessionState

log = logging.getLogger(__name__)


#: the share of a fair share each runtime's first part takes; the rest is a second round that balances the
#: runtimes (1.0: one part per runtime, the fewest overheads, but a slow runtime holds its whole share)
FIRST_ROUND = 2 / 3


def part_size(total: int, left: int, runtimes: int, alive: int, least: int = 1) -> int:
    """Items in the next part: guided self-scheduling in two rounds, at least 1.

    Every part pays a fixed overhead (its calls, a kernel start, the last poll), so parts are few. The first
    round gives each runtime about ``2/3`` of a fair share; the rest is the second round, split evenly over the
    runtimes alive, so with runtimes of the same speed each does two parts and the second ones end together,
    while a fast runtime, back early, takes a second part while a slow one still works through its first.
    ``least`` is the size below which a part would cost more in its overhead than in its items (measured on
    the parts done so far): a part is never smaller unless that would leave a runtime idle (more than a
    fair share of what is left). A runtime left alone takes all that is left."""
    alive = max(1, alive)
    if alive == 1:
        return max(1, left)
    first = min(total, math.ceil(FIRST_ROUND * total / runtimes - 1e-9))
    rest = max(0, total - first * runtimes)
    share = first if left > rest else math.ceil(rest / alive)
    return max(1, min(left, max(share, min(least, math.ceil(left / alive)))))


class Worker:
    """One runtime of the pool (a Runner with several slots gets one worker per slot, sharing the runner)."""

    def __init__(self, label: str, spec: Any, runtime: Transport | Runner) -> None:
        self.label = label
        self.spec = spec
        self.runtime = runtime
        self.state: SessionState | None = None
        #: removals of finished parts' remote folders, off the critical path (joined when the worker ends)
        self.cleanups: list[threading.Thread] = []
        #: its next part, sent while the current one ends (runtimes whose calls are dear)
        self.lookahead: Lookahead | None = None
        self.running = False


class Pool:
    """The workers of one batch and the queue they pull from."""

    def __init__(self, manager: CGPUJobManager, job: CGPUJob, runtimes: list[Any]) -> None:
        self.manager = manager
        self.job = job
        self.queue: collections.deque[BatchItem] = collections.deque(job.pending)
        self.total = len(self.queue)
        self.by_id = {i.item_id: i for i in job.items}
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.dropped: dict[str, str] = {}
        self.part_numbers = itertools.count(1)
        self.active: dict[str, CGPUJob] = {}
        self.deadline = manager.pacing.clock.now() + job.timeout
        self.workers: list[Worker] = []
        for spec in runtimes:
            label = runtime_label(spec)
            runtime = open_runtime(spec)
            slots = 1 if isinstance(runtime, Transport) else max(1, int(runtime.slots))  # a runner: a worker per slot
            self.workers += [Worker(label, spec, runtime) for _ in range(slots)]
        for worker in self.workers:
            if isinstance(worker.runtime, Transport) and worker.runtime.setup_travels:
                worker.lookahead = Lookahead(self, worker)
        self.alive = {w.label for w in self.workers}
        #: measured on finished parts: seconds a part costs besides its items, and seconds per item
        self.overhead_s = 0.0
        self.item_s = 0.0

    # -- the queue -----------------------------------------------------------------------------------------

    def take(self) -> list[BatchItem]:
        with self.lock:
            if self.job.cancel_event.is_set() or not self.queue:
                return []
            least = math.ceil(self.overhead_s / self.item_s) if self.item_s else 1
            n = part_size(self.total, len(self.queue), len({w.label for w in self.workers}), len(self.alive), least)
            return [self.queue.popleft() for _ in range(min(n, len(self.queue)))]

    def give_back(self, items: list[BatchItem]) -> None:
        with self.lock:
            self.queue.extendleft(reversed(items))

    def drop(self, worker: Worker, reason: str) -> None:
        with self.lock:
            if worker.label in self.alive:
                self.alive.discard(worker.label)
                self.dropped[worker.label] = reason
                log.warning("runtime %s dropped: %s; its unfinished items go to the other runtimes", worker.label, reason)

    # -- one part ------------------------------------------------------------------------------------------

    def make_part(self, items: list[BatchItem], worker: Worker) -> CGPUJob:
        """A part-job over ``items``: same type, params and output folder, its own id and remote folder."""
        job = self.job
        spec = worker.spec
        backend = spec.backend if isinstance(spec, RuntimeSpec) else worker.runtime
        root = spec.remote_root if isinstance(spec, RuntimeSpec) else None
        part = type(job)([], job.out_dir, params=dict(job.params), backend=backend, remote_root=root,
                         job_id=f"{job.job_id}p{next(self.part_numbers)}", timeout=job.timeout,
                         item_timeout=job._item_timeout, workers=job.workers, force=job.force, overwrite=job.overwrite,
                         part_bytes=job.part_bytes, max_pixels=job.max_pixels)
        if worker.state is not None:
            part.remote_root = worker.state.transport.remote_root
        for b in items:
            parent = self.by_id[b.item_id]
            part.inputs.append(Path(parent.input_path))
            part.items.append(ItemResult(input_path=parent.input_path, item_id=b.item_id))
            part.batch_items[b.item_id] = b
        part.ledger = job.ledger
        part.prepared = True
        part.hold_output(job)
        part.on_item = lambda p, r, w=worker: self.forward(r, w)
        return part

    def forward(self, result: ItemResult, worker: Worker) -> None:
        """A part's item reached its end: it becomes the batch's item, named with the runtime that did it."""
        final = result.status in (ItemStatus.DONE, ItemStatus.FAILED)
        if not final and not (result.status is ItemStatus.CANCELLED and self.job.cancel_event.is_set()):
            return
        parent = self.by_id[result.item_id]
        parent.status, parent.outputs, parent.error = result.status, list(result.outputs), result.error
        parent.timings.update(result.timings)
        parent.metadata.update(result.metadata)
        parent.metadata["runtime"] = worker.label
        if final:
            with self.lock:
                self.counts[worker.label] += 1
        notify(self.job, parent)

    def run_part(self, worker: Worker, items: list[BatchItem], part: CGPUJob | None = None) -> bool:
        """Run one part (``part``: one sent ahead) on ``worker``'s runtime; False when the runtime failed for
        good (it is then dropped)."""
        part = part or self.make_part(items, worker)
        with self.lock:
            self.active[part.job_id] = part
            worker.running = True
        if self.job.cancel_event.is_set():
            part.cancel()
        failure: BaseException | None = None
        started = time.monotonic()
        try:
            if worker.state is None:
                worker.runtime.run_job(part, pacing=self.manager.pacing)
            else:
                if worker.lookahead is not None:
                    worker.lookahead.watch(part)
                self.manager._run_on(part, worker.state, deadline=self.deadline)
        except (CgpuKitError, OSError) as exc:
            failure = exc
        finally:
            if worker.lookahead is not None:
                worker.lookahead.stop()
            with self.lock:
                self.active.pop(part.job_id, None)
        try:
            return self._after_part(worker, part, failure, started)
        finally:
            worker.running = False  # only now: its items are back in the queue, for workers still waiting

    def _after_part(self, worker: Worker, part: CGPUJob, failure: BaseException | None, started: float) -> bool:
        unfinished = [part.batch_items[i.item_id] for i in part.items
                      if i.status in (ItemStatus.PENDING, ItemStatus.CANCELLED)]
        if failure is not None:
            part.mark_closed()  # its items go elsewhere: later runs must not pick this part up
            part.release_output()
            if not self.job.cancel_event.is_set():
                self.give_back(unfinished)
            if worker.lookahead is not None:
                worker.lookahead.discard()  # its part sent ahead goes back too, before the runtime is dropped
            self.drop(worker, describe_failure(failure))
            return False
        if unfinished and not self.job.cancel_event.is_set():
            reason = part.error or "the runtime returned no result for it"
            for b in unfinished:
                parent = self.by_id[b.item_id]
                parent.status, parent.error = ItemStatus.FAILED, f"{parent.input_path}: not processed: {reason}"
                parent.metadata["runtime"] = worker.label
                notify(self.job, parent)
        if part.error and not self.job.error and self.manager.pacing.clock.now() > self.deadline:
            self.job.error = part.error
        self.measure(part, time.monotonic() - started)
        transport = worker.state.transport if worker.state is not None else None
        if transport is None:
            part.cleanup(None)
        else:  # one call the runtime's next part need not wait for
            tidy = threading.Thread(target=part.cleanup, args=(transport,), name=f"cgpu-kit tidy {part.job_id}", daemon=True)
            tidy.start()
            worker.cleanups.append(tidy)
        return True

    def measure(self, part: CGPUJob, wall: float) -> None:
        """Learn a part's fixed overhead and the time per item from a finished part (items as if one at a time,
        which underestimates the overhead: parts only get smaller for it)."""
        took = [i.timings.get("total") or sum(i.timings.values()) for i in part.items if i.status is ItemStatus.DONE and i.timings]
        if not took:
            return
        with self.lock:
            self.item_s = sum(took) / len(took)
            self.overhead_s = max(0.0, wall - sum(took))

    def work(self, worker: Worker) -> None:
        """A worker's life: set its runtime up once, then take the next part whenever it is free."""
        try:
            if isinstance(worker.runtime, Transport):
                worker.state = self.manager.session_of(worker.runtime)
                self.manager.ensure_ready(worker.state, self.job.get_requirements())
        except (CgpuKitError, OSError) as exc:

            self.drop(worker, describe_failure(exc))
            return
        try:
            while True:
                ahead, items = self.next_part(worker)
                if not items or not self.run_part(worker, items, ahead):
                    return
        finally:
            if worker.lookahead is not None:
                worker.lookahead.discard()  # not run here (dropped, cancelled): its items go back
            for tidy in worker.cleanups:
                tidy.join()

    def next_part(self, worker: Worker) -> tuple[CGPUJob | None, list[BatchItem]]:
        """The worker's next part: the one it sent ahead, or items from the queue; none once the queue is empty
        and no other runtime still has a part that could give items back (a runtime dropped midway)."""
        while worker.label in self.alive and not self.job.cancel_event.is_set():
            sent = worker.lookahead.take() if worker.lookahead is not None else None
            if sent is not None:
                return sent
            items = self.take()
            if items:
                return None, items
            with self.lock:
                busy = any(w is not worker and w.label in self.alive and (w.running or (w.lookahead and w.lookahead.sent))
                           for w in self.workers)
            if not busy:
                break
            time.sleep(0.2)
        return None, []

    # -- the whole batch -----------------------------------------------------------------------------------

    def run(self) -> None:
        threads = [threading.Thread(target=self.work, args=(w,), name=f"cgpu-kit {w.label}", daemon=True)
                   for w in self.workers]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                if self.job.cancel_event.is_set():
                    self.cancel_parts()  # again each time: a part may have started since
                    time.sleep(0.05)
                else:  # a cancel reaches the parts at once (each of their items may be about to start)
                    self.job.cancel_event.wait(0.05)
        except KeyboardInterrupt:
            self.job.cancel()
            self.cancel_parts()
            for t in threads:  # each part stops its remote batch and fetches what finished
                t.join(timeout=self.manager.pacing.stop_grace + 30)
            raise
        finally:
            self.finish()

    def cancel_parts(self) -> None:
        with self.lock:
            for part in self.active.values():
                part.cancel()

    def finish(self) -> None:
        if self.queue and not self.job.cancel_event.is_set():
            why = "; ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "no runtime took it"
            reason = f"every runtime was dropped ({why})"
            self.job.error = self.job.error or reason
            for b in self.queue:
                parent = self.by_id[b.item_id]
                parent.status, parent.error = ItemStatus.FAILED, f"{parent.input_path}: not processed: {reason}"
        for runtime in {id(w.runtime): w.runtime for w in self.workers}.values():
            if not isinstance(runtime, Transport) and not getattr(runtime, "shared", False):
                runtime.close()  # a shared runner (a Dask connection) stays open for the process's next batch


def run_pool(manager: CGPUJobManager, job: CGPUJob, runtimes: list[Any]) -> JobResult:
    """Run ``job`` over ``runtimes`` (RuntimeSpecs, Transports or Runners); one :class:`JobResult`."""

    job.status = JobStatus.RUNNING
    started = time.monotonic()
    error = None
    pool: Pool | None = None
    try:
        if not job.prepared:
            manager.prepare(job)
        if job.pending:
            from .engine.plan import _remember_job

            _remember_job(job.job_id, job.out_dir)  # `cgpu-kit attach JOB_ID` finds its part-jobs from this id
            pool = Pool(manager, job, runtimes)
            pool.run()
    except (CgpuKitError, OSError) as exc:
        error = describe_failure(exc)
        log.error("job %s failed: %s", job.job_id, error)
    except KeyboardInterrupt:
        manager._settle(job, None, started, None, runtimes=_summary(pool))
        raise
    except BaseException:
        job.release_all()
        raise
    return manager._settle(job, error, started, None, runtimes=_summary(pool))


def _summary(pool: Pool | None) -> dict[str, Any] | None:
    if pool is None:
        return None
    counts = {label: pool.counts.get(label, 0) for label in dict.fromkeys(w.label for w in pool.workers)}
    return {"runtimes": counts, "dropped": dict(pool.dropped)}


def part_plans(job_id: str, out_dir: Any = None) -> list[Path]:
    """Plans of the part-jobs of the spread batch ``job_id`` that are still open (``cgpu-kit attach`` of it)."""
    from .engine.plan import CLOSED, PLAN, _jobs_index
    from .ledger import STATE_DIR

    if out_dir is None:
        try:
            import json

            out_dir = json.loads((_jobs_index() / f"{job_id}.json").read_text())["out_dir"]
        except (OSError, ValueError, KeyError):
            return []
    found = sorted((Path(out_dir) / STATE_DIR).glob(f"job_{job_id}p*/{PLAN}"))
    return [p for p in found if p.parent.name[len(f"job_{job_id}p"):].isdigit() and not (p.parent / CLOSED).exists()]
