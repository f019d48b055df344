"""Real-ESRGAN upscaling of one image or one video on the runtime: the processor, and the image path.

The concerns live beside it: :mod:`.upscale_engine` (models, the device, one loaded engine),
:mod:`.upscale_streams` (several engines side by side, work put back in order), :mod:`.upscale_tiles` (the
memory bound for huge pictures) and :mod:`.upscale_video` (the ffmpeg pipes). Only functions import numpy,
cv2, PIL and the engine, so importing this module stays light.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..media import find_ffmpeg, probe
from ..params import Param, ParamSet
from .context import ItemContext, ItemError
from .processor import Processor
from .stabilize import PRESETS, audio_args, output_suffix
from .upscale_engine import (  # noqa: F401 - the names the job side and the tests know this module by
    CPU_MPIX_PER_S,
    CPU_TILE,
    DEFAULT_MODEL,
    MODEL_NAMES,
    MODELS,
    Device,
    Plan,
    Upscaler,
    _import_engine,
    choose_device,
    cpu_seconds,
    list_vulkan_devices,
    make_plan,
    quiet_progress,
    resize_to,
)
from .upscale_streams import StreamPool, choose_streams, window
from .upscale_tiles import output_bytes, tile_grid, upscale_frame, upscale_pixels
from .upscale_video import stream_frames, video_stream

#: tile sizes the engine accepts (0: automatic; otherwise at least 32)
TILES = (0, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

UPSCALE_PARAMS = ParamSet([
    Param("scale", 4, "upscaling factor", choices=(2, 3, 4)),
    Param("model", "auto", "Real-ESRGAN model; auto: realesrgan-x4plus for images, realesr-animevideov3 for videos "
          "(scales a model lacks: its x4, then a high-quality resize)", choices=("auto", *MODEL_NAMES)),
    Param("tile", 0, "tile size in pixels, smaller uses less memory; 0: automatic (GPU memory; 128 for x4plus on a CPU)",
          choices=TILES),
    Param("tta", False, "test-time augmentation: a little better, 8 times slower"),
    Param("streams", 0, "engines working side by side, each with frames in flight (images of a batch side by side "
          "too); 0: automatic (a GPU: up to 4, one per CPU core; the CPU: 1, which uses every core)", min=0, max=8),
    Param("gpu", "auto", "where to run: auto (a Vulkan GPU if the runtime has one, else the CPU; never a software "
          "Vulkan driver), cpu, or gpu (fail without one)", choices=("auto", "cpu", "gpu")),
    Param("format", "auto", "image output format; auto: the input's own (png for other kinds)", choices=("auto", "png", "jpg", "webp")),
    Param("quality", 95, "jpg/webp quality of image outputs (webp 100: lossless)", min=1, max=100),
    Param("codec", "libx264", "video encoder", choices=("libx264", "libx265")),
    Param("crf", 18, "video quality (0 lossless, 51 worst)", min=0, max=51),
    Param("preset", "medium", "video encoder speed/size preset", choices=PRESETS),
])


log = logging.getLogger("cgpu_kit.runtime.upscale")

#: output format -> file suffix
IMAGE_SUFFIX: dict[str, str] = {"png": ".png", "jpg": ".jpg", "webp": ".webp"}
#: share of the memory available when an item starts that one finished picture may take (it exists whole)
MEMORY_SHARE = 0.5

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


# -- the processor ----------------------------------------------------------------------------------------


class UpscaleProcessor(Processor):
    """Starts the engines of each model it needs once per batch; items share them, frame by frame."""

    params_spec = UPSCALE_PARAMS
    max_workers = 1  # one engine uses the whole machine; with several streams, items run side by side

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        _import_engine()
        self.device = choose_device(params["gpu"])
        where = "ncnn's CPU path" if self.device.is_cpu else f"Vulkan GPU {self.device.gpuid} ({self.device.name})"
        level = logging.WARNING if "software" in self.device.reason else logging.INFO
        log.log(level, "Real-ESRGAN runs on %s: %s", where, self.device.reason)
        self.streams, self.streams_reason = choose_streams(self.device, int(params.get("streams") or 0))
        self.max_workers = self.streams  # images side by side, one engine each
        log.info("%d stream(s): %s", self.streams, self.streams_reason)
        self._pools: dict[tuple[str, int], StreamPool] = {}
        self._lock = threading.Lock()
        self._ffmpeg: str | None = None

    def pool(self, plan: Plan) -> StreamPool:
        key = (plan.model, plan.native)
        with self._lock:
            if key not in self._pools:
                pool = StreamPool.start(plan, self.device, self.streams, tile=self.params["tile"], tta=self.params["tta"])
                first = pool.engines[0]
                log.info("loaded %s x%d on %d stream(s) in %.1fs (tile %s)", plan.model, plan.native, pool.streams,
                         first.load_seconds, first.tile or "auto")
                self._pools[key] = pool
            return self._pools[key]

    def process(self, ctx: ItemContext) -> list[Path]:
        info = ctx.item.probe or probe(ctx.item.path).to_dict()
        if not info.get("has_video"):
            raise ItemError("has no picture (audio only?); upscaling needs an image or a video")
        kind = "image" if info.get("is_image") else "video"
        plan = make_plan(self.params["model"], self.params["scale"], kind)
        pool = self.pool(plan)
        engine = pool.engines[0]
        ctx.metadata.update(
            kind=kind, model=plan.model, scale=plan.scale, native_scale=plan.native, device=self.device.name,
            device_reason=self.device.reason, tile=engine.tile or "auto", tta=self.params["tta"],
            streams=pool.streams, streams_reason=self.streams_reason,
        )
        if plan.resize:
            ctx.metadata["resize"] = plan.resize
        ctx.timings["load_model"] = engine.load_seconds
        # the in-process engine prints progress lines on fd 2; engine processes have theirs dropped by the pool
        with quiet_progress() if pool.in_process else contextlib.nullcontext():
            if kind == "image":
                return [self._image(ctx, plan, pool)]
            return [self._video(ctx, plan, pool, info)]

    def _image(self, ctx: ItemContext, plan: Plan, pool: StreamPool) -> Path:
        started = time.monotonic()
        pixels, notes = load_image(ctx.item.path)
        ctx.check()
        h, w, c = pixels.shape
        check_memory(w, h, c, plan.scale)
        fmt = image_format(self.params["format"], ctx.item.name)
        if fmt == "jpg" and c == 4:
            fmt = "png"
            ctx.metadata["format_note"] = "jpg cannot hold transparency: written as png"
        ctx.timings["decode"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        tiles = len(tile_grid(w, h))
        # the tiles of one picture go to every stream at once; their answers are placed as they come back
        out = upscale_pixels(pixels, plan.native, plan.scale, lambda calls: pool.map(
            lambda engine, call: engine.upscale_bytes(*call), calls, check=ctx.check))
        del pixels
        ctx.timings["upscale"] = round(time.monotonic() - started, 3)
        ctx.check()
        started = time.monotonic()
        dest = ctx.output(IMAGE_SUFFIX[fmt])
        save_image(out, dest, fmt, quality=self.params["quality"], mode=notes["mode"], icc_profile=notes["icc_profile"])
        ctx.timings["encode"] = round(time.monotonic() - started, 3)
        ctx.metadata.update(
            input_size=[w, h], output_size=[w * plan.scale, h * plan.scale], format=fmt, tiles=tiles,
            **{k: v for k, v in notes.items() if k in ("frames_ignored", "bit_depth")},
        )
        return dest

    def _video(self, ctx: ItemContext, plan: Plan, pool: StreamPool, info: dict[str, Any]) -> Path:
        if self._ffmpeg is None:
            self._ffmpeg = find_ffmpeg()
        src = ctx.item.path
        stream = video_stream(ctx, src, info)
        ow, oh = stream.width * plan.scale, stream.height * plan.scale
        check_memory(stream.width, stream.height, 3, plan.scale)
        dest = ctx.output(output_suffix(ctx.item.name))
        audio = info.get("audio_codec") if info.get("has_audio") else None
        w, h = stream.width, stream.height

        def one(engine: Any, frame: bytes) -> bytes:
            return upscale_frame(frame, w, h, plan.native, plan.scale, engine.upscale_bytes)

        in_flight = window(pool.streams, output_bytes(w, h, 3, plan.native))

        def upscale_all(frames: Any) -> Any:
            return pool.map(one, frames, check=ctx.check, in_flight=in_flight)

        log.info("%s: %dx%d -> %dx%d, %s frames at %s fps, %d stream(s)", ctx.item.item_id, w, h, ow, oh,
                 stream.frames or "?", stream.rate, pool.streams)
        started = time.monotonic()
        try:
            frames = stream_frames(ctx, src, dest, stream, upscale_all, ow, oh, self.params, audio, ffmpeg=self._ffmpeg)
        except BaseException:
            dest.unlink(missing_ok=True)  # a partial video is no output
            raise
        seconds = time.monotonic() - started
        ctx.timings["pipeline"] = round(seconds, 3)
        ctx.metadata.update(
            input_size=[w, h], output_size=[ow - ow % 2, oh - oh % 2], frames=frames, fps=stream.rate,
            frames_per_second=round(frames / seconds, 3) if seconds else None, frames_in_flight=in_flight,
            audio=("copied" if audio_args(dest.suffix, audio) == ["-c:a", "copy"] else "re-encoded to aac") if audio else None,
            encoder={"codec": self.params["codec"], "crf": self.params["crf"], "preset": self.params["preset"]},
        )
        if ow % 2 or oh % 2:
            ctx.metadata["crop_note"] = f"{ow}x{oh} cropped to even {ow - ow % 2}x{oh - oh % 2} for yuv420p"
        return dest

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        return [make_sample_image(dest / "sample picture.png"), make_sample_video(dest / "sample clip.mp4")]


def check_memory(width: int, height: int, channels: int, scale: int, *, available: int | None = None) -> None:
    """Refuse a picture whose finished output alone would take more than :data:`MEMORY_SHARE` of free memory.

    Everything else is bounded by tiles; the output itself must exist whole to be encoded.
    """
    need = output_bytes(width, height, channels, scale)
    free = _available_memory() if available is None else available
    if free and need > MEMORY_SHARE * free:
        raise ItemError(
            f"{width}x{height} upscaled x{scale} is {width * scale}x{height * scale}, {need / 1e9:.1f} GB of pixels, "
            f"more than half of the {free / 1e9:.1f} GB of memory available; use a smaller scale (--scale 2), "
            "downscale or crop the input, or run on a machine with more memory")


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where it cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


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
