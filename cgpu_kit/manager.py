"""WHEN and HOW OFTEN: the one job manager of the process.

It runs submitted jobs first in, first out; picks up what earlier runs left unfinished in an output folder;
sets each runtime session up once (requirements installed once and recorded, checked again before each
batch); retries transport failures with tenacity (3 attempts, exponential backoff) and never retries a job's
own failure; sets a lost runtime up again and resumes (``max_runtime_losses``); enforces each job's timeout;
and keeps the executed notebook and the runtime log of every job, failed ones first of all. Every wait
(polls, grace, relaunches) is paced by ``self.pacing`` on one injectable clock; the engine
(:mod:`cgpu_kit.engine`) does the steps.
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tenacity

from .clock import Pacing
from .cluster import is_dask_backend, run_on_dask
from .engine.plan import CLOSED, find_plan, open_jobs
from .exceptions import CgpuKitError, DiskSpaceError, ParameterError, RuntimeLostError, describe_failure
from .jobs.base import CGPUJob
from .remote import RemoteBatch
from .requirements import Requirements
from .results import JobResult, JobStatus, merge_results
from .retrying import RetryingTransport, RetryPolicy  # noqa: F401 - known by these names here too
from .runtimes import RuntimeSpec, parse_runtimes
from .transports import get_transport
from .transports.base import Transport
from .util import write_json

log = logging.getLogger(__name__)


@dataclass
class SessionState:
    """What the manager knows of one runtime session."""

    transport: Transport
    requirements: Requirements = field(default_factory=Requirements)
    initialised_at: float | None = None
    setups: int = 0


class CGPUJobManager:
    """The process's job manager (a singleton): ``submit`` jobs, then ``process_queue``."""

    _instance: CGPUJobManager | None = None
    _instance_lock = threading.Lock()

    def __new__(cls, *args: Any, **kwargs: Any) -> CGPUJobManager:
        with cls._instance_lock:
            if cls._instance is None:
                inst = super().__new__(cls)
                inst._init()
                cls._instance = inst
            return cls._instance

    def _init(self) -> None:
        self.queue: collections.deque[CGPUJob] = collections.deque()
        self.jobs: dict[str, CGPUJob] = {}
        self.results: dict[str, JobResult] = {}
        self.sessions: dict[str, SessionState] = {}
        self.retry_policy = RetryPolicy()
        #: how often and how long batches wait (poll interval, stop grace, relaunches) and on which clock:
        #: replace ``pacing.clock`` to observe every wait without waiting
        self.pacing = Pacing()
        self.setup_timeout = 1800.0
        self.max_runtime_losses = 3
        #: runtimes of jobs that name none (``--runtime`` specs, Transports or Runners): several spread each batch
        self.runtimes: list[Any] = []
        self._lock = threading.RLock()

    @classmethod
    def reset(cls) -> None:
        """Forget the singleton (tests, or to start over with new sessions)."""
        with cls._instance_lock:
            if cls._instance is not None:
                for state in cls._instance.sessions.values():
                    state.transport.close()
            cls._instance = None

    # -- the queue -----------------------------------------------------------------------------------------

    def submit(self, job: CGPUJob) -> str:
        with self._lock:
            if job.job_id in self.jobs:
                raise CgpuKitError(f"job {job.job_id} was already submitted")
            self.jobs[job.job_id] = job
            self.queue.append(job)
        log.info("submitted %s job %s (%d input(s))", job.job_type, job.job_id, len(job.inputs))
        return job.job_id

    def process_queue(self) -> list[JobResult]:
        """Run queued jobs in submission order until the queue is empty; return their results in that order."""
        done = []
        while True:
            with self._lock:
                if not self.queue:
                    break
                job = self.queue.popleft()
            done.append(self.run_job(job))
        return done

    def run(self, job: CGPUJob) -> JobResult:
        """Submit ``job`` and process the queue; return this job's result."""
        self.submit(job)
        self.process_queue()
        return self.results[job.job_id]

    def cancel(self, job_id: str) -> None:
        """Cancel a job: a queued one never starts; a running one stops after its running items."""
        job = self.jobs[job_id]
        job.cancel()
        with self._lock:
            if job in self.queue:
                self.queue.remove(job)
                job.status = JobStatus.CANCELLED
                self.results[job_id] = JobResult(
                    success=False, output_path=str(job.out_dir), status=JobStatus.CANCELLED, job_id=job_id,
                    error="cancelled before it started",
                )

    # -- one job -------------------------------------------------------------------------------------------

    def session(self, job: CGPUJob) -> SessionState:
        transport = job.backend if isinstance(job.backend, Transport) else get_transport(
            job.backend, remote_root=job.remote_root_arg
        )
        return self.session_of(transport)

    def session_of(self, transport: Transport) -> SessionState:
        """The session of ``transport``'s runtime (one per :attr:`Transport.key`), opened on first use."""
        with self._lock:
            state = self.sessions.get(transport.key)
            if state is None:
                transport.clock = self.pacing.clock
                state = SessionState(RetryingTransport(transport, self.retry_policy))
                self.sessions[transport.key] = state
            else:
                transport.close()
        return state

    def ensure_ready(self, state: SessionState, requirements: Requirements) -> None:
        """Set the runtime up for ``requirements`` unless this session already did (checked, not assumed)."""
        t = state.transport
        if t.setup_travels:  # checked (and redone when missing) by the batch's first call: no call of its own
            state.requirements = state.requirements | requirements
            t.setup_on_next_batch(state.requirements, timeout=self.setup_timeout, unknown=state.initialised_at is None)
            state.setups += state.initialised_at is None
            state.initialised_at = state.initialised_at or time.time()
            return
        if state.initialised_at is not None and state.requirements.covers(requirements):
            if t.is_set_up(state.requirements, timeout=120):
                return
            log.warning("the runtime %s no longer holds this session's set-up; setting it up again", t.key)
        wanted = state.requirements | requirements
        started = time.monotonic()
        t.setup(wanted, timeout=self.setup_timeout)
        state.requirements = wanted
        state.initialised_at = time.time()
        state.setups += 1
        log.info("runtime %s set up in %.1fs", t.key, time.monotonic() - started)

    def run_job(self, job: CGPUJob) -> JobResult:
        runtimes = job.runtimes if job.runtimes else parse_runtimes(self.runtimes)
        if len(runtimes) > 1 or (runtimes and not isinstance(runtimes[0], (RuntimeSpec, Transport))):
            from .pool import run_pool

            return run_pool(self, job, runtimes)
        if runtimes and not job.runtimes:
            job.use_runtime(runtimes[0])
        job.status = JobStatus.RUNNING
        started = time.monotonic()
        state: SessionState | None = None
        error: str | None = None
        try:
            if not job.prepared:
                self.prepare(job)
            if job.pending and is_dask_backend(job.backend):  # a Dask cluster runs whole jobs (cluster.py)
                run_on_dask(job, pacing=self.pacing)
            elif job.pending:
                state = self.session(job)
                job.remote_root = state.transport.remote_root
                self._run_on(job, state)
        except (CgpuKitError, OSError) as exc:
            error = describe_failure(exc)
            log.error("job %s failed: %s", job.job_id, error)
            if state is not None:
                self._keep_logs(job, state.transport)
        except KeyboardInterrupt:
            job.cancel()
            if state is not None:
                self._stop_after_interrupt(job, state.transport)
            self._settle(job, None, started, state)
            raise
        except BaseException:
            job.release_all()  # an unexpected error must not leave the output folder locked
            raise
        finally:
            if job.standby is not None:  # not claimed by a launch (or claimed: then this touches nothing)
                job.standby.discard_standby()
                job.standby = None
        return self._settle(job, error, started, state)

    def _start_ahead(self, job: CGPUJob) -> RemoteBatch | None:
        """Start the batch's driver (kernel, papermill, the job's slow imports) while its inputs are checked,
        where that costs no call (the local runtime); the batch it waits for, or None."""
        if is_dask_backend(job.backend) or self.runtimes or len(job.runtimes) > 1:
            return None
        try:
            transport = self.session(job).transport
            job.remote_root = transport.remote_root
            batch = job.remote(transport)
            return batch if transport.start_ahead(job.standby_command(batch)) else None
        except (CgpuKitError, OSError) as exc:  # only a head start: the launch starts a driver without it
            log.debug("no standby driver for job %s: %s", job.job_id, exc)
            return None

    def _run_on(self, job: CGPUJob, state: SessionState, deadline: float | None = None) -> None:
        """Upload, run and download ``job`` on the session's runtime. A runtime lost midway (recycled, its
        folder gone) is set up again and the unfinished items resumed, up to ``max_runtime_losses`` times:
        a tenacity loop whose retried failure is :class:`RuntimeLostError`, never a cancelled job's."""
        if deadline is None:
            deadline = self.pacing.clock.now() + job.timeout

        def attempt_once(retry_state: tenacity.RetryCallState) -> None:
            if retry_state.attempt_number > 1:
                state.initialised_at = None
                job.reset_remote_progress()
                if not job.pending:
                    return
            self.ensure_ready(state, job.get_requirements())
            job.upload(state.transport)
            job.run_remote(state.transport, deadline=deadline, pacing=self.pacing)
            job.download(state.transport)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, RuntimeLostError) and not job.cancel_event.is_set()),
            stop=tenacity.stop_after_attempt(self.max_runtime_losses + 1), wait=tenacity.wait_none(),
            sleep=self.pacing.clock.sleep, reraise=True,
            before_sleep=lambda rs: log.warning(
                "job %s: %s; setting the runtime up again and resuming the unfinished items", job.job_id,
                rs.outcome.exception()),
        )
        for attempt in retrying:
            with attempt:
                attempt_once(attempt.retry_state)

    def prepare(self, job: CGPUJob) -> None:
        """Lock the output folder, pick up what earlier runs left unfinished there, then validate and plan.

        A run that died (local Ctrl-C twice, process killed, laptop closed) left its plan behind; its batch may
        still be running or done on the runtime. Its finished items are fetched first, so the new run
        processes only what is missing.
        """
        try:
            job.hold_output()
        except OSError as exc:
            raise DiskSpaceError(describe_failure(exc)) if exc.errno == errno.ENOSPC else ParameterError(
                f"output folder {job.out_dir} cannot be used ({exc.strerror or exc}); choose another output folder",
                name="out_dir") from None
        ok = False
        if job.standby is None:
            job.standby = self._start_ahead(job)
        try:
            for plan in open_jobs(job.out_dir, job.job_type):
                old = type(job).from_plan(plan, backend=job.backend if isinstance(job.backend, Transport) else
                                          plan_runtime(job, plan))
                old.hold_output(job)
                log.warning("picking up job %s, left unfinished in %s", old.job_id, job.out_dir)
                self.attach_job(old)
            job.prepare_local()
            ok = True
        except OSError as exc:
            raise DiskSpaceError(describe_failure(exc)) if exc.errno == errno.ENOSPC else CgpuKitError(
                describe_failure(exc)) from None
        finally:
            if ok:
                job.release_output()
            else:
                job.release_all()
            if job.standby is not None and not (ok and job.pending):  # nothing will run: no driver either
                job.standby.discard_standby()
                job.standby = None

    def attach(self, job_id: str, out_dir: str | Path | None = None) -> JobResult:
        """Pick up a job that an earlier process started: wait for its batch and fetch what it produced."""
        from .jobs import job_class

        plan_path = find_plan(job_id, out_dir)
        if plan_path is None:
            from .pool import part_plans

            parts = part_plans(job_id, out_dir)
            if parts:  # a batch spread over several runtimes: pick up each part-job left open
                return merge_results(job_id, [self.attach(p.parent.name[len("job_"):], p.parent.parent.parent)
                                              for p in parts])
            where = f"in {out_dir}" if out_dir else "(give the output folder with -o)"
            raise CgpuKitError(f"no record of job {job_id} {where}")
        plan = json.loads(plan_path.read_text())
        finished = finished_result(plan_path.parent)
        if finished is not None:
            log.info("job %s finished already; nothing to pick up", job_id)
            return finished
        job = job_class(plan["job_type"]).from_plan(plan)
        job.hold_output()
        try:
            return self.attach_job(job)
        except BaseException:
            job.release_all()
            raise

    def attach_job(self, job: CGPUJob) -> JobResult:
        job.status = JobStatus.RUNNING
        started = time.monotonic()
        state = self.session(job)
        error = None
        try:
            job.run_remote(state.transport, pacing=self.pacing)
            job.download(state.transport)
        except RuntimeLostError as exc:
            error = f"its runtime no longer holds it ({exc}); run the batch again to redo what is missing"
            job.mark_closed()
        except (CgpuKitError, OSError) as exc:
            error = describe_failure(exc)
            log.warning("job %s: could not pick it up: %s", job.job_id, error)
        return self._settle(job, error, started, state)

    def _settle(self, job: CGPUJob, error: str | None, started: float, state: SessionState | None,
                runtimes: dict[str, Any] | None = None) -> JobResult:
        try:
            result = job.finish(error)
        except BaseException:
            job.release_all()
            raise
        job.cleanup(state.transport if state is not None else None)
        result.timings["total"] = round(time.monotonic() - started, 3)
        if state is not None:
            result.metadata["transport_retries"] = getattr(state.transport, "retries", 0)
        if runtimes:  # a batch spread over several runtimes: how many items each did, which were dropped and why
            result.metadata.update(runtimes)
            result.metadata["backend"] = ", ".join(runtimes["runtimes"])
            try:
                write_json(job.state_dir / "result.json", result.to_dict())
            except OSError as exc:
                log.warning("could not write the job summary: %s", exc)
        self.results[job.job_id] = result
        log.info(result.summary())
        return result

    def _keep_logs(self, job: CGPUJob, transport: Transport) -> None:
        """A failed job's executed notebook and log come home before anything remote is removed."""
        if job.logs_local:
            return
        try:
            job.download(transport)
        except (CgpuKitError, OSError) as exc:
            log.warning("job %s: could not fetch its logs: %s", job.job_id, describe_failure(exc))

    def _stop_after_interrupt(self, job: CGPUJob, transport: Transport) -> None:
        try:
            job.stop(transport, pacing=self.pacing)
        except (CgpuKitError, OSError, KeyboardInterrupt) as exc:
            log.warning("job %s: stopped without fetching everything: %s", job.job_id, exc)


def plan_runtime(job: CGPUJob, plan: dict[str, Any]) -> Transport | None:
    """The runtime object of ``job`` that an open part-job's plan names (a Transport given as a runtime)."""
    return next((r for r in job.runtimes if isinstance(r, Transport) and r.name == plan.get("backend")
                 and r.remote_root == plan.get("remote_root")), None)


def finished_result(state_dir: Path) -> JobResult | None:
    """The recorded result of a job that ended and was closed (``None`` while it may still be picked up)."""
    if not (state_dir / CLOSED).exists():
        return None
    try:
        data = json.loads((state_dir / "result.json").read_text())
        result = JobResult.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        result = JobResult(success=False, status=JobStatus.COMPLETED, job_id=state_dir.name[len("job_"):],
                           output_path=str(state_dir.parent.parent))
    result.metadata["finished_already"] = True
    return result
