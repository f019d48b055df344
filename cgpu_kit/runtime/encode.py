"""A delivery encode of one clip: the codec asked for, at a quality and preset, no taller than asked, in MP4.

The encoder is chosen once per batch by :mod:`.encoders` (NVENC when it really works here, else software)
and named in each item's metadata, with the ffmpeg that ran it and why it was chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..params import Param, ParamSet
from . import encoders
from .context import ItemContext, ItemError
from .encoders import DEFAULT_QUALITY
from .processor import Processor
from .stabilize import PRESETS, audio_args


def scale_filter(max_height: int, width: int | None, height: int | None) -> str | None:
    """No taller than ``max_height`` (0: any), the width following the aspect; never larger; even sizes."""
    if max_height:
        return f"scale=-2:'trunc(min(ih,{max_height})/2)*2'"
    if (width or 0) % 2 or (height or 0) % 2:
        return "scale=trunc(iw/2)*2:trunc(ih/2)*2"
    return None


def command(enc: encoders.Encoder, src: Path, dest: Path, params: dict[str, Any], probe: dict[str, Any], quality: int) -> list[str]:
    argv = [enc.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", "file:" + str(src),
            "-map", "0:v:0", "-map", "0:a:0?"]
    scale = scale_filter(params["max_height"], probe.get("width"), probe.get("height"))
    argv += ["-vf", ",".join(filter(None, [scale, "format=yuv420p"]))]
    argv += encoders.video_args(enc, quality, params["preset"])
    if enc.codec == "hevc":
        argv += ["-tag:v", "hvc1"]  # what Apple's players want to see in an MP4
    if not probe.get("has_audio"):
        argv += ["-an"]
    elif params["audio_bitrate"]:
        argv += ["-c:a", "aac", "-b:a", f"{params['audio_bitrate']}k"]
    else:
        argv += audio_args(".mp4", probe.get("audio_codec"))
    return argv + ["-movflags", "+faststart", "file:" + str(dest)]


ENCODE_PARAMS = ParamSet([
    Param("codec", "h264", "the codec of the delivery file (MP4)", choices=("h264", "hevc", "av1")),
    Param("quality", 0, "CRF (software) or CQ (NVENC): lower is better and larger; 0: the codec's default "
          f"(h264 {DEFAULT_QUALITY['h264']}, hevc {DEFAULT_QUALITY['hevc']}, av1 {DEFAULT_QUALITY['av1']}); "
          "at most 51 (av1 63)", min=0, max=63),
    Param("preset", "medium", "speed/size preset, x264's names (mapped to SVT-AV1's 2-12 and NVENC's p1-p7)",
          choices=PRESETS),
    Param("max_height", 0, "scale down to at most this height (the width follows); 0: keep the size; never scales up",
          min=0, max=8640),
    Param("audio_bitrate", 0, "AAC audio at this many kbit/s; 0: keep the audio as it is when MP4 can hold it",
          min=0, max=1024),
    Param("hardware", "auto", "auto: NVENC when the runtime's ffmpeg and GPU can use it (tested with one frame), "
          "else software; nvenc: fail without it; software: never NVENC", choices=("auto", "nvenc", "software")),
])


class EncodeProcessor(Processor):
    """x264, x265 and SVT-AV1 each use every core, and one NVENC session keeps its encoder busy: one clip at a time."""

    params_spec = ENCODE_PARAMS

    max_workers = 1

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.encoder = encoders.choose(params["codec"], params["hardware"])
        self.quality = params["quality"] or encoders.DEFAULT_QUALITY[params["codec"]]

    def process(self, ctx: ItemContext) -> list[Path]:
        if not ctx.item.probe.get("has_video", True):
            raise ItemError("has no video stream; a delivery encode needs a video")
        dest = ctx.output(".mp4")
        ctx.run(command(self.encoder, ctx.item.path, dest, self.params, ctx.item.probe, self.quality), step="encode")
        ctx.metadata.update({
            "encoder": self.encoder.name, "hardware": self.encoder.hardware, "codec": self.params["codec"],
            "quality": self.quality, "preset": encoders.preset_used(self.encoder, self.params["preset"]),
            "ffmpeg": self.encoder.ffmpeg, "encoder_choice": self.encoder.why,
            "tool": f"{self.encoder.name} ({'NVENC' if self.encoder.hardware else 'software'})",
        })
        return [dest]

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        from ..generated import make_test_card

        return [make_test_card(dest / "test card.mp4")]
