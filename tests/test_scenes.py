"""Scene detection judged against a clip whose cuts are known: real PySceneDetect, real kernels, real zips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest
from test_report import rows

from cgpu_kit import ItemStatus, api
from cgpu_kit.generated import make_click_track, make_cut_clip

FPS, SHOT = 24, 18


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory) -> Path:
    return make_cut_clip(tmp_path_factory.mktemp("shots") / "four shots $(x) 'q'.mp4", shots=4, frames_per_shot=SHOT, fps=FPS)


def test_when_four_shots_are_joined_by_hard_cuts_then_four_scenes_are_found_within_a_frame_of_the_cuts(cut_clip, tmp_path):
    tone = make_click_track(tmp_path / "only audio.wav", 120, seconds=2)
    result = api.scenes([cut_clip, tone], tmp_path / "out", thumbnails=True)

    by_name = {Path(i.input_path).name: i for i in result.items}
    item = by_name[cut_clip.name]
    assert item.status is ItemStatus.DONE, result.summary()
    stem = cut_clip.stem
    data = json.loads((tmp_path / "out" / f"{stem}.scenes.json").read_text())
    scenes = data["scenes"]
    assert len(scenes) == 4, scenes
    cuts = [s["start"] for s in scenes[1:]]
    for found, true in zip(cuts, [k * SHOT / FPS for k in (1, 2, 3)]):
        assert abs(found - true) <= 1 / FPS + 1e-6, (cuts, true)
    assert scenes[0]["start"] == 0 and abs(scenes[-1]["end"] - 4 * SHOT / FPS) <= 1 / FPS
    assert all(a["end"] == b["start"] and a["end_frame"] == b["start_frame"] for a, b in zip(scenes, scenes[1:]))
    with (tmp_path / "out" / f"{stem}.scenes.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["start_frame"]) for r in table] == [s["start_frame"] for s in scenes]
    thumbs = sorted((tmp_path / "out").glob(f"{stem}.scene-*.jpg"))
    assert len(thumbs) == 4
    pictures = [cv2.imread(str(t)) for t in thumbs]
    assert all(p is not None and p.shape[:2] == (120, 160) for p in pictures)
    # one thumbnail per shot: no two alike
    assert min(float(abs(a.astype(int) - b.astype(int)).mean()) for a, b in zip(pictures, pictures[1:])) > 10
    assert item.metadata["scenes"] == 4 and "PySceneDetect" in item.metadata["tool"]

    page = rows(Path(result.report_path).read_text())[cut_clip.name]
    assert page["figures"]["scenes"] == 4 and page["figures"]["cuts"] == cuts
    assert 'class="cgpu-kit-scenes"' in page["body"] and len(page["images"]) == 4  # a thumbnail per scene on the time line

    bad = by_name["only audio.wav"]
    assert bad.status is ItemStatus.FAILED and "only audio.wav" in bad.error and "scenes needs video" in bad.error

    again = api.scenes([cut_clip], tmp_path / "out", thumbnails=True)
    assert [i.status for i in again.items] == [ItemStatus.SKIPPED], again.summary()
