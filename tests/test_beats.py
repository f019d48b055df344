"""Beat tracking judged against click tracks whose clicks are known: real librosa, real kernels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_report import rows

from cgpu_kit import api
from cgpu_kit.generated import click_times, make_click_track

SECONDS = 8.0


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One batch: 120 BPM (WAV, accented downbeats), 90 BPM (the audio of an MP4), 120 BPM with no accents."""
    src = tmp_path_factory.mktemp("clicks")
    inputs = {
        "120": make_click_track(src / "click 120.wav", 120, seconds=SECONDS),
        "90": make_click_track(src / "-click 90 $(x).mp4", 90, seconds=SECONDS, video=True),
        "flat": make_click_track(src / "flat 120.wav", 120, seconds=SECONDS, accent_every=0),
    }
    out = tmp_path_factory.mktemp("beats") / "out"
    result = api.beats(list(inputs.values()), out)
    assert result.success, result.summary()
    found = {k: json.loads((out / f"{p.stem}.beats.json").read_text()) for k, p in inputs.items()}
    page = rows(Path(result.report_path).read_text())
    for k, p in inputs.items():
        found[k]["report"] = page[p.name]
    return found


@pytest.mark.parametrize("track,bpm", [("120", 120), ("90", 90), ("flat", 120)])
def test_when_a_click_track_is_tracked_then_tempo_is_within_2_bpm_and_beats_within_50_ms_of_the_clicks(tracked, track, bpm):
    data = tracked[track]
    clicks = click_times(bpm, SECONDS)
    assert abs(data["tempo"] - bpm) <= 2, data["tempo"]
    beats = data["beats"]
    assert all(min(abs(b - c) for c in clicks) <= 0.05 for b in beats), (beats, clicks)
    inner = clicks[1:-1]  # a tracker may leave out the very first or last click
    assert all(min(abs(b - c) for b in beats) <= 0.05 for c in inner), (beats, clicks)


def test_when_every_fourth_click_is_louder_then_those_are_the_downbeats_and_without_accents_there_are_none(tracked):
    for track, bpm in (("120", 120), ("90", 90)):
        downbeats = tracked[track]["downbeats"]
        accented = click_times(bpm, SECONDS)[::4]
        assert downbeats and len(downbeats) >= len(accented) - 1, (track, downbeats)
        assert all(min(abs(d - a) for a in accented) <= 0.05 for d in downbeats), (track, downbeats, accented)
    assert tracked["flat"]["downbeats"] is None


def test_when_beats_are_tracked_then_the_report_draws_the_grid_over_the_waveform(tracked):
    data = tracked["120"]
    row = data["report"]
    svg = re.search(r'<svg class="cgpu-kit-beats".*?</svg>', row["body"], re.S).group(0)
    assert svg.count('stroke="#cf222e"') == len(data["downbeats"])  # downbeats in red
    assert svg.count('stroke="#0969da"') == len(data["beats"]) - len(data["downbeats"])
    assert svg.count('stroke="#8c959f"') > 300  # the waveform, a line per column
    assert row["figures"] == {"tempo": data["tempo"], "beats": len(data["beats"]), "downbeats": len(data["downbeats"])}
