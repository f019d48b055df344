"""InterpolateJob: a higher frame rate by motion-compensated interpolation (ffmpeg minterpolate), for slow motion
and smooth playback. RIFE would be sharper but needs model files that no package here ships."""

from __future__ import annotations

from typing import ClassVar

from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.interpolate import INTERPOLATE_PARAMS  # noqa: F401 - known by this name here too
from .base import CGPUJob


class InterpolateJob(CGPUJob):
    """Raise each clip's frame rate (--fps N or --factor 2|4) with motion interpolation; duration and audio kept."""

    job_type: ClassVar[str] = "interpolate"
    summary: ClassVar[str] = "raise clips' frame rate with motion interpolation (ffmpeg minterpolate), duration and audio kept"
    processor: ClassVar[str] = "cgpu_kit.runtime.interpolate:InterpolateProcessor"
    template_name: ClassVar[str] = "interpolate.ipynb"
    params_spec: ClassVar[ParamSet] = INTERPOLATE_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"video"})
    default_timeout: ClassVar[float] = 1800.0
    default_item_timeout: ClassVar[float] = 600.0
    #: more frames at the same quality: about the factor's worth of bytes, and a margin
    output_size_factor: ClassVar[float] = 5.0

    def get_requirements(self) -> Requirements:
        return Requirements(apt=("ffmpeg",), pip=("imageio-ffmpeg",))

    def check_media(self, path, info) -> None:
        from ..exceptions import InputError

        if info.is_image:
            raise InputError(f"{path}: is a still image; frame interpolation needs a video clip", path=str(path))
        super().check_media(path, info)

    def _frames_out(self, probe: dict) -> float:
        fps_in = probe.get("fps") or 25.0
        fps_out = self.params["fps"] or fps_in * self.params["factor"]
        return (probe.get("duration") or 60.0) * fps_out * max(((probe.get("width") or 1280) * (probe.get("height") or 720)) / 1e6, 0.1)

    def sized_timeout(self) -> float:
        """minterpolate is slow on a CPU: allow 0.5 s per output megapixel-frame, at least the default."""
        return max(self.default_timeout, 300.0 + 0.5 * sum(self._frames_out(i.probe) for i in self.batch_items.values()))

    @property
    def item_timeout(self) -> float:
        if self._item_timeout:
            return float(self._item_timeout)
        longest = max((self._frames_out(i.probe) for i in self.batch_items.values()), default=0.0)
        return max(self.default_item_timeout, 120.0 + 0.5 * longest)
