"""The report's pictures and motion made by the two passes as they decode the clip (no decode afterwards), and
never at the clip's expense."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

import cgpu_kit
from cgpu_kit import media, report_sections
from cgpu_kit.media import probe
from cgpu_kit.motion import measure
from cgpu_kit.runtime import stabilize, stabilize_preview
from cgpu_kit.runtime.context import ItemContext, RuntimeItem

PARAMS = {**stabilize.STABILIZE_PARAMS.defaults(), "preset": "ultrafast"}


def run_item(clip: Path, work: Path, *, preview: bool = True, cores: int | None = None,
             ffmpeg: str | None = None) -> ItemContext:
    processor = stabilize.StabilizeProcessor(PARAMS)
    processor.preview = preview
    processor.ffmpeg = ffmpeg or processor.ffmpeg
    ctx = ItemContext(RuntimeItem("i0000", clip.name, clip, 0, probe(clip).to_dict()), work / "out" / "i0000", PARAMS,
                      timeout=300, cores=cores)
    assert [p.name for p in processor.process(ctx)] == ["output.mp4"]
    return ctx


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_passes_taps_leave_the_clip_as_it_was_and_measure_what_the_report_would(shaky_clip, tmp_path):
    clip = shaky_clip(jitter=12, frames=40)

    tapped, plain = run_item(clip, tmp_path / "tapped"), run_item(clip, tmp_path / "plain", preview=False)

    assert sha(tapped.output(".mp4")) == sha(plain.output(".mp4"))  # the clip's own output is untouched
    assert "preview" not in plain.metadata
    made = tapped.metadata["preview"]
    assert made["input"]["shifts"] == measure(clip).shifts  # the same frames, the same measure
    after = measure(plain.output(".mp4")).mean  # the output decoded, where the taps saw its frames before encoding
    assert sum(made["output"]["shifts"]) / len(made["output"]["shifts"]) == pytest.approx(after, abs=0.05)
    assert after < measure(clip).mean / 5
    for side in ("input", "output"):
        assert made[side]["sheet"] and len(made[side]["times"]) == len(made[side]["shifts"]) == 39
    assert not list((tmp_path / "tapped").rglob("preview_*"))  # the grey frames and sheets are gone


def test_when_items_share_the_cores_then_each_pass_keeps_to_its_share_and_still_makes_the_clip_and_the_preview(
        shaky_clip, tmp_path, monkeypatch):
    clip = shaky_clip(jitter=12, frames=40)
    runs: list[list[str]] = []
    real_run = ItemContext.run
    monkeypatch.setattr(ItemContext, "run", lambda self, argv, **kw: (runs.append([str(a) for a in argv]),
                                                                       real_run(self, argv, **kw))[1])
    builds = [b for b in (media.ffmpeg_build(path, source) for path, source in media._sourced_candidates()) if b.vidstab]

    for n, build in enumerate(builds):
        ctx = run_item(clip, tmp_path / f"build{n}", cores=1, ffmpeg=build.path)

        assert probe(ctx.output(".mp4")).frames == probe(clip).frames, build.describe()
        assert measure(ctx.output(".mp4")).mean < measure(clip).mean / 5
        assert ctx.metadata["preview"]["output"]["shifts"]
    assert len(runs) == 2 * len(builds) and len(builds) >= 1
    for argv in runs:  # the input, the filter graphs and every output (the clip, the grey frames, the sheet): one thread
        outputs = [a for a in argv[argv.index("-i") + 2:] if a.startswith("file:") or a == "-"]
        assert len(outputs) == 3 and argv.count("-threads") == 1 + len(outputs)
        assert {argv[i + 1] for i, a in enumerate(argv) if a.endswith("threads")} == {"1"}


@pytest.mark.parametrize("broken", ["input", "output"])
def test_when_a_pass_cannot_write_its_taps_then_it_runs_again_without_them_and_the_clip_is_made(
        shaky_clip, tmp_path, monkeypatch, broken):
    clip = shaky_clip(jitter=12, frames=40)
    made_taps = stabilize_preview.taps

    def failing(probe_dict, scratch):
        pair = list(made_taps(probe_dict, scratch))
        k = ("input", "output").index(broken)
        pair[k] = dataclasses.replace(pair[k], grey=Path("/nonexistent folder/x.grey"))
        return tuple(pair)

    monkeypatch.setattr(stabilize, "taps", failing)
    ctx = run_item(clip, tmp_path / "broken")

    assert "preview" not in ctx.metadata
    assert sha(ctx.output(".mp4")) == sha(run_item(clip, tmp_path / "plain", preview=False).output(".mp4"))


def test_a_local_batchs_report_shows_the_passes_motion_and_decodes_nothing_here(shaky_clip, tmp_path, monkeypatch):
    clips = [shaky_clip(jitter=12, frames=30, seed=n) for n in range(2)]

    def no_decode(*args, **kwargs):
        raise AssertionError("the report decoded a clip")

    monkeypatch.setattr(report_sections, "_sheet_and_motion", no_decode)
    monkeypatch.setattr(report_sections, "strip", no_decode)
    result = cgpu_kit.stabilize(clips, tmp_path / "out", preset="ultrafast")

    assert result.success, result.summary()
    page = Path(result.report_path).read_text()
    assert page.count("shift_before") == 2 and "camera motion not measured" not in page
    summary = json.loads((Path(result.report_path).parent / "result.json").read_text())
    for item in summary["items"]:  # the figures stay with the result; the pictures only in the report
        assert item["metadata"]["preview"]["input"]["shifts"] and "sheet" not in item["metadata"]["preview"]["input"]
