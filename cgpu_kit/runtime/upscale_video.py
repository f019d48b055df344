"""A video through the upscaler without touching the disk: ffmpeg decoder pipe -> frames -> ffmpeg encoder pipe.

An ffmpeg decoder writes raw RGB frames to a pipe, the frames are upscaled in memory (several at a time when
the upscaler has several streams) and put back in order, and an ffmpeg encoder reads them on its stdin and
takes the audio from the original file.
"""

from __future__ import annotations

import collections
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..media import find_ffprobe
from ..util import kill_group
from .context import ItemContext, ItemError
from .stabilize import audio_args


@dataclass(frozen=True)
class VideoStream:
    """What the pipes need to know of a video: the decoded frame size and the exact frame rate."""

    width: int
    height: int
    rate: str  # a rational, "30000/1001"
    frames: int | None = None


def video_stream(ctx: ItemContext, src: Path, fallback: dict[str, Any]) -> VideoStream:
    """Read the first video stream's size (rotation applied, as the decoder applies it) and exact rate."""
    ffprobe = find_ffprobe()
    if ffprobe is None:
        fps = fallback.get("fps") or 25.0
        return VideoStream(int(fallback["width"]), int(fallback["height"]), str(Fraction(fps).limit_denominator(1001)),
            fallback.get("frames"))
    out = ctx.run([
        ffprobe, "-v", "error", "-select_streams", "v:0", "-print_format", "json", "-show_streams", "--", "file:" + str(src),
    ], step="probe")
    streams = json.loads(out or "{}").get("streams") or []
    if not streams or not streams[0].get("width"):
        raise ItemError("has no decodable video stream")
    s = streams[0]
    width, height = int(s["width"]), int(s["height"])
    rotation = int(float(s.get("tags", {}).get("rotate", 0) or 0))
    for side in s.get("side_data_list", []) or []:
        if "rotation" in side:
            rotation = int(float(side["rotation"]))
    if abs(rotation) % 180 == 90:
        width, height = height, width
    rate = _pick_rate(s.get("avg_frame_rate"), s.get("r_frame_rate"))
    frames = int(s["nb_frames"]) if str(s.get("nb_frames", "")).isdigit() else fallback.get("frames")
    return VideoStream(width, height, rate, frames)


def _pick_rate(avg: str | None, real: str | None) -> str:
    """The average rate (it keeps the duration), or the stream's nominal one when they agree within 1%."""
    def parse(text: str | None) -> Fraction | None:
        try:
            value = Fraction(text or "0")
        except (ValueError, ZeroDivisionError):
            return None
        return value if value > 0 else None

    a, r = parse(avg), parse(real)
    if a and r and abs(a - r) / r < 0.01:
        return str(r)
    chosen = a or r
    if chosen is None:
        raise ItemError("has no usable frame rate")
    return str(chosen)


def decoder_command(ffmpeg: str, src: Path, rate: str) -> list[str]:
    """Raw RGB frames on stdout, at a constant ``rate`` (the same the encoder is told)."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "file:" + str(src),
        "-map", "0:v:0", "-r", rate, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]


def encoder_command(
    ffmpeg: str, src: Path, dest: Path, width: int, height: int, rate: str, params: dict[str, Any],
    audio_codec: str | None,
) -> list[str]:
    """Raw RGB frames from stdin, encoded with the chosen codec; the audio is mapped from the original file."""
    argv = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate, "-i", "pipe:0",
        "-i", "file:" + str(src), "-map", "0:v:0", "-map", "1:a:0?",
    ]
    if width % 2 or height % 2:
        argv += ["-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2"]
    argv += ["-c:v", params["codec"], "-crf", str(params["crf"]), "-preset", params["preset"], "-pix_fmt", "yuv420p"]
    if params["codec"] == "libx265":
        argv += ["-x265-params", "log-level=error"]
        if dest.suffix in {".mp4", ".mov", ".m4v"}:
            argv += ["-tag:v", "hvc1"]
    argv += audio_args(dest.suffix, audio_codec)
    if dest.suffix in {".mp4", ".mov", ".m4v"}:
        argv += ["-movflags", "+faststart"]
    argv.append("file:" + str(dest))
    return argv


class _Pipe:
    """A child process whose stderr is drained into a tail, killed with its process group on :meth:`kill`."""

    def __init__(self, argv: list[str], *, role: str, stdin: Any, stdout: Any) -> None:
        self.role = role
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)
        self._drain = threading.Thread(target=self._read_stderr, name=f"upscale-{role}-stderr", daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.tail.append(line)

    def kill(self) -> None:
        kill_group(self.proc)
        self._drain.join(timeout=5)

    def wait(self, check: Callable[[], None]) -> int:
        while True:
            try:
                code = self.proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                check()
        self._drain.join(timeout=5)
        return code

    def describe(self) -> str:
        code = self.proc.poll()
        tail = "\n".join(list(self.tail)[-6:])
        return f"the {self.role} (ffmpeg) exited with {code}" + (f": {tail}" if tail else "")


def _read_frames(stream: Any, size: int, out: queue.Queue, stop: threading.Event) -> None:
    """Put each complete frame of ``stream`` on ``out``, then None; a partial last frame is dropped."""
    try:
        while not stop.is_set():
            frame = stream.read(size)  # a buffered read: the whole frame unless the stream ended
            if len(frame) < size:
                break
            _put(out, frame, stop)
    except (OSError, ValueError):
        pass
    finally:
        _put(out, None, stop)


def _write_frames(stream: Any, frames: queue.Queue, errors: list[BaseException], stop: threading.Event) -> None:
    """Write what arrives on ``frames`` to ``stream`` until None; close it so the encoder finishes."""
    try:
        while not stop.is_set():
            try:
                frame = frames.get(timeout=0.2)
            except queue.Empty:
                continue
            if frame is None:
                break
            stream.write(frame)
    except (OSError, ValueError) as exc:  # the encoder died: its stderr says why
        errors.append(exc)
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue


def stream_frames(
    ctx: ItemContext, src: Path, dest: Path, stream: VideoStream,
    upscale_all: Callable[[Iterator[bytes]], Iterable[bytes]],
    out_width: int, out_height: int, params: dict[str, Any], audio_codec: str | None, *, ffmpeg: str,
) -> int:
    """Decode ``src``, upscale the frames with ``upscale_all``, encode into ``dest``; return the frames written.

    ``upscale_all`` takes the decoded frames and yields the upscaled ones in the same order (several may be
    in flight in its engines). The decoder and encoder run beside it (a reader and a writer thread, a few
    frames of queue each), so the pipes cost little more than the upscaler itself. ``ctx.check()`` runs between frames
    (timeout, cancel); on any failure both ffmpeg processes are killed and their stderr tails kept.
    """
    frame_bytes = stream.width * stream.height * 3
    decoder = _Pipe(decoder_command(ffmpeg, src, stream.rate), role="decoder", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    encoder = None
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=4)
    to_encode: queue.Queue = queue.Queue(maxsize=4)
    write_errors: list[BaseException] = []
    threads: list[threading.Thread] = []
    count = 0
    upscale_seconds = 0.0
    try:
        encoder = _Pipe(
            encoder_command(ffmpeg, src, dest, out_width, out_height, stream.rate, params, audio_codec),
            role="encoder", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )
        threads = [
            threading.Thread(target=_read_frames, args=(decoder.proc.stdout, frame_bytes, decoded, stop), name="upscale-read", daemon=True),
            threading.Thread(target=_write_frames, args=(encoder.proc.stdin, to_encode, write_errors, stop), name="upscale-write",
                daemon=True),
        ]
        for t in threads:
            t.start()
        enc = encoder

        def check_encoder() -> None:
            ctx.check()
            if write_errors or enc.proc.poll() is not None:
                raise ItemError(f"the encoder stopped at frame {count + 1}: {enc.describe()}")

        waiting = time.monotonic()
        for out in upscale_all(_frames(decoded, ctx.check)):
            upscale_seconds += time.monotonic() - waiting
            _put_checked(to_encode, out, check_encoder)
            count += 1
            waiting = time.monotonic()
        _put_checked(to_encode, None, check_encoder)
        if decoder.wait(ctx.check) != 0:
            raise ItemError(f"decoding failed after {count} frame(s): {decoder.describe()}")
        if count == 0:
            raise ItemError("the decoder produced no frames; is the video damaged?")
        if encoder.wait(ctx.check) != 0 or write_errors:
            raise ItemError(f"encoding failed: {encoder.describe()}")
        ctx.timings["upscale_wait"] = round(upscale_seconds, 3)
        return count
    except BaseException:
        stop.set()
        decoder.kill()
        if encoder is not None:
            encoder.kill()
        raise
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        for pipe in (decoder, encoder):
            if pipe is not None:
                for line in pipe.tail:
                    ctx.stderr_tail.append(f"{pipe.role}: {line}")


def _frames(decoded: queue.Queue, check: Callable[[], None]) -> Iterator[bytes]:
    while True:
        check()
        try:
            frame = decoded.get(timeout=0.2)
        except queue.Empty:
            continue
        if frame is None:
            return
        yield frame


def _put_checked(q: queue.Queue, item: Any, check: Callable[[], None]) -> None:
    while True:
        check()
        try:
            q.put(item, timeout=0.2)
            return
        except queue.Full:
            continue
