"""A job: WHAT to do with a batch of files. The manager decides when; a transport decides where.

A job type is a small subclass: its name, its template, its parameters, its requirements, what media it
accepts and how long it may take. The base class owns the batch's life:

    prepare_local -> upload -> run_remote (launch, poll, fetch chunks as they finish) -> download -> cleanup

Every input gets an :class:`~cgpu_kit.results.ItemResult`; a bad input fails alone and never costs the rest.
"""

from __future__ import annotations

import abc
import json
import concurrent.futures as cf
import errno
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Sequence

from .. import __version__
from ..batch import BatchItem, member_name, pack_part, safe_extract, split_parts
from ..exceptions import (
    CgpuKitError, DiskSpaceError, InputError, ParameterError, RuntimeLostError, TransportError,
)
from ..ledger import STATE_DIR, Ledger, OutputLock, item_key
from ..media import MediaInfo, probe
from ..params import ParamSet, check_number
from ..remote import RemoteBatch
from ..requirements import Requirements
from ..results import ItemResult, ItemStatus, JobResult, JobStatus
from ..runtime import layout
from ..templates import template_path
from ..transports.base import Transport
from ..util import file_sha256, input_names, output_folder, real_path, write_json

log = logging.getLogger(__name__)

DEFAULT_REMOTE_ROOT = "/content"
#: parts are at most this big by default: one cgpu upload request carries it reliably
DEFAULT_PART_BYTES = 48 << 20

PLAN = "plan.json"
CLOSED = "closed"

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
        self.remote_root = (remote_root or _default_root(backend)).rstrip("/")
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
        self._ledger = Ledger(self.out_dir)
        self._lock = OutputLock(self.out_dir)
        self._results_seen = 0
        self._chunks_done: set[str] = set()
        self.logs_local = False
        self.prepared = False

    # -- what subclasses describe -------------------------------------------------------------------------

    @classmethod
    def describe(cls) -> str:
        """One line of help: ``summary``, or the first line of the class docstring."""
        return cls.summary or (cls.__doc__ or cls.job_type).strip().splitlines()[0]

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

    # -- step 1: validate and pack -------------------------------------------------------------------------

    def prepare_local(self) -> None:
        """Validate every input, skip what the output folder already holds, and plan the rest.

        Outputs are never taken as inputs: whatever lies inside the output folder, or is recorded as written by
        the toolkit in a ledger, is left out (one line says how many), so a glob that reaches the output folder
        does not process the outputs of earlier runs again.
        """
        started = time.monotonic()
        self._lock.acquire()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.items = []
        seen: dict[Path, ItemResult] = {}
        taken: set[str] = set()
        names, self.left_out = self._leave_out_outputs(self.input_names)
        if self.left_out:
            log.warning("%d input(s) left out: they are outputs of cgpu-kit (inside %s or recorded in a ledger)",
                        len(self.left_out), self.out_dir)
        self.inputs = [Path(n) for n in names]
        checked = self._check_all(self.inputs)
        for n, (name, raw) in enumerate(zip(names, self.inputs)):
            result = ItemResult(input_path=name, item_id=f"i{n:04d}")
            self.items.append(result)
            try:
                path = raw.expanduser().absolute()
                real = real_path(path)
                if real in seen:
                    result.status = ItemStatus.SKIPPED
                    result.error = f"duplicate of input {seen[real].input_path!r}; processed once"
                    result.metadata["duplicate_of"] = seen[real].item_id
                    continue
                seen[real] = result
                info, sha = checked[n]()
                key = item_key(self.job_type, sha, self.params, self.tool_version())
                stem = self._ledger.stem_for(path.stem, key, taken)
                taken.add(stem)
                item = BatchItem(
                    result.item_id, str(path), path.name, path.stat().st_size, sha,
                    member_name(result.item_id, path.name), out_stem=stem, key=key, probe=info.to_dict(),
                )
                result.metadata.update(key=key, media=info.to_dict())
                done = None if self.force else self._ledger.intact(stem, key)
                if done is not None:
                    result.status = ItemStatus.SKIPPED
                    result.outputs = [str(self.out_dir / o) for o in done["outputs"]]
                    result.metadata["skipped"] = "already done in an earlier run; outputs checked intact"
                    continue
                kept = [] if self.overwrite else self._ledger.changed_outputs(stem)
                if kept:
                    self._keep_users_files(result, kept)
                    continue
                if self._is_own_output(path, stem):
                    raise InputError(
                        f"{path}: its output would overwrite it; choose an output folder other than its own",
                        path=str(path),
                    )
                self.batch_items[result.item_id] = item
            except InputError as exc:
                result.status = ItemStatus.FAILED
                result.error = str(exc)
            except OSError as exc:
                result.status = ItemStatus.FAILED
                result.error = f"{name}: cannot be read ({exc.strerror or exc}); check the file and its permissions"
        skipped = sum(1 for i in self.items if i.status is ItemStatus.SKIPPED and "skipped" in i.metadata)
        if skipped:
            log.info("%d item(s) already done in %s: skipped (use force=True / --force to redo them)", skipped, self.out_dir)
        self.prepared = True
        self.timings["prepare"] = round(time.monotonic() - started, 3)

    def _leave_out_outputs(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Split ``names`` into real inputs and outputs of the toolkit (inside the output folder, or recorded
        by the ledger of the folder they are in)."""
        out_real = real_path(self.out_dir)
        ledgers: dict[Path, Ledger] = {}
        keep, left = [], []
        for name in names:
            path = Path(os.path.normpath(Path(name).expanduser().absolute()))
            real = real_path(path)
            inside = real == out_real or out_real in real.parents or self.out_dir in path.parents
            if inside and self.outputs_beside_inputs:
                inside = STATE_DIR in real.parts or (real.parent == out_real and self._ledger.wrote(real.name))
            elif not inside:
                folder = real.parent
                ledger = ledgers.setdefault(folder, Ledger(folder))
                inside = ledger.wrote(real.name)
            (left if inside else keep).append(name)
        return keep, left

    def _keep_users_files(self, result: ItemResult, names: Sequence[str]) -> None:
        """Skip an item whose output names are taken by files the toolkit did not write (or that changed since)."""
        files = ", ".join(str(self.out_dir / n) for n in names)
        result.status = ItemStatus.SKIPPED
        result.error = (
            f"{result.input_path}: kept {files}: not written by cgpu-kit, or changed since it was; "
            "use --overwrite (overwrite=True) to replace it, or choose another output folder"
        )
        result.metadata["kept_files"] = [str(self.out_dir / n) for n in names]
        log.warning("%s", result.error)

    def _check_all(self, inputs: Sequence[Path]) -> list[Callable[[], tuple[MediaInfo, str]]]:
        """Probe and hash every input side by side (ffprobe and disk bound); each result re-raises its error.

        An interrupt cancels the checks not yet started, so Ctrl-C ends the run within a second or two.
        """
        def check(raw: Path) -> tuple[MediaInfo, str]:
            path = raw.expanduser().absolute()
            return self._validate(path), file_sha256(path)

        pool = cf.ThreadPoolExecutor(max(1, min(8, len(inputs))))
        try:
            once: dict[Path, cf.Future[tuple[MediaInfo, str]]] = {}  # a duplicate input is checked once
            for raw in inputs:
                real = real_path(raw.expanduser().absolute())
                if real not in once:
                    once[real] = pool.submit(check, raw)
            cf.wait(once.values())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [once[real_path(raw.expanduser().absolute())].result for raw in inputs]

    def _validate(self, path: Path) -> MediaInfo:
        try:
            path.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(f"{path}: is a symbolic link that loops back on itself; point it at a real file",
                                 path=str(path)) from None
            if path.is_symlink():
                raise InputError(f"{path}: is a symbolic link to a file that does not exist; fix or remove the link",
                                 path=str(path)) from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise InputError(f"{path}: no such file; check the path", path=str(path)) from None
            raise InputError(f"{path}: cannot be read ({exc.strerror}); check the file and its permissions",
                             path=str(path)) from None
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not a file; give the files inside it", path=str(path))
        if not path.is_file():
            raise InputError(
                f"{path}: is not a regular file (a pipe, socket or device); save its content to a file and give that",
                path=str(path),
            )
        if path.stat().st_size == 0:
            raise InputError(f"{path}: is empty (0 bytes); re-export or re-download it", path=str(path))
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot be read; check its permissions", path=str(path))
        info = probe(path)
        self.check_media(path, info)
        return info

    def _is_own_output(self, path: Path, stem: str) -> bool:
        """Whether this item's output would overwrite the input itself (job types may refine it)."""
        return path.parent.resolve() == self.out_dir.resolve() and path.stem == stem

    def tool_version(self) -> str:
        """Part of each item's cache key: outputs of another version of the tools are not reused."""
        return __version__

    @property
    def pending(self) -> list[BatchItem]:
        """Items still to process: validated, not skipped, without a final result yet."""
        by_id = {i.item_id: i for i in self.items}
        return [b for b in self.batch_items.values() if by_id[b.item_id].status in (ItemStatus.PENDING, ItemStatus.CANCELLED)]

    def pack(self) -> list[Path]:
        """Zip the pending items into parts with their manifest (done again after a runtime is lost)."""
        pending = self.pending
        header = {"job_type": self.job_type, "job_id": self.job_id, "params": self.params, "version": __version__}
        parts_dir = self.state_dir / "parts"
        if parts_dir.exists():
            shutil.rmtree(parts_dir)
        paths = []
        for index, members in enumerate(split_parts(pending, self.part_bytes)):
            paths.append(pack_part(members, parts_dir / layout.part_name(index), dict(header, part=index)))
        return paths

    def job_file(self, chunk_seconds: float) -> Path:
        path = self.state_dir / layout.JOB_FILE
        write_json(path, {
            "job_type": self.job_type, "job_id": self.job_id, "params": self.params, "processor": self.processor,
            "item_timeout": self.item_timeout, "timeout": self.timeout, "workers": self.workers,
            "chunk_seconds": chunk_seconds, "version": __version__,
        })
        return path

    # -- steps 2-5: upload, run, download ------------------------------------------------------------------

    def upload(self, transport: Transport) -> None:
        """Send the parts, the template and the job file; what the runtime already holds is not sent again."""
        started = time.monotonic()
        remote = self.remote(transport)
        remote.make_dirs()
        self.check_space(transport)
        parts = self.pack()
        for part in parts:
            sent = remote.upload(part, f"{layout.PARTS}/{part.name}", timeout=self.transfer_timeout(part.stat().st_size))
            log.info("%s %s (%.1f MB)", "uploaded" if sent else "already on the runtime:", part.name, part.stat().st_size / 1e6)
        remote.upload(self.template_file(), layout.TEMPLATE, timeout=120)
        remote.upload(self.job_file(chunk_seconds=transport.chunk_seconds), layout.JOB_FILE, timeout=60)
        self.write_plan(transport)
        self.timings["upload"] = round(self.timings.get("upload", 0) + time.monotonic() - started, 3)

    def write_plan(self, transport: Transport) -> None:
        """Record what was sent where, so a later run (or ``cgpu-kit attach``) can pick the job up."""
        write_json(self.state_dir / PLAN, {
            "job_type": self.job_type, "job_id": self.job_id, "params": self.params,
            "backend": getattr(self.backend, "name", self.backend), "remote_root": transport.remote_root,
            "remote_work_dir": self.remote_work_dir, "out_dir": str(self.out_dir), "time": time.time(),
            "items": [dict(vars(b), input_path=self._item(b.item_id).input_path) for b in self.pending],
        })
        (self.state_dir / CLOSED).unlink(missing_ok=True)
        _remember_job(self.job_id, self.out_dir)

    @classmethod
    def from_plan(cls, plan: dict[str, Any], *, backend: str | Transport | None = None) -> "CGPUJob":
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

    #: outputs are about this many times the size of the inputs (for the disk space check)
    output_size_factor: ClassVar[float] = 2.0

    def estimated_output_bytes(self, item: BatchItem) -> int:
        return int(item.size * self.output_size_factor)

    def space_needed(self) -> tuple[int, int]:
        """Bytes the batch needs (here, on the runtime): parts and chunks in transit, inputs and outputs."""
        inputs = sum(b.size for b in self.pending)
        outputs = sum(self.estimated_output_bytes(b) for b in self.pending)
        return inputs + int(outputs * 1.2), 2 * inputs + 2 * outputs

    def check_space(self, transport: Transport) -> None:
        """Refuse a batch that cannot fit, before anything is sent."""
        local_need, remote_need = self.space_needed()
        free_here = shutil.disk_usage(self.out_dir).free
        if free_here < local_need:
            raise DiskSpaceError(
                f"{self.out_dir} has {_mb(free_here)} free but this batch needs about {_mb(local_need)}; "
                "free some space or choose another output folder"
            )
        free_there = self.remote(transport).free_bytes()
        if free_there is not None and free_there < remote_need:
            raise DiskSpaceError(
                f"the runtime has {_mb(free_there)} free in {transport.remote_root} but this batch needs about "
                f"{_mb(remote_need)}; split the batch into smaller ones"
            )

    def template_file(self) -> Path:
        """The notebook this job type runs on the runtime."""
        return template_path(self.template_name)

    def transfer_timeout(self, size: int) -> float:
        """Seconds one upload or download of ``size`` bytes may take (at least 250 kB/s)."""
        return 60.0 + size / 250e3

    def remote(self, transport: Transport) -> RemoteBatch:
        return RemoteBatch(transport, self.remote_work_dir)

    def run_remote(self, transport: Transport, *, deadline: float | None = None) -> None:
        """Launch the batch detached, then poll it, fetching finished chunks, until it ends.

        Cancellation (``cancel()``) and the job's timeout stop the remote loop through its cancel file; the
        items it finished are still fetched.
        """
        started = time.monotonic()
        deadline = deadline or (started + self.timeout)
        remote = self.remote(transport)
        state = remote.launch()
        log.info("job %s: batch %s on %s", self.job_id, state, transport.name)
        stop_sent = False
        relaunches = 0
        while True:
            status = remote.poll(self._results_seen)
            self._absorb(status, transport)
            state = status["state"]
            if state == "absent":
                raise RuntimeLostError(f"the work folder of job {self.job_id} is gone from the runtime")
            if state == "finished":
                break
            if state == "dead":
                relaunches += 1
                if relaunches > 2:
                    raise CgpuKitError("the batch's driver keeps dying on the runtime; see the runtime log")
                log.warning("job %s: the driver died; relaunching it (finished items are kept)", self.job_id)
                remote.launch()
            if state == "uploaded":
                remote.launch()
            if not stop_sent and (self.cancel_event.is_set() or time.monotonic() > deadline):
                if not self.cancel_event.is_set():
                    self.error = f"timed out after {self.timeout:.0f}s (the job timeout)"
                remote.cancel()
                stop_sent = True
                deadline = time.monotonic() + 60  # grace for the runtime to wrap up
            elif stop_sent and time.monotonic() > deadline:
                break
            self._wait(transport.poll_interval)
        self.remote_status = status
        if status.get("exit_code"):
            self.error = self.error or f"the template failed on the runtime: {status.get('error')}"
        self.timings["run"] = round(self.timings.get("run", 0) + time.monotonic() - started, 3)

    def _wait(self, seconds: float) -> None:
        self.cancel_event.wait(seconds) if not self.cancel_event.is_set() else time.sleep(seconds)

    def _absorb(self, status: dict[str, Any], transport: Transport) -> None:
        """Take new item results (progress) and fetch every finished chunk not yet here."""
        for rec in status.get("results", []):
            self._results_seen += 1
            result = self._item(rec["item_id"])
            if result is not None and result.status is ItemStatus.PENDING:
                result.timings.update(rec.get("timings", {}))
        for name, meta in sorted(status.get("ready", {}).items()):
            if name not in self._chunks_done:
                self._take_chunk(transport, name, meta)

    def _take_chunk(self, transport: Transport, name: str, meta: dict[str, Any]) -> None:
        started = time.monotonic()
        local = self.state_dir / "chunks" / name
        if not (local.exists() and file_sha256(local) == meta.get("sha256")):
            self.remote(transport).fetch(f"{layout.READY}/{name}", local, sha256=meta.get("sha256"), timeout=self.transfer_timeout(meta.get("size", 0)))
        dest = self.state_dir / "chunks" / (name + ".d")
        if dest.exists():
            shutil.rmtree(dest)
        safe_extract(local, dest)
        manifest = json.loads((dest / "manifest.json").read_text())
        for rec in manifest["results"]:
            self._deliver(rec, dest / rec["item_id"])
        shutil.rmtree(dest, ignore_errors=True)
        local.unlink(missing_ok=True)
        self._chunks_done.add(name)
        self.timings["download"] = round(self.timings.get("download", 0) + time.monotonic() - started, 3)

    def reset_remote_progress(self) -> None:
        """Forget what was seen of a runtime that was lost; items already delivered stay delivered."""
        self._results_seen = 0
        self._chunks_done = set()
        self.logs_local = False
        for result in self.items:
            if result.status is ItemStatus.CANCELLED:
                result.status = ItemStatus.PENDING

    def _item(self, item_id: str) -> ItemResult | None:
        return next((i for i in self.items if i.item_id == item_id), None)

    def _deliver(self, rec: dict[str, Any], folder: Path) -> None:
        """Move one item's outputs into the output folder under their final names and record them."""
        result = self._item(rec["item_id"])
        item = self.batch_items.get(rec["item_id"])
        if result is None or item is None or result.status not in (ItemStatus.PENDING, ItemStatus.CANCELLED):
            return
        result.timings.update(rec.get("timings", {}))
        result.metadata.update(rec.get("metadata", {}))
        if rec.get("stderr_tail"):
            result.metadata["stderr_tail"] = rec["stderr_tail"]
        if rec["status"] != "done":
            result.status = ItemStatus.FAILED if rec["status"] == "failed" else ItemStatus.CANCELLED
            result.error = f"{item.source}: {rec.get('error') or 'failed'}"
            self._notify(result)
            return
        earlier = self._ledger.get(item.out_stem)
        if earlier is not None and earlier.get("job_id") == self.job_id and self._ledger.intact(item.out_stem, item.key):
            # a resumed job meets a chunk it already delivered: the item is done, nothing is moved or recorded again
            result.status = ItemStatus.DONE
            result.outputs = [str(self.out_dir / o) for o in earlier["outputs"]]
            self._notify(result)
            return
        for name in rec["outputs"]:
            src = folder / name
            digest = rec.get("sha256", {}).get(name)
            if not src.is_file() or (digest and file_sha256(src) != digest):
                result.status = ItemStatus.FAILED
                result.error = f"{item.source}: its output {name} arrived damaged; run again to redo it"
                self._notify(result)
                return
        finals = [self.output_name(item.out_stem, name) for name in rec["outputs"]]
        kept = [] if self.overwrite else [f for f in finals if not self._ledger.owns(f)]
        if kept:
            self._keep_users_files(result, kept)
            self._notify(result)
            return
        outputs, sizes, digests = [], {}, {}
        for name, final in zip(rec["outputs"], finals):
            src = folder / name
            digest = rec.get("sha256", {}).get(name)
            dest = self.out_dir / final
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dest)
            outputs.append(final)
            sizes[final] = dest.stat().st_size
            digests[final] = digest or file_sha256(dest)
        result.outputs = [str(self.out_dir / o) for o in outputs]
        result.status = ItemStatus.DONE
        self._ledger.add({
            "key": item.key, "status": "done", "input": item.source, "out_stem": item.out_stem,
            "outputs": outputs, "sizes": sizes, "sha256": digests, "job_id": self.job_id, "job_type": self.job_type,
            "time": time.time(),
        })
        self._notify(result)

    def _notify(self, result: ItemResult) -> None:
        if self.on_item is not None:
            try:
                self.on_item(self, result)
            except Exception:  # a broken progress display must not cost the batch
                log.exception("progress callback failed")

    def download(self, transport: Transport) -> None:
        """Fetch what is left: last chunks, the results file, the executed notebook and the runtime log."""
        started = time.monotonic()
        remote = self.remote(transport)
        status = remote.poll(self._results_seen)
        self._absorb(status, transport)
        logs = self.state_dir
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
            self.log_path = logs / layout.EXECUTED
        if (logs / layout.RUNTIME_LOG).exists():
            self.remote_log = _tail(logs / layout.RUNTIME_LOG)
        self.logs_local = not unreachable
        self.timings["download"] = round(self.timings.get("download", 0) + time.monotonic() - started, 3)

    def cleanup(self, transport: Transport | None) -> None:
        """Remove the remote work folder (only once the logs are local) and the local staging files."""
        try:
            if transport is not None and self.logs_local:
                try:
                    self.remote(transport).remove()
                    (self.state_dir / CLOSED).touch()
                except CgpuKitError as exc:
                    log.warning("job %s: could not remove %s on the runtime: %s", self.job_id, self.remote_work_dir, exc)
            elif not (self.state_dir / PLAN).exists():
                self.state_dir.mkdir(parents=True, exist_ok=True)
                (self.state_dir / CLOSED).touch()
            shutil.rmtree(self.state_dir / "parts", ignore_errors=True)
            if (self.state_dir / CLOSED).exists():
                shutil.rmtree(self.state_dir / "chunks", ignore_errors=True)
        except OSError as exc:  # a full disk: the job's state stays, and the next run picks it up
            log.warning("job %s: could not tidy its state in %s: %s", self.job_id, self.state_dir, exc)
        finally:
            self._lock.release()

    def cancel(self) -> None:
        """Ask the job to stop: the runtime stops after the running items, finished ones are kept."""
        self.cancel_event.set()

    def stop(self, transport: Transport, *, grace: float = 60.0) -> None:
        """Stop the remote batch now and bring home what it finished (after a local interrupt)."""
        self.cancel()
        remote = self.remote(transport)
        remote.cancel()
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            status = remote.poll(self._results_seen)
            self._absorb(status, transport)
            if status["state"] in ("finished", "absent", "dead", "uploaded"):
                break
            time.sleep(transport.poll_interval)
        self.download(transport)

    def hold_output(self, other: "CGPUJob | None" = None) -> None:
        """Take the output folder's lock, or share ``other``'s (a job picking up leftovers in its folder)."""
        if other is not None:
            self._lock = other._lock
        self._lock.acquire()

    def release_output(self) -> None:
        self._lock.release()

    def release_all(self) -> None:
        """Let go of the output folder whatever happened (an unexpected error, an interrupt)."""
        self._lock.release_all()

    def mark_closed(self) -> None:
        """Nothing is left of this job on its runtime: later runs need not pick it up."""
        self.logs_local = True
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / CLOSED).touch()

    # -- the result ----------------------------------------------------------------------------------------

    def finish(self, error: str | None = None) -> JobResult:
        """Settle every item's status and the job's, and return the :class:`JobResult`."""
        if error and not self.error:
            self.error = error
        # an interrupt after every item finished cancels nothing: the job completed
        cancelled = self.cancel_event.is_set() and any(
            i.status in (ItemStatus.PENDING, ItemStatus.CANCELLED) for i in self.items)
        for result in self.items:
            if result.status is ItemStatus.PENDING:
                if cancelled:
                    result.status, result.error = ItemStatus.CANCELLED, "cancelled before it finished"
                else:
                    result.status = ItemStatus.FAILED
                    result.error = f"{result.input_path}: not processed: {self.error or 'the runtime returned no result for it'}"
            elif result.status is ItemStatus.CANCELLED and not cancelled:
                result.status = ItemStatus.FAILED
                result.error = f"{result.input_path}: stopped: {self.error or 'the batch was stopped'}"
        for result in self.items:
            dup = result.metadata.get("duplicate_of")
            if dup:
                original = self._item(dup)
                if original is not None:
                    result.outputs = list(original.outputs)
        failed = [i for i in self.items if i.status is ItemStatus.FAILED]
        ok = [i for i in self.items if i.ok]
        if cancelled:
            self.status = JobStatus.CANCELLED
        elif self.error and not ok:
            self.status = JobStatus.FAILED
        elif failed and not ok:
            self.status = JobStatus.FAILED
        elif failed or self.error:
            self.status = JobStatus.PARTIAL
        else:
            self.status = JobStatus.COMPLETED
        kept = [i for i in self.items if i.metadata.get("kept_files")]
        if kept and self.status is JobStatus.COMPLETED:
            self.status = JobStatus.PARTIAL
            self.error = self.error or (
                f"{len(kept)} item(s) skipped to keep files cgpu-kit did not write; see the summary")
        if self.status is JobStatus.FAILED and not self.error:
            self.error = "every item failed"
        from ..report import write_report_safely

        self.report_path = write_report_safely(self.result(), self.out_dir)
        self._write_summary()
        return self.result()

    def result(self) -> JobResult:
        return JobResult(
            success=self.status is JobStatus.COMPLETED,
            output_path=str(self.out_dir),
            metadata={"job_type": self.job_type, "params": dict(self.params), "backend": getattr(self.backend, "name", self.backend),
                      "remote_work_dir": self.remote_work_dir, "left_out": list(self.left_out)},
            error=self.error, status=self.status, job_id=self.job_id, items=list(self.items),
            log_path=str(self.log_path) if self.log_path else None, remote_log=self.remote_log,
            timings=dict(self.timings), report_path=str(self.report_path) if self.report_path else None,
        )

    def _write_summary(self) -> None:
        try:
            write_json(self.state_dir / "result.json", self.result().to_dict())
        except OSError as exc:
            log.warning("could not write the job summary: %s", exc)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def _jobs_index() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cgpu_kit" / "jobs"


def _remember_job(job_id: str, out_dir: Path) -> None:
    """Note where a job's state lives, so ``cgpu-kit attach JOB_ID`` works without ``-o``."""
    try:
        write_json(_jobs_index() / f"{job_id}.json", {"out_dir": str(out_dir)})
    except OSError as exc:
        log.debug("could not remember job %s: %s", job_id, exc)


def find_plan(job_id: str, out_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The ``plan.json`` of ``job_id``, in ``out_dir`` or wherever the jobs index says."""
    if out_dir is None:
        try:
            out_dir = json.loads((_jobs_index() / f"{job_id}.json").read_text())["out_dir"]
        except (OSError, ValueError, KeyError):
            return None
    path = Path(out_dir) / STATE_DIR / f"job_{job_id}" / PLAN
    return path if path.exists() else None


def open_jobs(out_dir: Path, job_type: str | None = None) -> list[dict[str, Any]]:
    """Plans of jobs in ``out_dir`` that sent work to a runtime and were never closed (their process died,
    or the runtime could not be reached at the end): their finished items can still be fetched."""
    found = []
    for plan_path in sorted((out_dir / STATE_DIR).glob(f"job_*/{PLAN}"), key=lambda p: p.stat().st_mtime):
        if (plan_path.parent / CLOSED).exists():
            continue
        try:
            plan = json.loads(plan_path.read_text())
        except (OSError, ValueError):
            continue
        if job_type is None or plan.get("job_type") == job_type:
            found.append(plan)
    return found


def _default_root(backend: str | Transport) -> str:
    if isinstance(backend, Transport):
        return backend.remote_root
    if backend == "local":
        from ..transports.local import default_local_root

        return default_local_root()
    return os.environ.get("CGPU_KIT_REMOTE_ROOT") or DEFAULT_REMOTE_ROOT


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

