"""Frame interpolation judged on a moving pattern: twice the frames, same duration, audio kept, and new frames
that sit between their neighbours (not copies of one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from media_checks import gray_frames, stream_info

from cgpu_kit import api
from cgpu_kit.generated import make_moving_clip


def new_frames_between_neighbours(frames: np.ndarray) -> list[bool]:
    """For each odd frame: is it closer (mean squared) to its neighbours' average than to either neighbour?"""
    verdicts = []
    for k in range(1, len(frames) - 1, 2):
        a, m, b = frames[k - 1], frames[k], frames[k + 1]
        to_mean = np.mean((m - (a + b) / 2) ** 2)
        verdicts.append(bool(to_mean < np.mean((m - a) ** 2) and to_mean < np.mean((m - b) ** 2)))
    return verdicts


def test_when_12_fps_is_interpolated_to_24_then_frames_double_duration_and_audio_stay_and_new_frames_lie_between(tmp_path):
    clip = make_moving_clip(tmp_path / "moving 'pattern'.mp4", fps=12, seconds=2.0)
    result = api.interpolate([clip], tmp_path / "out", factor=2, preset="veryfast")

    assert result.success, result.summary()
    out = Path(result.items[0].output_path)
    src, dst = stream_info(clip), stream_info(out)
    assert dst["fps"] == 24 and abs(dst["frames"] - 2 * src["frames"]) <= 1, (src, dst)
    assert abs(dst["duration"] - src["duration"]) <= 1 / 24 + 1e-3, (src["duration"], dst["duration"])
    assert dst["has_audio"]
    verdicts = new_frames_between_neighbours(gray_frames(out))
    assert len(verdicts) >= 20 and all(verdicts), verdicts
    assert result.items[0].metadata["fps"] == "24"


def test_the_between_check_fails_on_repeated_frames(tmp_path):
    """The check above can fail: a plain 24 fps conversion repeats each frame and is caught."""
    clip = make_moving_clip(tmp_path / "moving.mp4", fps=12, seconds=1.0, audio=False)
    repeated = tmp_path / "repeated.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(clip), "-vf", "fps=24", "-c:v", "libx264", "-crf", "12",
                    str(repeated)], check=True, stdin=subprocess.DEVNULL)
    assert not any(new_frames_between_neighbours(gray_frames(repeated)))
