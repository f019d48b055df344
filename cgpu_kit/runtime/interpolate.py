"""Motion-compensated frame interpolation of one clip with ffmpeg's ``minterpolate``: no model weights, any runtime.

One ffmpeg process decodes, interpolates and encodes, frame by frame: nothing but the output touches the disk
(the same streaming the upscaler does with its pipes, here inside ffmpeg). Timestamps are kept, so the
duration is the input's; the audio is copied (or re-encoded when the container cannot hold it).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..media import find_ffmpeg
from ..params import Param, ParamSet
from .context import ItemContext, ItemError
from .processor import Processor
from .stabilize import PRESETS, audio_args, output_suffix
from .upscale_video import video_stream


def target_rate(source: Fraction, fps: float, factor: int) -> Fraction:
    """The output rate: ``fps`` when given (as an exact NTSC-style fraction when it is one), else ``factor`` times the source's."""
    if fps:
        return Fraction(fps).limit_denominator(1001)
    return source * factor


def interpolate_filter(rate: Fraction, params: dict[str, Any], *, odd: bool = False) -> str:
    """minterpolate after the last frame is repeated a few times: it makes frames only up to the last input
    frame's time, which would cut the clip short by one input frame; the output is cut at the duration."""
    mode = params["mode"]
    chain = ["tpad=stop_mode=clone:stop=4"]
    if mode == "mci":
        chain += [f"minterpolate=fps={rate}:mi_mode=mci:mc_mode={params['mc_mode']}:me_mode=bidir:vsbmc=1:"
                 f"scd={'fdiff' if params['scene_detection'] else 'none'}"]
    else:
        chain += [f"minterpolate=fps={rate}:mi_mode={mode}"]
    if odd:
        chain.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    chain.append("format=yuv420p")
    return ",".join(chain)


def command(ffmpeg: str, src: Path, dest: Path, rate: Fraction, params: dict[str, Any], probe: dict[str, Any],
            duration: float | None) -> list[str]:
    """``duration``: the video's (frames / rate when known), where the output is cut."""
    odd = bool((probe.get("width") or 0) % 2 or (probe.get("height") or 0) % 2)
    argv = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", "file:" + str(src),
            "-map", "0:v:0", "-map", "0:a:0?", "-vf", interpolate_filter(rate, params, odd=odd),
            *(["-t", f"{duration:.6f}"] if duration else []),
            "-c:v", "libx264", "-crf", str(params["crf"]), "-preset", params["preset"],
            *audio_args(dest.suffix, probe.get("audio_codec") if probe.get("has_audio") else None)]
    if dest.suffix in {".mp4", ".mov", ".m4v"}:
        argv += ["-movflags", "+faststart"]
    return argv + ["file:" + str(dest)]


INTERPOLATE_PARAMS = ParamSet([
    Param("fps", 0.0, "the output frame rate (e.g. 60 or 59.94); 0: the input's times factor", min=0.0, max=240.0),
    Param("factor", 2, "frames out per frame in, when fps is 0", choices=(2, 4)),
    Param("mode", "mci", "mci: motion-compensated (new frames show things half-way); blend: cross-fades; dup: repeats",
          choices=("mci", "blend", "dup")),
    Param("mc_mode", "aobmc", "motion compensation: aobmc (adaptive overlapped blocks, fewer seams) or obmc",
          choices=("aobmc", "obmc")),
    Param("scene_detection", True, "at a hard cut, repeat a frame instead of morphing one shot into the next"),
    Param("crf", 18, "x264 quality (0 lossless, 51 worst)", min=0, max=51),
    Param("preset", "medium", "x264 speed/size preset", choices=PRESETS),
])


class InterpolateProcessor(Processor):
    """minterpolate's motion search runs on one core per clip, so clips go side by side, one per core."""

    params_spec = INTERPOLATE_PARAMS

    max_workers = max(1, os.cpu_count() or 1)

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.ffmpeg = find_ffmpeg(filters=("minterpolate",))

    def process(self, ctx: ItemContext) -> list[Path]:
        if not ctx.item.probe.get("has_video", True):
            raise ItemError("has no video stream; frame interpolation needs a video")
        stream = video_stream(ctx, ctx.item.path, ctx.item.probe)
        source = Fraction(stream.rate)
        rate = target_rate(source, self.params["fps"], self.params["factor"])
        if rate <= source:
            raise ItemError(f"is already at {float(source):.3f} fps; ask for a higher rate than that (--fps N or --factor 2|4)")
        dest = ctx.output(output_suffix(ctx.item.name))
        duration = float(stream.frames / source) if stream.frames else ctx.item.probe.get("duration")
        ctx.run(command(self.ffmpeg, ctx.item.path, dest, rate, self.params, ctx.item.probe, duration), step="interpolate")
        ctx.metadata.update({"source_fps": str(source), "fps": str(rate), "mode": self.params["mode"],
                             "tool": "ffmpeg minterpolate"})
        return [dest]

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        from ..generated import make_moving_clip

        return [make_moving_clip(dest / "moving 12 fps.mp4")]
