"""Steps 3-5 on the runtime's side: launch the batch detached, poll it until it ends (fetching finished chunks
as they come), bring the logs home, and tidy up. How often and how long it waits is the manager's
:class:`~cgpu_kit.clock.Pacing`; every wait is a tenacity ``Retrying`` whose "failure" is "not finished yet",
slept on the pacing's clock, so tests assert the waits without waiting."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tenacity

from ..clock import Pacing
from ..exceptions import CgpuKitError, RuntimeLostError, TransportError
from ..runtime import layout
from ..transports.base import Transport
from ..util import tail
from .delivery import absorb
from .plan import CLOSED, PLAN

if TYPE_CHECKING:
    from ..jobs.base import CGPUJob
    from ..remote import RemoteBatch

log = logging.getLogger("cgpu_kit.jobs.base")


def poll_until(step: Callable[[], dict[str, Any] | None], job: CGPUJob, transport: Transport,
               pacing: Pacing, again: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Call ``step`` every poll interval until it returns a status (``None``: not finished yet); an error
    it raises ends the wait at once. A cancel wakes the sleep early.

    The interval runs from the start of one poll to the start of the next: a poll that waited on the runtime
    (``Transport.poll_wait``) for as long as the interval or longer has paced itself, and the next goes at
    once (a sleep after it only delays noticing the batch's end: 5 s of nothing per part through cgpu); so
    does one after which ``again()`` is true (the poll answered early with news that asks for no pause)."""
    clock = pacing.clock
    interval = pacing.poll_interval or transport.poll_interval
    began = {"at": clock.now()}

    def timed_step() -> dict[str, Any] | None:
        began["at"] = clock.now()
        status = step()
        if status is None and again is not None and again():
            began["at"] = clock.now() - interval
        return status

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda status: status is None),
        wait=lambda _state: max(0.0, interval - (clock.now() - began["at"])),
        stop=tenacity.stop_never, reraise=True,
        sleep=lambda seconds: clock.sleep(seconds, job.cancel_event) if seconds > 0 else None,
    )
    return retrying(timed_step)


def standby_ahead(job: CGPUJob, remote: RemoteBatch) -> str:
    """The standby driver's start that travels in the send's first call (a Colab runtime: its kernel boots
    while the files are copied and landed, 2-5 s off each part), unless the manager started one already (the
    local runtime, whose calls cost nothing, starts it at once)."""
    if job.standby is not None or not getattr(remote.transport, "setup_travels", False):
        return ""
    return job.standby_command(remote)


def run_remote(job: CGPUJob, transport: Transport, *, deadline: float | None = None,
               pacing: Pacing | None = None) -> None:
    """Launch the batch detached, then poll it, fetching finished chunks, until it ends.

    A dead driver is relaunched (``pacing.max_relaunches`` times; finished items are kept); cancellation
    (``cancel()``) and the job's timeout (``deadline``, on ``pacing.clock``) stop the remote loop through its
    cancel file, and the runtime gets ``pacing.stop_grace`` seconds to zip what finished, which is fetched.
    """
    pacing = pacing or Pacing()
    clock = pacing.clock
    started = clock.now()
    remote = job.remote(transport)
    sending = time.monotonic()
    log.info("job %s: batch %s on %s", job.job_id, remote.launch(ahead=standby_ahead(job, remote)), transport.name)
    job.timings["upload"] = round(job.timings.get("upload", 0) + time.monotonic() - sending, 3)
    watch = {"deadline": deadline or (started + job.timeout), "stop_sent": False, "relaunches": 0, "near": False}

    def step() -> dict[str, Any] | None:
        status = remote.poll(job.results_seen, job.chunks_done, near=job.near_end_s)
        absorb(job, status, transport)
        state = status["state"]
        watch["near"] = bool(status.get("near"))
        if watch["near"] and job.on_near_end is not None:
            job.near_end_s = 0.0  # said once; the next poll goes at once, for the end
            job.on_near_end(job)
        if state == "absent":
            raise RuntimeLostError(f"the work folder of job {job.job_id} is gone from the runtime")
        if state == "finished":
            return status
        if state == "dead":
            watch["relaunches"] += 1
            if watch["relaunches"] > pacing.max_relaunches:
                raise CgpuKitError("the batch's driver keeps dying on the runtime; see the runtime log")
            log.warning("job %s: the driver died; relaunching it (finished items are kept)", job.job_id)
            remote.launch()
        if state == "uploaded":
            remote.launch()
        if not watch["stop_sent"] and (job.cancel_event.is_set() or clock.now() > watch["deadline"]):
            if not job.cancel_event.is_set():
                job.error = f"timed out after {job.timeout:.0f}s (the job timeout)"
            remote.cancel()
            watch["stop_sent"] = True
            watch["deadline"] = clock.now() + pacing.stop_grace  # for the runtime to wrap up
        elif watch["stop_sent"] and clock.now() > watch["deadline"]:
            return status
        return None

    status = poll_until(step, job, transport, pacing, again=lambda: watch["near"])
    if status.get("exit_code"):
        job.error = job.error or f"the template failed on the runtime: {status.get('error')}"
    job.timings["run"] = round(job.timings.get("run", 0) + clock.now() - started, 3)


def download(job: CGPUJob, transport: Transport) -> None:
    """Fetch what is left: last chunks, the results file, the executed notebook and the runtime log."""
    started = time.monotonic()
    remote = job.remote(transport)
    status = remote.poll(job.results_seen, job.chunks_done)
    absorb(job, status, transport)
    logs = job.state_dir
    unreachable = False
    for name in (layout.EXECUTED, layout.RUNTIME_LOG, layout.RESULTS, layout.STATUS):
        try:
            remote.fetch(name, logs / name, timeout=120)
        except TransportError as exc:
            unreachable = True
            log.warning("could not fetch %s: %s", name, exc)
        except CgpuKitError as exc:
            log.info("no %s on the runtime: %s", name, exc)
    if (logs / layout.EXECUTED).exists():
        job.log_path = logs / layout.EXECUTED
    if (logs / layout.RUNTIME_LOG).exists():
        job.remote_log = tail(logs / layout.RUNTIME_LOG)
    job.logs_local = not unreachable
    job.timings["download"] = round(job.timings.get("download", 0) + time.monotonic() - started, 3)


def cleanup(job: CGPUJob, transport: Transport | None) -> None:
    """Remove the remote work folder (only once the logs are local) and the local staging files."""
    try:
        if transport is not None and job.logs_local:
            try:
                job.remote(transport).remove()
                (job.state_dir / CLOSED).touch()
            except CgpuKitError as exc:
                log.warning("job %s: could not remove %s on the runtime: %s", job.job_id, job.remote_work_dir, exc)
        elif not (job.state_dir / PLAN).exists():
            job.state_dir.mkdir(parents=True, exist_ok=True)
            (job.state_dir / CLOSED).touch()
        shutil.rmtree(job.state_dir / "parts", ignore_errors=True)
        if (job.state_dir / CLOSED).exists():
            shutil.rmtree(job.state_dir / "chunks", ignore_errors=True)
    except OSError as exc:  # a full disk: the job's state stays, and the next run picks it up
        log.warning("job %s: could not tidy its state in %s: %s", job.job_id, job.state_dir, exc)
    finally:
        if transport is not None:
            job.remote(transport).forget()
        job.release_output()


def stop(job: CGPUJob, transport: Transport, *, pacing: Pacing | None = None) -> None:
    """Stop the remote batch now and bring home what it finished (after a local interrupt): the runtime gets
    ``pacing.stop_grace`` seconds to wrap up, polled every poll interval."""
    pacing = pacing or Pacing()
    job.cancel()
    remote = job.remote(transport)
    remote.cancel()
    deadline = pacing.clock.now() + pacing.stop_grace

    def step() -> dict[str, Any] | None:
        status = remote.poll(job.results_seen, job.chunks_done)
        absorb(job, status, transport)
        ended = status["state"] in ("finished", "absent", "dead", "uploaded")
        return status if ended or pacing.clock.now() >= deadline else None

    poll_until(step, job, transport, pacing)
    job.download(transport)


def mark_closed(job: CGPUJob) -> None:
    """Nothing is left of this job on its runtime: later runs need not pick it up."""
    job.logs_local = True
    job.state_dir.mkdir(parents=True, exist_ok=True)
    (job.state_dir / CLOSED).touch()
