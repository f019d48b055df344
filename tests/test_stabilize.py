"""Stabilization judged by measurement, on real ffmpeg, real papermill kernels and real zips."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

import cgpu_kit
from cgpu_kit import ItemStatus, JobStatus
from cgpu_kit.exceptions import JobError, MissingDependencyError
from cgpu_kit.jobs.stabilize import STABILIZE_PARAMS
from cgpu_kit.runtime import stabilize as stab
from conftest import copy_as
from media_checks import mean_shift, stream_info


def test_when_a_shaky_clip_is_stabilized_then_it_shakes_five_times_less_and_keeps_frames_and_audio(shaky_clip, tmp_path):
    clip = shaky_clip(jitter=16)
    result = cgpu_kit.stabilize([clip], tmp_path / "out", preset="ultrafast")

    assert result.success, result.summary()
    out = Path(result.items[0].output_path)
    assert out == tmp_path / "out" / clip.name
    before, after = mean_shift(clip), mean_shift(out)
    assert before > 8, "the test clip itself must be shaky"
    assert after < 0.2 * before, (before, after)
    src, dst = stream_info(clip), stream_info(out)
    assert dst["frames"] == src["frames"]
    assert abs(dst["duration"] - src["duration"]) < 1.5 / src["fps"]
    assert dst["has_audio"] and dst["pix_fmt"] == "yuv420p" and dst["codec"] == "h264"
    assert result.items[0].timings["detect"] > 0 and result.items[0].timings["transform"] > 0


def test_when_the_batch_has_a_broken_and_a_missing_file_then_the_good_clips_still_come_back(shaky_clip, tmp_path):
    good = copy_as(shaky_clip(width=160, height=120, frames=30, jitter=8), tmp_path / "in" / "good.mp4")
    silent = copy_as(shaky_clip(width=160, height=120, frames=30, jitter=8, audio=False, seed=2), tmp_path / "in" / "silent.mov")
    broken = tmp_path / "in" / "broken.mp4"
    broken.write_text("this is not a video")
    missing = tmp_path / "in" / "missing.mp4"

    result = cgpu_kit.stabilize([good, broken, silent, missing], tmp_path / "out", preset="ultrafast")

    assert result.status is JobStatus.PARTIAL and not result.success
    by_name = {Path(i.input_path).name: i for i in result.items}
    assert by_name["good.mp4"].status is ItemStatus.DONE
    assert by_name["silent.mov"].status is ItemStatus.DONE
    assert Path(by_name["silent.mov"].output_path).name == "silent.mov"
    assert not stream_info(Path(by_name["silent.mov"].output_path))["has_audio"]
    assert mean_shift(Path(by_name["good.mp4"].output_path)) < 0.2 * mean_shift(good)
    assert by_name["broken.mp4"].status is ItemStatus.FAILED
    assert str(broken) in by_name["broken.mp4"].error and "not readable media" in by_name["broken.mp4"].error
    assert by_name["missing.mp4"].status is ItemStatus.FAILED
    assert str(missing) in by_name["missing.mp4"].error and "no such file" in by_name["missing.mp4"].error
    log = Path(result.log_path)
    assert log.is_relative_to(tmp_path / "out")
    executed = nbformat.read(log, as_version=4)
    assert "papermill" in executed.metadata
    text = json.dumps(executed.cells[-1].outputs)
    assert "good.mp4" in text and "silent.mov" in text
    with pytest.raises(JobError, match="broken.mp4"):
        result.raise_for_status()


NAMES = ["clip with spaces.mp4", "it's \"quoted\".mp4", "ünïcödé клип.mp4", "-leading dash.mp4",
         "$(touch pwned).mp4", "back`tick`.mp4", "new\nline.mp4"]


def test_when_names_are_hostile_then_each_output_keeps_its_own_name_and_no_code_runs(shaky_clip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = shaky_clip(width=160, height=120, frames=20, jitter=8, audio=False)
    inputs = [copy_as(src, tmp_path / "in" / name) for name in NAMES]

    result = cgpu_kit.stabilize(inputs, tmp_path / "out", preset="ultrafast")

    assert result.success, result.summary()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != "_cgpu_kit") == sorted(NAMES)
    assert not list(tmp_path.rglob("pwned")) and not Path(os.environ["CGPU_KIT_LOCAL_ROOT"], "pwned").exists()


def test_when_an_input_has_no_video_then_it_fails_alone_with_the_reason(shaky_clip, tmp_path):
    audio = tmp_path / "voice.m4a"
    import subprocess

    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio)], check=True)
    result = cgpu_kit.stabilize([audio, shaky_clip(width=160, height=120, frames=20, jitter=8)], tmp_path / "out", preset="ultrafast")
    assert [i.status for i in result.items] == [ItemStatus.FAILED, ItemStatus.DONE]
    assert "voice.m4a" in result.items[0].error and "needs video" in result.items[0].error


def test_the_two_passes_carry_every_parameter_and_never_read_stdin(tmp_path):
    params = STABILIZE_PARAMS.resolve({"tripod": True, "shakiness": 7, "smoothing": 22, "zoom": 1.5, "crf": 23, "preset": "fast"})
    detect, transform = stab.commands("ffmpeg", Path("/w/in/i0001.mp4"), Path("/w/out/output.mp4"), params,
                                      {"width": 321, "height": 240, "has_audio": True, "audio_codec": "pcm_s16le"})
    for argv in (detect, transform):
        assert argv[1] == "-nostdin"
        assert "file:/w/in/i0001.mp4" in argv
    vf_detect = detect[detect.index("-vf") + 1]
    vf_transform = transform[transform.index("-vf") + 1]
    assert vf_detect == "vidstabdetect=shakiness=7:accuracy=15:stepsize=6:result=transforms.trf:tripod=1"
    assert vf_transform.startswith("vidstabtransform=input=transforms.trf:smoothing=22:zoom=1.5:optzoom=1:crop=keep:interpol=bilinear:tripod=1,unsharp=")
    assert vf_transform.endswith("scale=trunc(iw/2)*2:trunc(ih/2)*2,format=yuv420p")  # odd width made even for x264
    assert transform[transform.index("-crf") + 1] == "23" and transform[transform.index("-preset") + 1] == "fast"
    assert transform[transform.index("-c:a") + 1] == "aac"  # pcm cannot go into mp4: re-encoded


def test_when_path_ffmpeg_lacks_vidstab_then_the_packaged_one_is_used_and_without_any_the_error_says_what_to_do(monkeypatch, tmp_path):
    from cgpu_kit import media

    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho ' .. null              V->V       Pass the source unchanged to the output.'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.delenv("CGPU_KIT_FFMPEG", raising=False)
    for fn in (media.find_ffmpeg, media._filters_of):
        fn.cache_clear()
    try:
        import imageio_ffmpeg

        assert media.find_vidstab_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
        media.find_ffmpeg.cache_clear()
        monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: str(fake))
        monkeypatch.setenv("PATH", str(fake.parent))
        with pytest.raises(MissingDependencyError, match="vidstabdetect, vidstabtransform.*apt-get install ffmpeg"):
            media.find_vidstab_ffmpeg()
    finally:
        for fn in (media.find_ffmpeg, media._filters_of):
            fn.cache_clear()
