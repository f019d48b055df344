"""The beat grid of one file's audio with librosa: tempo, beat times, and downbeats when they stand out.

ffmpeg decodes any audio or video to a mono WAV first (librosa's own readers miss many containers). librosa's
dynamic-programming tracker places the beats; each is then moved to the strongest onset within a quarter
beat of it (the tracker keeps a regular grid and can land a frame or two off a transient, or past the last
one), beats with no onset under them at the edges are dropped, and the tempo is the slope of a line through
the beat times, so it is not rounded to the tracker's tempo bins. Downbeats: with at least two bars, the
beats of a 4/4 bar position whose loudness stands clearly above the others'; otherwise ``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..media import find_ffmpeg
from ..params import Param, ParamSet
from .context import ItemContext, ItemError
from .processor import Processor

RATE = 22050
HOP = 256
#: how much louder than the next loudest bar position the downbeats must be to be named
DOWNBEAT_MARGIN = 1.3


def _fit_tempo(times: list[float]) -> float | None:
    """Beats per minute from a least-squares line through beat index -> time."""
    n = len(times)
    if n < 2:
        return None
    mean_i, mean_t = (n - 1) / 2, sum(times) / n
    num = sum((i - mean_i) * (t - mean_t) for i, t in enumerate(times))
    den = sum((i - mean_i) ** 2 for i in range(n))
    period = num / den
    return 60.0 / period if period > 0 else None


def downbeats(beat_times: list[float], loudness: list[float], beats_per_bar: int = 4) -> tuple[list[float] | None, int | None]:
    """The beats at the bar position that is clearly the loudest, with that position; ``(None, None)`` when
    none stands out by :data:`DOWNBEAT_MARGIN` or there are fewer than two bars."""
    if len(beat_times) < 2 * beats_per_bar:
        return None, None
    means = []
    for phase in range(beats_per_bar):
        values = loudness[phase::beats_per_bar]
        means.append(sum(values) / len(values))
    order = sorted(range(beats_per_bar), key=lambda k: means[k], reverse=True)
    if means[order[1]] <= 0 or means[order[0]] / means[order[1]] >= DOWNBEAT_MARGIN:
        return [round(t, 4) for t in beat_times[order[0]::beats_per_bar]], order[0]
    return None, None


def track(y, sr: int, *, start_bpm: float, tightness: float) -> dict[str, Any]:
    """Beats of the samples ``y``: ``{tempo, beats, downbeats, ...}`` (see the module's docstring)."""
    import librosa
    import numpy as np

    env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    tempo, frames = librosa.beat.beat_track(onset_envelope=env, sr=sr, hop_length=HOP, start_bpm=start_bpm,
                                            tightness=tightness, trim=False)
    tracker_tempo = float(np.atleast_1d(tempo)[0])
    if len(frames) == 0 or tracker_tempo <= 0:
        return {"tempo": None, "tracker_tempo": None, "beats": [], "downbeats": None}
    window = max(1, int(60.0 / tracker_tempo / 4 * sr / HOP))
    snapped = []
    for f in frames:
        lo, hi = max(0, int(f) - window), min(len(env), int(f) + window + 1)
        snapped.append(lo + int(np.argmax(env[lo:hi])))
    strength = env[snapped]
    typical = float(np.median(strength)) if len(strength) else 0.0
    keep = [i for i, s in enumerate(strength) if s >= 0.1 * typical]
    if keep:  # only the edges are trimmed: a quiet beat inside the music is still a beat
        snapped = snapped[keep[0]:keep[-1] + 1]
    snapped = sorted(set(snapped))
    times = [float(t) for t in librosa.frames_to_time(np.array(snapped), sr=sr, hop_length=HOP)]
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=HOP)[0]
    span = max(1, int(0.05 * sr / HOP))
    loudness = [float(rms[f:f + span].max()) if f < len(rms) else 0.0 for f in snapped]
    down, phase = downbeats(times, loudness)
    fitted = _fit_tempo(times)
    return {
        "tempo": round(fitted if fitted else tracker_tempo, 3), "tracker_tempo": round(tracker_tempo, 3),
        "beats": [round(t, 4) for t in times], "downbeats": down, "beats_per_bar": 4 if down else None,
        "first_downbeat_index": phase,
    }


BEATS_PARAMS = ParamSet([
    Param("start_bpm", 120.0, "the tempo the tracker expects first (it settles on the music's own); set it near the "
          "real tempo when the result is half or double", min=30.0, max=300.0),
    Param("tightness", 100.0, "how strictly beats keep an even spacing (higher: steadier grid, lower: follows "
          "a drifting tempo)", min=1.0, max=1000.0),
])


class BeatsProcessor(Processor):
    """Decodes with ffmpeg, then tracks in-process; librosa's numba code uses one core, so files go side by side."""

    params_spec = BEATS_PARAMS

    max_workers = 2

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        try:
            import librosa  # noqa: F401
            import soundfile  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"{exc}; beat tracking needs librosa: pip install 'cgpu-kit[beats]'") from exc
        self.ffmpeg = find_ffmpeg()

    def process(self, ctx: ItemContext) -> list[Path]:
        import json

        import librosa
        import soundfile

        if not ctx.item.probe.get("has_audio", True):
            raise ItemError("has no audio stream; beat tracking needs audio")
        wav = ctx.scratch("audio.wav")
        ctx.run([self.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", "file:" + str(ctx.item.path),
                 "-map", "0:a:0", "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_s16le", "file:" + str(wav)], step="decode")
        y, sr = soundfile.read(str(wav), dtype="float32")
        wav.unlink(missing_ok=True)
        if len(y) < sr:
            raise ItemError(f"its audio is {len(y) / sr:.2f} s long; beat tracking needs at least a second")
        ctx.check()
        data = track(y, sr, start_bpm=self.params["start_bpm"], tightness=self.params["tightness"])
        data["duration"] = round(len(y) / sr, 3)
        out = ctx.output(".beats.json")
        out.write_text(json.dumps(data, indent=1), encoding="utf-8")
        ctx.metadata.update({"tempo": data["tempo"], "beats": len(data["beats"]),
                             "downbeats": data["downbeats"] is not None, "tool": f"librosa {librosa.__version__}"})
        return [out]

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        from ..generated import make_click_track

        return [make_click_track(dest / "click 120 bpm.wav", 120)]
