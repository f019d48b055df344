"""ScenesJob: the scene cuts of each clip with PySceneDetect, as a cut list an editor can use."""

from __future__ import annotations

from typing import ClassVar

from ..params import Param, ParamSet
from ..requirements import Requirements
from .base import CGPUJob

SCENES_PARAMS = ParamSet([
    Param("detector", "content", "content: a cut where a frame differs from the one before by more than threshold; "
          "adaptive: where it differs much more than its neighbours do (fewer false cuts on fast motion)",
          choices=("content", "adaptive")),
    Param("threshold", 27.0, "content detector: the HSV difference (0-255) that makes a cut; lower finds more cuts "
          "(adaptive: the least difference a cut must have, scaled)", min=1.0, max=255.0),
    Param("adaptive_threshold", 3.0, "adaptive detector: how many times its neighbours' difference a cut must be",
          min=0.5, max=50.0),
    Param("min_scene_len", 15, "the shortest scene in frames (no cut closer than this to the last one)", min=1, max=100000),
    Param("thumbnails", False, "also write one JPEG per scene (its middle frame): <stem>.scene-001.jpg ..."),
])


class ScenesJob(CGPUJob):
    """Find the scene cuts of each clip (PySceneDetect); writes <stem>.scenes.json and <stem>.scenes.csv."""

    job_type: ClassVar[str] = "scenes"
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
