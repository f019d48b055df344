"""EncodeJob: delivery encodes (H.264, HEVC, AV1) of a batch of clips, on NVENC where the runtime has it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import InputError, ParameterError
from ..params import Param, ParamSet
from ..requirements import Requirements
from ..runtime.encoders import DEFAULT_QUALITY, MAX_QUALITY
from .base import CGPUJob
from .stabilize import PRESETS

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


class EncodeJob(CGPUJob):
    """Encode each clip for delivery (--codec h264|hevc|av1, --quality, --preset, --max-height); writes <stem>.mp4 and
    records the encoder used (NVENC or libx264/libx265/libsvtav1) in each item's metadata."""

    job_type: ClassVar[str] = "encode"
    template_name: ClassVar[str] = "encode.ipynb"
    params_spec: ClassVar[ParamSet] = ENCODE_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"video"})
    default_timeout: ClassVar[float] = 1800.0
    default_item_timeout: ClassVar[float] = 600.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        codec, quality = self.params["codec"], self.params["quality"]
        if quality > MAX_QUALITY[codec]:
            raise ParameterError(f"parameter 'quality' must be at most {MAX_QUALITY[codec]} for {codec}, got {quality}",
                                 name="quality")

    def get_requirements(self) -> Requirements:
        return Requirements(apt=("ffmpeg",), pip=("imageio-ffmpeg",))

    def check_media(self, path: Path, info) -> None:
        if info.is_image:
            raise InputError(f"{path}: is a still image; a delivery encode needs a video clip", path=str(path))
        super().check_media(path, info)

    def estimated_output_bytes(self, item) -> int:
        """An encode at a low CRF of a well-compressed input can be larger than it; three times is the margin."""
        return int(item.size * 3)

    def _work(self, probe: dict) -> float:
        return (probe.get("duration") or 60.0) * max(((probe.get("width") or 1280) * (probe.get("height") or 720)) / 1e6, 0.1)

    def sized_timeout(self) -> float:
        """Software HEVC and AV1 at medium presets can run slower than real time at 1080p on a few cores."""
        factor = 20.0 if self.params["codec"] in ("hevc", "av1") else 5.0
        return max(self.default_timeout, 300.0 + factor * sum(self._work(i.probe) for i in self.batch_items.values()))

    @property
    def item_timeout(self) -> float:
        if self._item_timeout:
            return float(self._item_timeout)
        factor = 20.0 if self.params["codec"] in ("hevc", "av1") else 5.0
        longest = max((self._work(i.probe) for i in self.batch_items.values()), default=0.0)
        return max(self.default_item_timeout, 120.0 + factor * longest)
