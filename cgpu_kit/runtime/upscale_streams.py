"""Several frames in flight: N engines side by side, work handed out in order and put back in order.

The engine holds Python's GIL for the whole of each call (measured: a ticking thread gets no turn during a
0.4 s frame), so engines in threads would take turns. Each extra stream is therefore a child process with
its own engine (``python -m cgpu_kit.runtime.upscale_streams``), fed packed frames on its stdin and answering
on its stdout; one stream stays in this process, as it always did, with no copying at all.

How many: ``streams`` when given, else :func:`choose_streams`'s rule, from measurements (docs/upscale.md):
on an H200 one engine gave 11.3 fps, two processes 17.3, four 21.9 (720p x4, animevideov3: one engine
leaves the GPU half idle); each stream also needs a CPU core for its conversions and pipes. On the CPU path
the engine already spreads over every core: on 2 cores, 1, 2 and 4 streams and 2 streams pinned to a core
each were measured doing the same CPU work per 720p x4 frame (18-20 CPU-s), so more streams would only take
a larger share of a shared machine and multiply the memory.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .context import ItemError
from .upscale_engine import _PROGRESS_LINE, Device, Plan, Upscaler

log = logging.getLogger("cgpu_kit.runtime.upscale")

#: streams on a GPU with the rule's default: four was the best measured on an H200, capped by CPU cores
GPU_STREAMS = 4
#: streams on ncnn's CPU path: one engine over every core (the same CPU-s per frame as 2, 4 or 2 pinned, bench/RESULTS.md)
CPU_STREAMS = 1
#: frames (or tiles) waiting for or inside an engine, per stream: enough to keep each one busy
IN_FLIGHT_PER_STREAM = 2
#: bytes of upscaled frames in flight at most, whatever the number of streams (huge frames: fewer in flight)
IN_FLIGHT_BYTES = 1 << 30

_HEADER = struct.Struct("<cIIIQ")  # kind, width, height, channels, payload bytes
T = TypeVar("T")
R = TypeVar("R")


def choose_streams(device: Device, requested: int = 0, *, cpus: int | None = None) -> tuple[int, str]:
    """(streams, why): the number asked for, or the measured rule for the device."""
    if requested:
        return requested, f"streams={requested} was asked for"
    if device.is_cpu:
        return CPU_STREAMS, ("ncnn's CPU path already uses every core; on 2 cores more streams were measured doing the "
                             "same CPU work per frame, with more memory")
    cores = cpus or os.cpu_count() or 1
    n = max(2, min(GPU_STREAMS, cores))
    return n, (f"a GPU: {GPU_STREAMS} streams measured best on an H200 (11.3 -> 21.9 fps), "
               f"at most one per CPU core ({cores}), at least 2")


def window(streams: int, out_bytes: int) -> int:
    """Frames in flight for ``streams`` engines when each answer takes ``out_bytes``: a few per stream, bounded."""
    return max(1, min(IN_FLIGHT_PER_STREAM * streams, IN_FLIGHT_BYTES // max(1, out_bytes)))


class EngineProcess:
    """An engine in a child process: the same :class:`Upscaler`, reached through a pipe."""

    def __init__(self, plan: Plan, device: Device, *, tile: int = 0, tta: bool = False, cpus: list[int] | None = None) -> None:
        self.spec = {"model": plan.model, "native": plan.native, "scale": plan.scale, "gpuid": device.gpuid,
                     "name": device.name, "tile": tile, "tta": tta, "cpus": cpus}
        self.native = plan.native
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._start()

    def _start(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # this very cgpu_kit, whatever the kernel's cwd
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cgpu_kit.runtime.upscale_streams", json.dumps(self.spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
        )
        self._drain = threading.Thread(target=self._read_stderr, name="upscale-engine-stderr", daemon=True)
        self._drain.start()
        ready = json.loads(self._answer(b"R"))
        self.tile, self.load_seconds = ready["tile"], ready["load_seconds"]

    def _read_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            if not _PROGRESS_LINE.match(raw) and raw.strip():
                self.tail.append(raw.decode(errors="replace").rstrip())

    def _answer(self, kind: bytes) -> bytes:
        head = self.proc.stdout.read(_HEADER.size)
        if len(head) < _HEADER.size:
            self.proc.wait(timeout=10)
            self._drain.join(timeout=5)
            raise ItemError(f"an upscaling engine process exited with {self.proc.returncode}: " + " | ".join(list(self.tail)[-4:]))
        got, _, _, _, size = _HEADER.unpack(head)
        data = self.proc.stdout.read(size)
        if got == b"E":
            raise ItemError(f"the upscaling engine failed: {data.decode(errors='replace')}")
        if got != kind or len(data) != size:
            raise ItemError(f"an upscaling engine process answered out of turn ({got!r}, {len(data)} of {size} bytes)")
        return data

    def upscale_bytes(self, data: bytes, width: int, height: int, channels: int = 3) -> bytes:
        if self.proc.poll() is not None:  # it died on an earlier item (its error went with that item): a fresh one
            self.close()
            self._start()
        try:
            self.proc.stdin.write(_HEADER.pack(b"F", width, height, channels, len(data)))
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the process is gone: reading its answer says how
        return self._answer(b"O")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._drain.join(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


class StreamPool:
    """Engines shared by every item of a batch: each call takes a free engine, so items and frames interleave."""

    def __init__(self, engines: list[Any]) -> None:
        if not engines:
            raise ValueError("a stream pool needs at least one engine")
        self.engines = engines
        self._free: queue.Queue = queue.Queue()
        for e in engines:
            self._free.put(e)
        self._executor = cf.ThreadPoolExecutor(len(engines), thread_name_prefix="upscale-stream")

    @classmethod
    def start(cls, plan: Plan, device: Device, streams: int, *, tile: int = 0, tta: bool = False) -> StreamPool:
        """One engine in this process for one stream; ``streams`` engine processes otherwise, started side by side."""
        if streams == 1:
            return cls([Upscaler(plan, device, tile=tile, tta=tta)])
        with cf.ThreadPoolExecutor(streams) as starter:
            futures = [starter.submit(EngineProcess, plan, device, tile=tile, tta=tta) for _ in range(streams)]
            engines, errors = [], []
            for f in futures:
                try:
                    engines.append(f.result())
                except Exception as exc:  # noqa: BLE001 - every started one is closed before raising
                    errors.append(exc)
        if errors:
            for e in engines:
                e.close()
            raise errors[0]
        return cls(engines)

    @property
    def streams(self) -> int:
        return len(self.engines)

    @property
    def in_process(self) -> bool:
        return isinstance(self.engines[0], Upscaler)

    def map(self, fn: Callable[[Any, T], R], jobs: Iterable[T], *, check: Callable[[], None] = lambda: None,
            in_flight: int | None = None) -> Iterator[R]:
        """``fn(engine, job)`` for each job, several at once, yielded in the jobs' order.

        At most ``in_flight`` jobs (default: a few per stream) are taken from ``jobs`` ahead of the one
        yielded, so a long video holds only a few frames; ``check`` runs while waiting (timeout, cancel).
        """
        limit = in_flight or IN_FLIGHT_PER_STREAM * self.streams
        pending: collections.deque[cf.Future] = collections.deque()
        source = iter(jobs)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        job = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.append(self._executor.submit(self._run, fn, job))
                if not pending:
                    return
                head = pending.popleft()
                while True:
                    check()
                    try:
                        result = head.result(timeout=0.2)
                        break
                    except cf.TimeoutError:
                        continue
                yield result
        finally:
            for f in pending:
                f.cancel()

    def _run(self, fn: Callable[[Any, T], R], job: T) -> R:
        engine = self._free.get()
        try:
            return fn(engine, job)
        finally:
            self._free.put(engine)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for e in self.engines:
            if isinstance(e, EngineProcess):
                e.close()


def _serve(spec: dict[str, Any]) -> int:
    """The child's loop: load the engine, say ready, then answer each frame until stdin closes."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the engine prints goes to stderr, never into the answers
    if spec.get("cpus"):
        os.sched_setaffinity(0, set(spec["cpus"]))  # before ncnn counts the cores it may use
    stdin = sys.stdin.buffer
    parent = os.getppid()

    def orphaned() -> None:  # a killed parent never closes our stdin while a frame is being upscaled
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, name="upscale-engine-orphan-watch", daemon=True).start()

    def send(kind: bytes, payload: bytes, w: int = 0, h: int = 0, c: int = 0) -> None:
        out.write(_HEADER.pack(kind, w, h, c, len(payload)))
        out.write(payload)
        out.flush()

    try:
        plan = Plan(spec["model"], spec["native"], spec["scale"])
        engine = Upscaler(plan, Device(spec["gpuid"], spec["name"], "the parent's choice"), tile=spec["tile"], tta=spec["tta"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the item with it
        send(b"E", f"{type(exc).__name__}: {exc}".encode())
        return 1
    send(b"R", json.dumps({"tile": engine.tile, "load_seconds": engine.load_seconds}).encode())
    while True:
        head = stdin.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return 0
        _, w, h, c, size = _HEADER.unpack(head)
        data = stdin.read(size)
        try:
            answer = engine.upscale_bytes(data, w, h, c)
        except Exception as exc:  # noqa: BLE001
            send(b"E", f"{type(exc).__name__}: {exc}".encode())
            continue
        send(b"O", answer, w * plan.native, h * plan.native, c)


if __name__ == "__main__":
    sys.exit(_serve(json.loads(sys.argv[1])))
