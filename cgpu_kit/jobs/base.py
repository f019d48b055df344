"""A job type: WHAT to do with a batch of files. The manager decides when and how often; a transport decides where;
the engine (:mod:`cgpu_kit.engine`) carries the batch through its steps.

A job type is a small subclass registered once (:mod:`cgpu_kit.registry`): its name, its parameters, what
media it accepts, its requirements, its runtime processor, how long it may take. The base class keeps the
seed's interface, each step delegating to the engine:

    prepare_local -> upload -> run_remote (launch, poll, fetch chunks as they finish) -> download -> cleanup

Every input gets an :class:`~cgpu_kit.results.ItemResult`; a bad input fails alone and never costs the rest.
"""

from __future__ import annotations

import abc
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from .. import __version__
from ..batch import BatchItem
from ..clock import Pacing
from ..engine import delivery, inputs, plan, polling, settle
from ..engine.plan import CLOSED, DEFAULT_PART_BYTES, PLAN, find_plan, open_jobs  # noqa: F401 - known here too
from ..exceptions import InputError
from ..ledger import STATE_DIR, Ledger, OutputLock
from ..media import MediaInfo
from ..params import ParamSet, check_number
from ..remote import RemoteBatch
from ..requirements import Requirements
from ..results import ItemResult, ItemStatus, JobResult, JobStatus
from ..templates import template_path
from ..transports.base import Transport
from ..util import input_names, output_folder

ProgressCallback = Callable[["CGPUJob", ItemResult], None]


class CGPUJob(abc.ABC):
    """Base of every job type. Subclasses set the class attributes and may refine :meth:`check_media`."""

    #: the name it is registered under (cgpu_kit/registry.py): the CLI subcommand, ``cgpu_kit.run(job_type)``
    job_type: ClassVar[str]
    #: one line of help (the CLI's command list, the panel); default: the first line of the class docstring
    summary: ClassVar[str] = ""
    #: ``"module:Class"`` of the runtime-side :class:`~cgpu_kit.runtime.processor.Processor`, written into the
    #: job file: the runtime loads it from there and never imports job types
    processor: ClassVar[str]
    #: the notebook run on the runtime; the generic ``job.ipynb`` runs any processor
    template_name: ClassVar[str] = "job.ipynb"
    #: slow-to-import modules the processor needs, imported in the kernel before the batch arrives where the
    #: runtime's driver starts ahead (the local runtime: cgpu_kit/runtime/driver.py, standby)
    warm_imports: ClassVar[tuple[str, ...]] = ()
    params_spec: ClassVar[ParamSet]
    #: seconds the whole job may take, and each item (subclasses may size these to the batch)
    default_timeout: ClassVar[float] = 600.0
    default_item_timeout: ClassVar[float] = 300.0
    #: kinds of media accepted: "video", "audio", "image"
    accepts: ClassVar[frozenset[str]] = frozenset({"video"})
    #: whether inputs may sit in the output folder (transcribe writes .srt beside its clips); otherwise every
    #: file inside the output folder is taken for an output and left out of the inputs
    outputs_beside_inputs: ClassVar[bool] = False

    def __init__(
        self,
        inputs: Iterable[str | os.PathLike[str]],
        out_dir: str | os.PathLike[str],
        *,
        params: dict[str, Any] | None = None,
        backend: str | Transport = "local",
        remote_root: str | None = None,
        job_id: str | None = None,
        timeout: float | None = None,
        item_timeout: float | None = None,
        workers: int = 0,
        force: bool = False,
        overwrite: bool = False,
        part_bytes: int = DEFAULT_PART_BYTES,
        max_pixels: int = 8192 * 8192,
        runtimes: Iterable[Any] | str | None = None,
        **more_params: Any,
    ) -> None:
        self.job_id = job_id or uuid.uuid4().hex
        #: the inputs as the caller spelled them (``./a.mp4`` stays ``./a.mp4`` in messages)
        self.input_names = input_names(inputs)
        self.inputs = [Path(p) for p in self.input_names]
        self.out_dir = output_folder(out_dir)
        self.params = self.params_spec.resolve({**(params or {}), **more_params}, job_type=self.job_type)
        self.backend = backend
        self.remote_root_arg = remote_root
        self.remote_root = (remote_root or default_root(backend)).rstrip("/")
        from ..runtimes import parse_runtimes

        #: where the batch may run (``--runtime``): several spread it (cgpu_kit/pool.py), one is ``backend``
        self.runtimes: list[Any] = parse_runtimes(runtimes)
        if len(self.runtimes) == 1:
            self.use_runtime(self.runtimes[0])
        self._timeout = check_number("timeout", timeout)
        self._item_timeout = check_number("item_timeout", item_timeout)
        self.workers = check_number("workers", workers, integer=True, above=False, allow_none=False)
        self.force = bool(force)
        self.overwrite = bool(overwrite)
        self.part_bytes = check_number("part_bytes", part_bytes, integer=True, allow_none=False)
        self.max_pixels = check_number("max_pixels", max_pixels, integer=True, allow_none=False)
        #: inputs left out because they are outputs (inside the output folder, or recorded by a ledger)
        self.left_out: list[str] = []
        self.status = JobStatus.PENDING
        self.items: list[ItemResult] = []
        self.batch_items: dict[str, BatchItem] = {}
        self.error: str | None = None
        self.remote_log = ""
        self.timings: dict[str, float] = {}
        self.state_dir = self.out_dir / STATE_DIR / f"job_{self.job_id}"
        self.log_path: Path | None = None
        self.report_path: Path | None = None
        self.cancel_event = threading.Event()
        self.on_item: ProgressCallback | None = None
        self.ledger = Ledger(self.out_dir)
        self._lock = OutputLock(self.out_dir)
        self.results_seen = 0
        self.chunks_done: set[str] = set()
        self.logs_local = False
        self.prepared = False
        #: the batch whose standby driver was started while the inputs were checked (manager.prepare)
        self.standby: RemoteBatch | None = None
        #: its files were sent and its standby driver started while the part before it ran (lookahead.py)
        self.sent_ahead = False
        #: called (once) when its remote batch is this many seconds from its end, as its runtime estimates it
        self.near_end_s = 0.0
        self.on_near_end: Callable[[CGPUJob], None] | None = None

    # -- what subclasses describe -------------------------------------------------------------------------

    @classmethod
    def describe(cls) -> str:
        """One line of help: ``summary``, or the first line of the class docstring."""
        return cls.summary or (cls.__doc__ or cls.job_type).strip().splitlines()[0]

    def use_runtime(self, runtime: Any) -> None:
        """Run on this one runtime (a :class:`~cgpu_kit.runtimes.RuntimeSpec` or a Transport), exactly as
        ``backend=`` would."""
        from ..runtimes import RuntimeSpec

        if isinstance(runtime, RuntimeSpec):
            self.backend, self.remote_root_arg = runtime.backend, runtime.remote_root
        else:
            self.backend, self.remote_root_arg = runtime, None
        self.remote_root = (self.remote_root_arg or default_root(self.backend)).rstrip("/")

    def warm_modules(self) -> list[str]:
        """What a standby driver imports in its kernel: the runtime's entry point and its item loop (which the
        entry point imports only when called), the processor's module and :attr:`warm_imports`."""
        return ["cgpu_kit.runtime", "cgpu_kit.runtime.loop", self.processor.partition(":")[0], *self.warm_imports]

    @property
    def remote_work_dir(self) -> str:
        return f"{self.remote_root}/job_{self.job_id}"

    @property
    def timeout(self) -> float:
        return float(self._timeout or self.sized_timeout())

    @property
    def item_timeout(self) -> float:
        return float(self._item_timeout or self.default_item_timeout)

    def sized_timeout(self) -> float:
        return self.default_timeout

    @abc.abstractmethod
    def get_requirements(self) -> Requirements:
        """What the runtime needs for this job type; installed once per session by the manager."""

    def check_media(self, path: Path, info: MediaInfo) -> None:
        """Raise :class:`InputError` when this job type cannot use ``info``; the default checks ``accepts``."""
        kinds = set()
        if info.is_image:
            kinds.add("image")
        elif info.has_video:
            kinds.add("video")
        if info.has_audio:
            kinds.add("audio")
        if not kinds & self.accepts:
            have = " and ".join(sorted(kinds)) or "no usable stream"
            want = " or ".join(sorted(self.accepts))
            raise InputError(f"{path}: has {have}; {self.job_type} needs {want}", path=str(path))
        if info.width and info.height and info.width * info.height > self.max_pixels:
            raise InputError(
                f"{path}: {info.width}x{info.height} is larger than the limit of {self.max_pixels} pixels "
                "(max_pixels); downscale it first, or raise the limit with --max-pixels N (Python: max_pixels=N)", path=str(path),
            )

    def output_name(self, stem: str, runtime_name: str) -> str:
        """Local file name of a runtime output ``output<suffix>`` of the item whose outputs are ``stem*``."""
        suffix = runtime_name[len("output"):] if runtime_name.startswith("output") else "." + runtime_name
        return stem + suffix

    def _is_own_output(self, path: Path, stem: str) -> bool:
        """Whether this item's output would overwrite the input itself (job types may refine it)."""
        return path.parent.resolve() == self.out_dir.resolve() and path.stem == stem

    def tool_version(self) -> str:
        """Part of each item's cache key: outputs of another version of the tools are not reused."""
        return __version__

    def estimated_output_bytes(self, item: BatchItem) -> int:
        return int(item.size * self.output_size_factor)

    def template_file(self) -> Path:
        """The notebook this job type runs on the runtime."""
        return template_path(self.template_name)

    def transfer_timeout(self, size: int) -> float:
        """Seconds one upload or download of ``size`` bytes may take (at least 250 kB/s)."""
        return 60.0 + size / 250e3

    #: outputs are about this many times the size of the inputs (for the disk space check)
    output_size_factor: ClassVar[float] = 2.0

    # -- the batch's life: each step is the engine's (cgpu_kit/engine/), so a job type stays small ----------

    def prepare_local(self) -> None:
        """Validate every input, skip what the output folder already holds, and plan the rest
        (:func:`cgpu_kit.engine.inputs.prepare`)."""
        inputs.prepare(self)

    def validate(self, path: Path) -> MediaInfo:
        """Check one input (a readable, non-empty regular file of media this job type accepts) and probe it;
        raises :class:`InputError` naming the file and what to do. Job types may add checks."""
        return inputs.validate(self, path)

    @property
    def pending(self) -> list[BatchItem]:
        """Items still to process: validated, not skipped, without a final result yet."""
        by_id = {i.item_id: i for i in self.items}
        return [b for b in self.batch_items.values() if by_id[b.item_id].status in (ItemStatus.PENDING, ItemStatus.CANCELLED)]

    def pack(self, *, by_reference: bool = False) -> list[Path]:
        """Zip the pending items into parts with their manifest (done again after a runtime is lost); by
        reference (no copy of the media) for a runtime on this machine."""
        return plan.pack(self, by_reference=by_reference)

    def job_file(self, chunk_seconds: float) -> Path:
        """The job file the runtime reads: parameters, timeouts and the processor's ``"module:Class"``."""
        return plan.job_file(self, chunk_seconds)

    def space_needed(self) -> tuple[int, int]:
        return plan.space_needed(self)

    def check_space(self, transport: Transport) -> None:
        plan.check_space(self, transport)

    def upload(self, transport: Transport) -> None:
        """Send the parts, the template and the job file; what the runtime already holds is not sent again."""
        plan.upload(self, transport)

    def write_plan(self, transport: Transport) -> None:
        plan.write_plan(self, transport)

    @classmethod
    def from_plan(cls, plan: dict[str, Any], *, backend: str | Transport | None = None) -> CGPUJob:
        """Rebuild a job from its ``plan.json``: same id, same items, same remote folder."""
        job = cls([], plan["out_dir"], params=plan["params"], backend=backend or plan["backend"],
                  remote_root=plan["remote_root"], job_id=plan["job_id"])
        job.remote_root_arg = plan["remote_root"]
        for rec in plan["items"]:
            rec = dict(rec)
            input_path = rec.pop("input_path")
            job.inputs.append(Path(input_path))
            job.items.append(ItemResult(input_path=input_path, item_id=rec["item_id"]))
            job.batch_items[rec["item_id"]] = BatchItem(**rec)
        job.prepared = True
        return job

    def remote(self, transport: Transport) -> RemoteBatch:
        return RemoteBatch(transport, self.remote_work_dir)

    def standby_command(self, remote: RemoteBatch, after: str | None = None) -> str:
        """The shell command that starts this batch's driver ahead on ``remote``'s runtime (its kernel booted,
        :meth:`warm_modules` imported, the processor's model loaded ahead); where and when it is sent is the
        manager's and the transport's choice."""
        return remote.standby_command(self.warm_modules(), {"processor": self.processor, "params": self.params}, after)

    def run_remote(self, transport: Transport, *, deadline: float | None = None, pacing: Pacing | None = None) -> None:
        """Launch the batch detached, then poll it, fetching finished chunks, until it ends."""
        polling.run_remote(self, transport, deadline=deadline, pacing=pacing)

    def download(self, transport: Transport) -> None:
        """Fetch what is left: last chunks, the results file, the executed notebook and the runtime log."""
        polling.download(self, transport)

    def cleanup(self, transport: Transport | None) -> None:
        """Remove the remote work folder (only once the logs are local) and the local staging files."""
        polling.cleanup(self, transport)

    def stop(self, transport: Transport, *, pacing: Pacing | None = None) -> None:
        """Stop the remote batch now and bring home what it finished (after a local interrupt)."""
        polling.stop(self, transport, pacing=pacing)

    def reset_remote_progress(self) -> None:
        """Forget what was seen of a runtime that was lost; items already delivered stay delivered."""
        delivery.reset_remote_progress(self)

    def mark_closed(self) -> None:
        """Nothing is left of this job on its runtime: later runs need not pick it up."""
        polling.mark_closed(self)

    def cancel(self) -> None:
        """Ask the job to stop: the runtime stops after the running items, finished ones are kept."""
        self.cancel_event.set()

    def hold_output(self, other: CGPUJob | None = None) -> None:
        """Take the output folder's lock, or share ``other``'s (a job picking up leftovers in its folder)."""
        if other is not None:
            self._lock = other._lock
        self._lock.acquire()

    def release_output(self) -> None:
        self._lock.release()

    def release_all(self) -> None:
        """Let go of the output folder whatever happened (an unexpected error, an interrupt)."""
        self._lock.release_all()

    # -- the result ----------------------------------------------------------------------------------------

    def finish(self, error: str | None = None) -> JobResult:
        """Settle every item's status and the job's, write the summary and report, return the :class:`JobResult`."""
        return settle.finish(self, error)

    def result(self) -> JobResult:
        return settle.result(self)


def default_root(backend: str | Transport) -> str:
    """Where job folders go on a backend: the transport's own root, the local runtime's cache folder, or the
    cgpu transport's default (``/content``, or ``$CGPU_KIT_REMOTE_ROOT``)."""
    if isinstance(backend, Transport):
        return backend.remote_root
    if backend == "local" or str(backend).startswith("local:"):
        from ..transports.local import default_local_root

        return default_local_root()
    from ..transports.cgpu import default_remote_root

    return default_remote_root()
