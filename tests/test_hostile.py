"""Hostile and broken inputs in one batch: each gets a clear per-item outcome and the rest completes.

The table of what each input got is printed at the end of the test run and kept in docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import cgpu_kit
from cgpu_kit import ItemStatus, JobStatus
from conftest import copy_as
from media_checks import stream_info

HOSTILE_TABLE: list[tuple[str, str, str]] = []


def test_when_a_batch_is_full_of_hostile_inputs_then_each_gets_a_clear_outcome_and_the_rest_completes(shaky_clip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = shaky_clip(width=160, height=120, frames=20, jitter=8)
    mute = shaky_clip(width=160, height=120, frames=20, jitter=8, audio=False)
    big = shaky_clip(width=320, height=240, frames=10, jitter=8)
    d = tmp_path / "in"
    cases: dict[str, Path] = {}
    cases["missing file"] = d / "missing.mp4"
    (d / "a folder.mp4").mkdir(parents=True)
    cases["folder given as a file"] = d / "a folder.mp4"
    cases["zero-byte file"] = d / "empty.mp4"
    cases["zero-byte file"].write_bytes(b"")
    cases["non-media file"] = d / "notes.mp4"
    cases["non-media file"].write_text("just text")
    faststart = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(small), "-c", "copy", "-movflags", "+faststart", str(faststart)], check=True)
    cases["truncated video (index at the end)"] = d / "truncated_a.mp4"
    cases["truncated video (index at the end)"].write_bytes(small.read_bytes()[: small.stat().st_size * 6 // 10])
    cases["truncated video (index first)"] = d / "truncated_b.mp4"
    cases["truncated video (index first)"].write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 6 // 10])
    cases["audio-only file"] = d / "voice.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(cases["audio-only file"])], check=True)
    cases["video without audio"] = copy_as(mute, d / "mute.mp4")
    cases["dimensions beyond the limit (max_pixels)"] = copy_as(big, d / "huge.mp4")
    cases["two inputs with the same name (1)"] = copy_as(small, d / "one" / "clip.mp4")
    cases["two inputs with the same name (2)"] = copy_as(mute, d / "two" / "clip.mp4")
    cases["duplicate input"] = cases["two inputs with the same name (1)"]
    for label, name in [("name with spaces and quotes", "it's a \"clip\".mp4"), ("name with $() and backticks", "$(touch pwned) `id`.mp4"),
                        ("name with a newline", "new\nline.mp4"), ("unicode name", "видео ☃.mp4"), ("leading dash", "-rf.mp4")]:
        cases[label] = copy_as(small, d / name)

    result = cgpu_kit.stabilize(list(cases.values()), tmp_path / "out", preset="ultrafast", max_pixels=50_000)

    assert result.status is JobStatus.PARTIAL
    got = dict(zip(cases, result.items))
    for label, item in got.items():
        outcome = item.status.value + (f": {item.error}" if item.error else f" -> {', '.join(Path(o).name for o in item.outputs)!r}")
        HOSTILE_TABLE.append((label, repr(Path(item.input_path).name), outcome.replace(str(tmp_path), "…")))

    def failed_with(label: str, *fragments: str) -> None:
        item = got[label]
        assert item.status is ItemStatus.FAILED, (label, item)
        assert str(cases[label]) in item.error, (label, item.error)
        for fragment in fragments:
            assert fragment in item.error, (label, item.error)

    failed_with("missing file", "no such file")
    failed_with("folder given as a file", "is a folder")
    failed_with("zero-byte file", "is empty (0 bytes)")
    failed_with("non-media file", "not readable media")
    failed_with("truncated video (index at the end)", "not readable media")
    failed_with("truncated video (index first)", "truncated", "re-export")
    failed_with("audio-only file", "needs video")
    failed_with("dimensions beyond the limit (max_pixels)", "320x240", "max_pixels")
    assert got["video without audio"].status is ItemStatus.DONE
    assert not stream_info(Path(got["video without audio"].output_path))["has_audio"]
    first, second = got["two inputs with the same name (1)"], got["two inputs with the same name (2)"]
    assert [Path(first.output_path).name, Path(second.output_path).name] == ["clip.mp4", "clip (2).mp4"]
    assert stream_info(Path(first.output_path))["has_audio"] and not stream_info(Path(second.output_path))["has_audio"]
    dup = got["duplicate input"]
    assert dup.status is ItemStatus.SKIPPED and "duplicate of input" in dup.error and dup.outputs == first.outputs
    for label in ("name with spaces and quotes", "name with $() and backticks", "name with a newline", "unicode name", "leading dash"):
        assert got[label].status is ItemStatus.DONE and Path(got[label].output_path).name == cases[label].name
    assert not list(tmp_path.rglob("pwned")) and not Path(os.environ["CGPU_KIT_LOCAL_ROOT"], "pwned").exists()
