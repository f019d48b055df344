"""BeatsJob: the beat grid of each audio file or clip (librosa), what an editor snaps cuts to."""

from __future__ import annotations

from typing import ClassVar

from ..params import Param, ParamSet
from ..requirements import Requirements
from .base import CGPUJob

BEATS_PARAMS = ParamSet([
    Param("start_bpm", 120.0, "the tempo the tracker expects first (it settles on the music's own); set it near the "
          "real tempo when the result is half or double", min=30.0, max=300.0),
    Param("tightness", 100.0, "how strictly beats keep an even spacing (higher: steadier grid, lower: follows "
          "a drifting tempo)", min=1.0, max=1000.0),
])


class BeatsJob(CGPUJob):
    """Track the beats of audio files or clips' audio (librosa); writes <stem>.beats.json: tempo in BPM, beats and
    downbeats in seconds."""

    job_type: ClassVar[str] = "beats"
    template_name: ClassVar[str] = "beats.ipynb"
    params_spec: ClassVar[ParamSet] = BEATS_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"audio"})
    default_timeout: ClassVar[float] = 600.0
    default_item_timeout: ClassVar[float] = 300.0
    #: a beat grid is a few kB
    output_size_factor: ClassVar[float] = 0.05

    def get_requirements(self) -> Requirements:
        return Requirements(pip=("librosa>=0.10", "soundfile"), apt=("ffmpeg",), modules=("librosa", "soundfile"),
                            programs=("ffmpeg",), extra="beats")

    @property
    def item_timeout(self) -> float:
        """The default, plus a second per minute of audio; librosa's first call also compiles its numba code."""
        if self._item_timeout:
            return float(self._item_timeout)
        longest = max(((i.probe.get("duration") or 60.0) for i in self.batch_items.values()), default=0.0)
        return max(self.default_item_timeout, 240.0 + longest)
