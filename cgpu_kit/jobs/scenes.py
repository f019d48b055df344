"""ScenesJob: the scene cuts of each clip with PySceneDetect, as a cut list an editor can use."""

from __future__ import annotations

from typing import ClassVar

from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.scenes import SCENES_PARAMS  # noqa: F401 - known by this name here too
from .base import CGPUJob


class ScenesJob(CGPUJob):
    """Find the scene cuts of each clip (PySceneDetect); writes <stem>.scenes.json and <stem>.scenes.csv."""

    job_type: ClassVar[str] = "scenes"
    summary: ClassVar[str] = 'find the scene cuts of video clips with PySceneDetect (.scenes.json, .scenes.csv, thumbnails)'
    processor: ClassVar[str] = "cgpu_kit.runtime.scenes:ScenesProcessor"
    warm_imports: ClassVar[tuple[str, ...]] = ("cv2", "scenedetect")
    template_name: ClassVar[str] = "scenes.ipynb"
    params_spec: ClassVar[ParamSet] = SCENES_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"video"})
    default_timeout: ClassVar[float] = 600.0
    default_item_timeout: ClassVar[float] = 600.0
    #: a cut list is text; thumbnails are a few tens of kB each
    output_size_factor: ClassVar[float] = 0.2

    def get_requirements(self) -> Requirements:
        # scenedetect asks for the GUI opencv-python (libGL): it goes in without its dependencies, which
        # are listed here with the headless OpenCV instead, so only one cv2 is importable
        return Requirements(
            pip=("opencv-python-headless", "numpy", "click>=8", "platformdirs", "tqdm"),
            pip_no_deps=("scenedetect>=0.6.4",),
            modules=("scenedetect", "cv2", "numpy"),
            extra="scenes",
        )

    def check_media(self, path, info) -> None:
        from ..exceptions import InputError

        if info.is_image:
            raise InputError(f"{path}: is a still image; scene detection needs a video clip", path=str(path))
        super().check_media(path, info)

    def sized_timeout(self) -> float:
        """Three times the footage's length, at least the default: decoding and comparing frames is light work."""
        seconds = sum((i.probe.get("duration") or 60.0) for i in self.batch_items.values())
        return max(self.default_timeout, 300.0 + 3.0 * seconds)

    @property
    def item_timeout(self) -> float:
        if self._item_timeout:
            return float(self._item_timeout)
        longest = max(((i.probe.get("duration") or 60.0) for i in self.batch_items.values()), default=0.0)
        return max(self.default_item_timeout, 120.0 + 3.0 * longest)
