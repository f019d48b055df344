"""EncodeJob: delivery encodes (H.264, HEVC, AV1) of a batch of clips, on NVENC where the runtime has it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import InputError, ParameterError
from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.encode import ENCODE_PARAMS  # noqa: F401 - known by this name here too
from ..runtime.encoders import MAX_QUALITY
from .base import CGPUJob


class EncodeJob(CGPUJob):
    """Encode each clip for delivery (--codec h264|hevc|av1, --quality, --preset, --max-height); writes <stem>.mp4 and
    records the encoder used (NVENC or libx264/libx265/libsvtav1) in each item's metadata."""

    job_type: ClassVar[str] = "encode"
    summary: ClassVar[str] = 'delivery encodes: H.264, HEVC or AV1, on NVENC when the runtime has it, else x264/x265/SVT-AV1'
    processor: ClassVar[str] = "cgpu_kit.runtime.encode:EncodeProcessor"
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
