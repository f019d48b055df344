"""InterpolateJob: a higher frame rate by motion-compensated interpolation (ffmpeg minterpolate), for slow motion
and smooth playback. RIFE would be sharper but needs model files that no package here ships."""

from __future__ import annotations

from typing import ClassVar

from ..params import Param, ParamSet
from ..requirements import Requirements
from .base import CGPUJob
from .stabilize import PRESETS

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


class InterpolateJob(CGPUJob):
    """Raise each clip's frame rate (--fps N or --factor 2|4) with motion interpolation; duration and audio kept."""

    job_type: ClassVar[str] = "interpolate"
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
