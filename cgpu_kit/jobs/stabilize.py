"""StabilizeJob: two-pass vidstab stabilization of a batch of clips."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.stabilize import PRESETS, STABILIZE_PARAMS  # noqa: F401 - known by these names here too
from .base import CGPUJob


class StabilizeJob(CGPUJob):
    """Stabilize each clip with vidstabdetect then vidstabtransform; audio is kept when present."""

    job_type: ClassVar[str] = "stabilize"
    summary: ClassVar[str] = "stabilize video clips with two-pass vidstab (vidstabdetect, then vidstabtransform)"
    template_name: ClassVar[str] = "stabilize.ipynb"
    processor: ClassVar[str] = "cgpu_kit.runtime.stabilize:StabilizeProcessor"
    params_spec: ClassVar[ParamSet] = STABILIZE_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"video"})
    default_timeout: ClassVar[float] = 600.0
    default_item_timeout: ClassVar[float] = 600.0

    def get_requirements(self) -> Requirements:
        return Requirements(apt=("ffmpeg",), pip=("imageio-ffmpeg",))

    def estimated_output_bytes(self, item) -> int:
        """Re-encoding at crf 18 took up to 5.5x the input with the fast x264 presets and 1.8x with medium on
        the sample clips (docs/reliability.md); x1.3 margin, and twice the size for each 6 crf below 18."""
        fast = self.params["preset"] in ("ultrafast", "superfast", "veryfast")
        factor = (7.0 if fast else 2.5) * 2 ** (max(0, 18 - self.params["crf"]) / 6)
        return int(item.size * factor)

    def check_media(self, path: Path, info) -> None:
        from ..exceptions import InputError

        if info.is_image:
            raise InputError(f"{path}: is a still image; stabilization needs a video clip", path=str(path))
        super().check_media(path, info)

    def _work_seconds(self) -> float:
        """A rough CPU cost of the batch: seconds of video weighted by megapixels."""
        total = 0.0
        for item in self.batch_items.values():
            p = item.probe
            mpix = ((p.get("width") or 1280) * (p.get("height") or 720)) / 1e6
            total += (p.get("duration") or 60.0) * max(mpix, 0.1)
        return total

    def sized_timeout(self) -> float:
        # detect + transform at 720p ran at about 1 s per second of video on 2 cores; allow 10x that
        return max(self.default_timeout, 300.0 + 10.0 * self._work_seconds())

    @property
    def item_timeout(self) -> float:
        if self._item_timeout:
            return float(self._item_timeout)
        longest = max((
            (i.probe.get("duration") or 60.0) * max(((i.probe.get("width") or 1280) * (i.probe.get("height") or 720)) / 1e6, 0.1)
            for i in self.batch_items.values()), default=0.0)
        return max(self.default_item_timeout, 120.0 + 10.0 * longest)
