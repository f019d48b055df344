"""WHERE, on a Dask cluster: a batch's parts as Dask tasks on the workers of a ``distributed`` scheduler.

Labs with GPU machines of their own run Dask already (under SLURM with dask-jobqueue, on Kubernetes with
dask-kubernetes); cgpu-kit writes no scheduler of its own. Each part of the batch becomes one task
(:func:`cgpu_kit.runtime.cluster_task.run_part`) that carries the part as zip bytes and runs the job's template
with papermill in a worker-local folder, exactly as on any other runtime. Parts are submitted as the cluster
has room (one per worker able to take it), so a long batch never floods the scheduler and a worker that joins
late gets work. Finished items come back on a Dask queue as they finish; each chunk is checked by sha256 and
delivered by :mod:`cgpu_kit.engine.delivery`, as for every transport, which also makes a chunk that comes back
twice (a part redone after its worker was lost) a no-op.

``--backend dask`` takes the scheduler from ``--scheduler``, ``DASK_SCHEDULER_ADDRESS`` or Dask's
``scheduler-address`` setting; ``dask:ADDRESS`` names it; ``dask:local`` / ``dask:local:N`` start a
``LocalCluster`` of N worker processes on this machine.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .batch import pack_part
from .clock import Pacing
from .engine import delivery
from .exceptions import CgpuKitError, MissingDependencyError, ParameterError
from .results import ItemStatus
from .runtime import layout
from .util import atomic_path

if TYPE_CHECKING:
    from .jobs.base import CGPUJob

log = logging.getLogger(__name__)

#: a part holds at most this many bytes of inputs (it travels through the scheduler's network as one message)
PART_BYTES = 256 << 20
#: parts cut per slot: more parts spread the work better and cost less when a worker is lost; each part pays
#: one kernel start
PARTS_PER_SLOT = 2
NO_ADDRESS = ("no Dask scheduler given: pass --scheduler ADDRESS (Python: scheduler=ADDRESS), use --backend "
              "dask:ADDRESS, or set DASK_SCHEDULER_ADDRESS (or Dask's `scheduler-address` setting); "
              "--backend dask:local starts a cluster on this machine")


def is_dask_backend(backend: object) -> bool:
    """Whether ``backend`` (a job's ``backend``) names a Dask cluster: ``dask`` or ``dask:...``."""
    return isinstance(backend, str) and backend.split(":", 1)[0] == "dask"


def backend_name(backend: str, scheduler: str | None) -> str:
    """``--backend dask --scheduler X`` as one backend string, ``dask:X`` (what the job and its plan record)."""
    if scheduler and backend == "dask":
        return f"dask:{scheduler}"
    if scheduler and not is_dask_backend(backend):
        raise ParameterError(f"--scheduler is for the dask backend, not {backend}; use --backend dask",
                             name="--scheduler")
    return backend


def place_scheduler(backend: Any, runtimes: Any, scheduler: str | None) -> tuple[Any, Any]:
    """Where ``--scheduler`` (``scheduler=``) goes: to a bare ``dask`` among the runtimes when there is one
    (``--runtime dask --scheduler X`` is ``--runtime dask:X``), else to the backend (:func:`backend_name`)."""
    listed = [runtimes] if isinstance(runtimes, str) else list(runtimes) if runtimes is not None else None
    if scheduler and listed and "dask" in listed:
        return backend, [f"dask:{scheduler}" if r == "dask" else r for r in listed]
    return (backend_name(backend, scheduler) if isinstance(backend, str) else backend), runtimes


def scheduler_address(backend: str = "dask") -> str:
    """The scheduler of ``backend``: its own ``dask:ADDRESS``, else ``DASK_SCHEDULER_ADDRESS``, else Dask's
    ``scheduler-address`` setting. None anywhere is a :class:`ParameterError` saying the three ways."""
    _, _, address = backend.partition(":")
    address = address or os.environ.get("DASK_SCHEDULER_ADDRESS", "")
    if not address:
        try:
            import dask.config

            address = dask.config.get("scheduler-address", None) or ""
        except ImportError:
            address = ""
    if not address:
        raise ParameterError(NO_ADDRESS, name="--scheduler")
    return address


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError("the dask backend needs distributed: pip install 'cgpu-kit[dask]'") from None
    return distributed


class DaskRuntime:
    """One Dask scheduler, seen as a runtime that runs whole prepared jobs (``run_job``): the
    :class:`cgpu_kit.runtimes.Runner` of the ``dask`` runtime kind."""

    #: one connection per scheduler for the whole process (closed at exit), not per batch
    shared = True

    def __init__(self, address: str) -> None:
        distributed = _distributed()
        self.address = address
        self.key = f"dask:{address}"
        self.cluster: Any = None
        if address == "local" or address.startswith("local:"):
            workers = int(address.partition(":")[2] or 2)
            self.cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                    dashboard_address=":0")
            self.client = distributed.Client(self.cluster)
        else:
            try:
                self.client = distributed.Client(address, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise CgpuKitError(f"cannot reach the Dask scheduler at {address} ({exc}); check that it runs "
                                   "and the address (dask scheduler prints it)") from None
        self.name = f"dask ({self.client.scheduler.address})"
        link = self.dashboard_link
        log.info("Dask cluster %s%s", self.client.scheduler.address, f"; dashboard: {link}" if link else "")

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:  # no dashboard (bokeh not installed on the scheduler)
            return None

    def _workers(self) -> dict[str, dict[str, Any]]:
        try:
            info = self.client.scheduler_info(n_workers=-1)  # every worker, not the first few (2025.1 and later)
        except TypeError:
            info = self.client.scheduler_info()
        return dict(info.get("workers", {}))

    def gpu_slots(self) -> int:
        """Parts that GPU workers (``--resources GPU=N``) can run at once."""
        return sum(int(w.get("resources", {}).get("GPU", 0)) for w in self._workers().values())

    @property
    def slots(self) -> int:
        """Workers able to take parts now: GPU ones if the cluster has any, else all."""
        gpus = self.gpu_slots()
        return gpus if gpus else len(self._workers())

    def run_job(self, job: CGPUJob, *, pacing: Pacing | None = None) -> None:
        """Run every pending item of the prepared ``job`` on the cluster and deliver each as it comes back.

        Failures that are the job's (a worker lacking ffmpeg, a template failing) end in ``job.error``; items
        without a result stay pending for :meth:`CGPUJob.finish` to settle. A Ctrl-C cancels the tasks, keeps
        what came back, and is raised again."""
        ClusterBatch(self, job, pacing or Pacing()).run()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


_runtimes: dict[str, DaskRuntime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(backend: str) -> DaskRuntime:
    """The process's runtime of ``backend`` (connected once, reused by later batches)."""
    address = scheduler_address(backend)
    with _runtimes_lock:
        if address not in _runtimes:
            _runtimes[address] = DaskRuntime(address)
        return _runtimes[address]


def run_on_dask(job: CGPUJob, *, pacing: Pacing | None = None) -> None:
    """The manager's one call for a ``dask`` backend."""
    runtime_for(str(job.backend)).run_job(job, pacing=pacing)


@atexit.register
def close_all() -> None:
    """Disconnect from every scheduler (and stop the local clusters this process started)."""
    with _runtimes_lock:
        for runtime in _runtimes.values():
            try:
                runtime.close()
            except Exception as exc:  # closing at exit must not hide the real outcome
                log.debug("closing %s: %s", runtime.key, exc)
        _runtimes.clear()


def cut_parts(job: CGPUJob, slots: int) -> list[Path]:
    """Zip the pending items into parts: about :data:`PARTS_PER_SLOT` per slot (a lost worker costs little, a part's kernel start
    is paid a few times only), none over :data:`PART_BYTES`."""
    pending = job.pending
    per_part = max(1, math.ceil(len(pending) / max(1, PARTS_PER_SLOT * slots)))
    groups: list[list[Any]] = []
    for item in pending:
        if not groups or len(groups[-1]) >= per_part or sum(i.size for i in groups[-1]) + item.size > PART_BYTES:
            groups.append([])
        groups[-1].append(item)
    header = {"job_type": job.job_type, "job_id": job.job_id, "params": job.params, "version": __version__}
    parts_dir = job.state_dir / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, group in enumerate(groups):
        for item in group:
            item.part = index
        paths.append(pack_part(group, parts_dir / layout.part_name(index), dict(header, part=index)))
    return paths


def take_message(job: CGPUJob, message: dict[str, Any], device: str) -> list[str]:
    """Deliver one chunk that came back on the queue; return the ids of the items it delivered.

    The bytes are checked against the sha256 the worker computed, written where the engine keeps chunks, and
    handed to :func:`cgpu_kit.engine.delivery.take_chunk` (which finds them present and intact, so fetches
    nothing). A chunk seen already is a no-op; a damaged one is dropped and its items are redone by a later run.
    """
    import hashlib

    name = message["chunk"]  # unique to the part's run: a part run again after a lost worker sends new names
    if name in job.chunks_done:
        return []
    data = message["data"]
    if hashlib.sha256(data).hexdigest() != message["sha256"]:
        log.warning("job %s: chunk %s arrived damaged from %s; its items are left for the next run", job.job_id,
                    name, message["worker"])
        return []
    local = job.state_dir / "chunks" / name
    local.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(local) as tmp:
        tmp.write_bytes(data)
    for item_id in message["items"]:
        result = delivery.find_item(job, item_id)
        if result is not None and result.status is ItemStatus.PENDING:
            result.metadata.update(dask_worker=message["worker"], dask_device=device)
    delivery.take_chunk(job, None, name, {"sha256": message["sha256"], "size": len(data)})  # type: ignore[arg-type]
    return list(message["items"])


class ClusterBatch:
    """One job's run on a :class:`DaskRuntime`: submit parts as slots free up, deliver chunks as they come."""

    def __init__(self, runtime: DaskRuntime, job: CGPUJob, pacing: Pacing) -> None:
        distributed = _distributed()
        self.runtime, self.job, self.pacing = runtime, job, pacing
        self.client = runtime.client
        tag = f"cgpu-kit-{job.job_id}"
        self.names = {"queue": tag, "cancel": f"{tag}-cancel"}
        self.queue = distributed.Queue(tag, client=self.client)
        self.cancel = distributed.Variable(self.names["cancel"], client=self.client)
        self.cancel.set(False)
        self.done: dict[int, set[str]] = {}
        self.running: dict[Any, int] = {}
        gpus = runtime.gpu_slots()
        self.resources = {"GPU": 1} if gpus else None
        self.device = "gpu" if gpus else "cpu"
        if not gpus:
            log.warning("the Dask cluster %s has no worker with a GPU resource (dask worker --resources GPU=1); "
                        "job %s runs on its CPU workers", runtime.client.scheduler.address, job.job_id)

    def run(self) -> None:
        job, clock = self.job, self.pacing.clock
        started = clock.now()
        deadline = started + job.timeout
        parts = cut_parts(job, self.runtime.slots)
        job_file = job.job_file(chunk_seconds=0.0).read_bytes()
        template = job.template_file().read_bytes()
        requirements = job.get_requirements()
        waiting = list(enumerate(parts))
        log.info("job %s: %d item(s) in %d part(s) on %s", job.job_id, len(job.pending), len(parts), self.runtime.name)
        try:
            while waiting or self.running:
                room = max(1, self.runtime.slots) - len(self.running)
                while waiting and room > 0 and not job.cancel_event.is_set():
                    index, path = waiting.pop(0)
                    self._submit(index, path, job_file, template, requirements)
                    room -= 1
                self._drain(timeout=self.pacing.poll_interval or 0.25)
                self._collect()
                if job.cancel_event.is_set() or clock.now() > deadline:
                    if not job.cancel_event.is_set():
                        job.error = f"timed out after {job.timeout:.0f}s (the job timeout)"
                    self._stop()
                    break
        except KeyboardInterrupt:
            job.cancel()
            self._stop()
            raise
        finally:
            self._forget()
            job.timings["run"] = round(job.timings.get("run", 0) + clock.now() - started, 3)

    def _submit(self, index: int, path: Path, job_file: bytes, template: bytes, requirements: Any) -> None:
        from .runtime.cluster_task import run_part

        done = f"{self.names['queue']}-done-{index}"
        self.done[index] = set()
        _distributed().Variable(done, client=self.client).set([])
        future = self.client.submit(
            run_part, path.read_bytes(), job_file, template, part_index=index, names=dict(self.names, done=done),
            modules=tuple(requirements.modules), programs=tuple(requirements.programs), resources=self.resources,
            key=f"cgpu-kit-part-{self.job.job_id}-{index}", pure=False,
        )
        self.running[future] = index

    def _drain(self, timeout: float) -> None:
        """Deliver every chunk waiting on the queue (waiting up to ``timeout`` for the first)."""
        try:
            messages = [self.queue.get(timeout=timeout)]
        except TimeoutError:
            return
        while self.queue.qsize():
            messages.append(self.queue.get())
        for message in messages:
            ids = take_message(self.job, message, self.device)
            part = message["part"]
            if ids and part in self.done and not self.done[part].issuperset(ids):
                self.done[part].update(ids)
                _distributed().Variable(f"{self.names['queue']}-done-{part}", client=self.client).set(
                    sorted(self.done[part]))

    def _collect(self) -> None:
        """Settle the parts whose tasks ended: their last chunks, their notebook and log, or their failure."""
        for future in [f for f in self.running if f.done()]:
            index = self.running.pop(future)
            while self.queue.qsize():
                self._drain(timeout=1)
            try:
                outcome = future.result()
            except Exception as exc:  # the task's own failure, or a part that killed worker after worker
                self.job.error = self.job.error or f"part {index} failed on the Dask cluster: {exc}"
                log.error("job %s: part %d failed on the Dask cluster: %s", self.job.job_id, index, exc)
                continue
            if outcome.get("executed"):
                notebook = self.job.state_dir / f"executed_part{index:04d}.ipynb"
                notebook.write_bytes(outcome["executed"])
                if self.job.log_path is None or outcome.get("exit_code"):
                    self.job.log_path = notebook
            if outcome.get("log"):
                self.job.remote_log = outcome["log"]
            if outcome.get("exit_code"):
                self.job.error = self.job.error or (
                    f"the template failed on the Dask worker {outcome['worker']}: {outcome.get('error')}")

    def _stop(self) -> None:
        """Ask the parts to stop: running ones finish their running items and send them, queued ones end at once
        (they read the same flag first); whatever still runs after the stop grace is cancelled."""
        self.cancel.set(True)
        grace = self.pacing.clock.now() + self.pacing.stop_grace
        while self.running and self.pacing.clock.now() < grace:
            self._drain(timeout=self.pacing.poll_interval or 0.25)
            self._collect()
        self.client.cancel(list(self.running))
        self.running.clear()

    def _forget(self) -> None:
        for name in [self.names["cancel"]] + [f"{self.names['queue']}-done-{i}" for i in self.done]:
            try:
                _distributed().Variable(name, client=self.client).delete()
            except Exception as exc:  # the scheduler gone: nothing to forget
                log.debug("could not delete %s: %s", name, exc)

