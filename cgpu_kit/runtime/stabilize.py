"""Two-pass vidstab stabilization of one clip: vidstabdetect, then vidstabtransform, re-encoded with x264."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..media import vidstab_build
from ..params import Param, ParamSet
from .context import ItemCancelled, ItemContext, ItemError, ItemTimeout
from .processor import Processor
from .stabilize_preview import Tap, collect, taps

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

STABILIZE_PARAMS = ParamSet([
    Param("shakiness", 5, "how shaky the clip is (1 little, 10 very); vidstabdetect", min=1, max=10),
    Param("accuracy", 15, "accuracy of the motion detection (1 low, 15 high); vidstabdetect", min=1, max=15),
    Param("stepsize", 6, "step of the motion search in pixels (smaller is finer); vidstabdetect", min=1, max=32),
    Param("smoothing", 10, "frames before and after used to smooth the camera path; vidstabtransform", min=0, max=1000),
    Param("zoom", 0.0, "extra zoom in percent (negative zooms out); vidstabtransform", min=-100.0, max=100.0),
    Param("optzoom", 1, "automatic zoom: 0 none, 1 static to hide borders, 2 adaptive", choices=(0, 1, 2)),
    Param("crop", "keep", "what fills the borders: the previous frame's content (keep) or black", choices=("keep", "black")),
    Param("interpolation", "bilinear", "interpolation of the transform", choices=("no", "linear", "bilinear", "bicubic")),
    Param("tripod", False, "a still camera: stabilize against the first frame (both passes)"),
    Param("unsharp", True, "sharpen a little after the transform, as vidstab recommends"),
    Param("crf", 18, "x264 quality (0 lossless, 51 worst)", min=0, max=51),
    Param("preset", "medium", "x264 speed/size preset", choices=PRESETS),
])

KEEP_CONTAINERS = {".mp4", ".mov", ".mkv", ".m4v"}
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac"}


def detect_filter(p: dict[str, Any], result: str) -> str:
    opts = [f"shakiness={p['shakiness']}", f"accuracy={p['accuracy']}", f"stepsize={p['stepsize']}", f"result={result}"]
    if p["tripod"]:
        opts.append("tripod=1")
    return "vidstabdetect=" + ":".join(opts)


def transform_filter(p: dict[str, Any], result: str, *, odd: bool = False) -> str:
    opts = [f"input={result}", f"smoothing={p['smoothing']}", f"zoom={p['zoom']}", f"optzoom={p['optzoom']}",
            f"crop={p['crop']}", f"interpol={p['interpolation']}"]
    if p["tripod"]:
        opts.append("tripod=1")
    chain = ["vidstabtransform=" + ":".join(opts)]
    if p["unsharp"]:
        chain.append("unsharp=5:5:0.8:3:3:0.4")
    if odd:
        chain.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    chain.append("format=yuv420p")
    return ",".join(chain)


def output_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix in KEEP_CONTAINERS else ".mp4"


def audio_args(suffix: str, codec: str | None) -> list[str]:
    if codec is None:
        return ["-an"]
    if suffix == ".mkv" or codec in MP4_AUDIO:
        return ["-c:a", "copy"]
    return ["-c:a", "aac", "-b:a", "192k"]


def thread_options(cores: int | None) -> tuple[list[str], list[str]]:
    """ffmpeg's options keeping a pass to ``cores`` threads: (global ones, those of each input and output); none
    for None (ffmpeg's own choice: threads for every core in each decoder, filter graph and encoder). Two clips
    side by side on 2 cores went 10 % faster with a thread each than with ffmpeg's own choice (bench/RESULTS.md)."""
    if not cores:
        return [], []
    n = str(cores)
    return ["-filter_threads", n, "-filter_complex_threads", n], ["-threads", n]


def commands(ffmpeg: str, src: Path, dest: Path, params: dict[str, Any], probe: dict[str, Any],
    trf: str = "transforms.trf", taps: tuple[Tap, Tap] | None = None, cores: int | None = None) -> list[list[str]]:
    """The two ffmpeg command lines for one clip; ``trf`` is relative to the working folder they run in. With
    ``taps`` each pass also writes what the report shows (cgpu_kit/runtime/stabilize_preview.py); the clip's
    own output is the same either way. ``cores``: the threads each pass may use (:func:`thread_options`)."""
    odd = bool((probe.get("width") or 0) % 2 or (probe.get("height") or 0) % 2)
    graph, threads = thread_options(cores)
    common = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *graph, *threads]
    detect = common + ["-i", "file:" + str(src)]
    if taps:
        detect += ["-filter_complex", f"[0:v:0]split=2[d][t];[d]{detect_filter(params, trf)}[o];{taps[0].branches('t')}",
                   "-map", "[o]", *threads, "-f", "null", "-", *taps[0].outputs(threads)]
    else:
        detect += ["-map", "0:v:0", "-vf", detect_filter(params, trf), *threads, "-f", "null", "-"]
    transform = common + ["-i", "file:" + str(src)]
    if taps:
        transform += ["-filter_complex", f"[0:v:0]{transform_filter(params, trf, odd=odd)},split=2[v][t];{taps[1].branches('t')}",
                      "-map", "[v]"]
    else:
        transform += ["-map", "0:v:0", "-vf", transform_filter(params, trf, odd=odd)]
    transform += [
        "-map", "0:a:0?", *threads, "-c:v", "libx264", "-crf", str(params["crf"]), "-preset", params["preset"],
        *audio_args(dest.suffix, probe.get("audio_codec") if probe.get("has_audio") else None),
    ]
    if dest.suffix in {".mp4", ".mov", ".m4v"}:
        transform += ["-movflags", "+faststart"]
    transform.append("file:" + str(dest))
    if taps:
        transform += taps[1].outputs(threads)
    return [detect, transform]


class StabilizeProcessor(Processor):
    params_spec = STABILIZE_PARAMS
    max_workers = max(1, os.cpu_count() or 1)

    #: whether the passes also make the report's sheets and motion (cgpu_kit/runtime/stabilize_preview.py)
    preview = True

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.build = vidstab_build()
        self.ffmpeg = self.build.path

    def process(self, ctx: ItemContext) -> list[Path]:
        if not ctx.item.probe.get("has_video", True):
            raise ItemError("has no video stream; stabilization needs a video")
        dest = ctx.output(output_suffix(ctx.item.name))
        trf = ctx.scratch("transforms.trf")
        tapped = taps(ctx.item.probe, ctx.scratch) if self.preview else None
        tapped = self._pass(ctx, "detect", dest, trf, tapped)
        damage = [line for line in ctx.stderr_tail if "partial file" in line or "Error while decoding" in line]
        if any("partial file" in line for line in damage):
            raise ItemError(
                "the file is truncated (ffmpeg: partial file): only its beginning can be read, so its output would "
                "be cut short; re-export or re-download it"
            )
        if damage:
            ctx.metadata["warning"] = f"ffmpeg reported damaged frames: {damage[-1]}"
        if not trf.exists() or trf.stat().st_size == 0:
            raise ItemError("vidstabdetect wrote no transforms; is the clip empty?")
        tapped = self._pass(ctx, "transform", dest, trf, tapped)
        if tapped is not None:
            preview = collect(tapped)
            if preview is not None:
                ctx.metadata["preview"] = preview
        ctx.metadata["ffmpeg"] = self.build.to_dict()
        ctx.metadata["tool"] = self.build.describe()
        return [dest]

    def _pass(self, ctx: ItemContext, step: str, dest: Path, trf: Path, tapped: tuple[Tap, Tap] | None) -> tuple[Tap, Tap] | None:
        """Run the ``detect`` or ``transform`` pass with the report's taps; where it fails with them, again without
        (the report makes its own pictures then: they are never worth the clip). The taps still in use."""
        index = ("detect", "transform").index(step)
        argv = commands(self.ffmpeg, ctx.item.path, dest, self.params, ctx.item.probe, trf.name, tapped, ctx.cores)[index]
        try:
            ctx.run(argv, step=step, cwd=trf.parent)
            return tapped
        except (ItemTimeout, ItemCancelled):
            raise
        except ItemError as exc:
            if tapped is None:
                raise
            ctx.log.info("%s: the %s pass with the report's taps failed (%s); again without them", ctx.item.name, step,
                         str(exc)[-200:])
            for tap in tapped:
                tap.discard()
        ctx.run(commands(self.ffmpeg, ctx.item.path, dest, self.params, ctx.item.probe, trf.name, cores=ctx.cores)[index],
                step=step, cwd=trf.parent)
        return None

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        from ..samples import make_shaky_clip

        return [make_shaky_clip(dest / "shaky sample.mp4", frames=30, width=160, height=120, jitter=8)]

