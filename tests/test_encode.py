"""Delivery encodes judged by their streams and by PSNR against the master, on real ffmpeg and kernels."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from media_checks import stream_info

import cgpu_kit
from cgpu_kit import api
from cgpu_kit.generated import make_test_card
from cgpu_kit.runtime.encoders import NVENC, choose, nvenc_works


def psnr(encoded: Path, master: Path) -> float:
    err = subprocess.run(["ffmpeg", "-nostdin", "-i", str(encoded), "-i", str(master), "-lavfi", "psnr", "-f", "null", "-"],
                         capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stderr
    return float(re.search(r"average:([0-9.]+|inf)", err).group(1))


@pytest.fixture(scope="module")
def master(tmp_path_factory) -> Path:
    return make_test_card(tmp_path_factory.mktemp("master") / "test card $(x).mp4", width=160, height=120, seconds=1.5)


@pytest.mark.parametrize("codec,name", [("h264", "h264"), ("hevc", "hevc"), ("av1", "av1")])
def test_when_encoded_at_the_default_quality_then_the_codec_is_the_one_asked_and_psnr_is_above_35_db(master, tmp_path, codec, name):
    result = api.encode([master], tmp_path / "out", codec=codec, preset="veryfast")

    assert result.success, result.summary()
    out = Path(result.items[0].output_path)
    assert out.name == master.stem + ".mp4"
    info = stream_info(out)
    assert info["codec"] == name and (info["width"], info["height"]) == (160, 120) and info["has_audio"]
    assert psnr(out, master) > 35
    meta = result.items[0].metadata
    expected = choose(codec)  # what this machine has: NVENC only where a test frame encodes
    assert meta["encoder"] == expected.name and meta["hardware"] == expected.hardware and meta["ffmpeg"]


def test_when_a_max_height_and_audio_bitrate_are_asked_then_the_output_is_that_tall_and_keeps_the_aspect(master, tmp_path):
    result = api.encode([master], tmp_path / "out", codec="h264", max_height=60, audio_bitrate=64, preset="veryfast")

    assert result.success, result.summary()
    info = stream_info(Path(result.items[0].output_path))
    assert (info["width"], info["height"]) == (80, 60) and info["codec"] == "h264" and info["has_audio"]


def test_when_nvenc_is_demanded_where_no_gpu_can_encode_then_the_batch_fails_saying_so(master, tmp_path):
    if any(nvenc_works(exe, NVENC["h264"])[0] for exe in ("ffmpeg",)):
        pytest.skip("this machine has a working NVENC")
    result = api.encode([master], tmp_path / "out", hardware="nvenc")

    assert not result.success
    text = result.summary() + " ".join(i.error or "" for i in result.items)
    assert "h264_nvenc" in text, text


def test_a_quality_beyond_the_codecs_scale_is_refused_before_running(master, tmp_path):
    with pytest.raises(cgpu_kit.ParameterError, match="at most 51 for h264"):
        api.encode([master], tmp_path / "out", codec="h264", quality=60)
