"""A delivery encode of one clip: the codec asked for, at a quality and preset, no taller than asked, in MP4.

The encoder is chosen once per batch by :mod:`.encoders` (NVENC when it really works here, else software)
and named in each item's metadata, with the ffmpeg that ran it and why it was chosen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import encoders
from .context import ItemContext, ItemError
from .processor import Processor
from .stabilize import audio_args


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


class EncodeProcessor(Processor):
    """x264, x265 and SVT-AV1 each use every core, and one NVENC session keeps its encoder busy: one clip at a time."""

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
