"""BeatsJob: the beat grid of each audio file or clip (librosa), what an editor snaps cuts to."""

from __future__ import annotations

from typing import ClassVar

from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.beats import BEATS_PARAMS  # noqa: F401 - known by this name here too
from .base import CGPUJob


class BeatsJob(CGPUJob):
    """Track the beats of audio files or clips' audio (librosa); writes <stem>.beats.json: tempo in BPM, beats and
    downbeats in seconds."""

    job_type: ClassVar[str] = "beats"
    summary: ClassVar[str] = "track the beats of audio files or clips' audio with librosa (.beats.json: tempo, beats, downbeats)"
    processor: ClassVar[str] = "cgpu_kit.runtime.beats:BeatsProcessor"
    warm_imports: ClassVar[tuple[str, ...]] = ("librosa", "soundfile")
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
