"""Stabilization judged by measurement, on real ffmpeg, real papermill kernels and real zips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import copy_as
from media_checks import mean_shift, stream_info

import cgpu_kit
from cgpu_kit import ItemStatus, JobStatus
from cgpu_kit.exceptions import JobError, MissingDependencyError
from cgpu_kit.jobs.stabilize import STABILIZE_PARAMS
from cgpu_kit.runtime import stabilize as stab


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


def test_when_stabilized_with_the_defaults_then_less_than_a_hundredth_of_the_shake_is_left(shaky_clip, tmp_path):
    # on this clip Debian's ffmpeg 5.1 (vid.stab 1.1.0) leaves 0.07 of the shake (1.15 of 16 px), the build chosen
    # by default (imageio-ffmpeg's 9.0, vid.stab 1.4.0) none that phase correlation finds (bench/RESULTS.md)
    clip = shaky_clip(jitter=12, audio=False, seed=0)
    result = cgpu_kit.stabilize([clip], tmp_path / "out", preset="ultrafast")

    assert result.success, result.summary()
    before, after = mean_shift(clip), mean_shift(Path(result.items[0].output_path))
    assert before > 10, "the test clip itself must be shaky"
    assert after < 0.01 * before, (before, after, result.items[0].metadata["tool"])


def ffmpeg_version(exe: str) -> str:
    """``5.1.9`` from ``ffmpeg version 5.1.9-0+deb12u1 ...``, read here independently of cgpu_kit.media."""
    first = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True).stdout.split()[2]
    return first.lstrip("n").split("-")[0]


def test_when_cgpu_kit_ffmpeg_names_a_build_then_it_is_used_and_the_summary_and_metadata_name_it(shaky_clip, tmp_path, monkeypatch):
    system = shutil.which("ffmpeg")
    monkeypatch.setenv("CGPU_KIT_FFMPEG", system)
    clip = shaky_clip(width=160, height=120, frames=20, jitter=8, audio=False)
    run = subprocess.run([sys.executable, "-m", "cgpu_kit", "stabilize", str(clip), "-o", str(tmp_path / "out"),
                          "--preset", "ultrafast", "-q", "--json"], capture_output=True, text=True, stdin=subprocess.DEVNULL)

    assert run.returncode == 0, run.stderr
    item = json.loads(run.stdout)["items"][0]
    assert item["metadata"]["ffmpeg"]["path"] == system
    assert item["metadata"]["ffmpeg"]["version"] == ffmpeg_version(system)
    assert item["metadata"]["ffmpeg"]["source"] == "CGPU_KIT_FFMPEG"
    assert f"used ffmpeg {ffmpeg_version(system)} with vid.stab 1." in run.stderr.splitlines()[0]


def test_when_no_ffmpeg_is_named_then_the_one_with_the_newest_vidstab_is_chosen_and_named(monkeypatch):
    import imageio_ffmpeg

    from cgpu_kit import media

    monkeypatch.delenv("CGPU_KIT_FFMPEG", raising=False)
    chosen = media.vidstab_build()
    builds = [media.ffmpeg_build(shutil.which("ffmpeg"), "PATH"), media.ffmpeg_build(imageio_ffmpeg.get_ffmpeg_exe(), "imageio-ffmpeg")]
    assert all(b.vidstab for b in builds), "both builds on this machine have vidstab"
    assert chosen.vidstab == max(b.vidstab for b in builds)
    assert chosen.version == ffmpeg_version(chosen.path)
    assert chosen.describe() == f"ffmpeg {chosen.version} with vid.stab {chosen.vidstab_text} ({chosen.source})"


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
    assert vf_transform.startswith(
        "vidstabtransform=input=transforms.trf:smoothing=22:zoom=1.5:optzoom=1:crop=keep:interpol=bilinear:tripod=1,unsharp=")
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
    for fn in (media.find_ffmpeg, media._filters_of, media._versions_of):
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
        for fn in (media.find_ffmpeg, media._filters_of, media._versions_of):
            fn.cache_clear()
