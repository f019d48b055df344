"""Chains: several job types on each item in one batch, judged by the final outputs' measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_as
from media_checks import mean_shift, stream_info

import cgpu_kit
from cgpu_kit import ItemStatus

TINY = dict(width=160, height=120, frames=24, jitter=8)


@pytest.fixture(scope="module")
def shaky_pair(tmp_path_factory):
    from cgpu_kit.samples import make_shaky_clip

    folder = tmp_path_factory.mktemp("pair")
    return [make_shaky_clip(folder / "one $(x).mp4", seed=0, **TINY), make_shaky_clip(folder / "-two.mp4", seed=1, **TINY)]


def test_when_two_shaky_clips_go_through_stabilize_upscale_x2_encode_then_outputs_are_steady_twice_the_size_h264(shaky_pair, tmp_path):
    result = cgpu_kit.chain(["stabilize", "upscale", "encode"], shaky_pair, tmp_path / "out",
                            params={"stabilize": {"preset": "ultrafast"}, "upscale": {"scale": 2, "preset": "ultrafast"},
                                    "encode": {"codec": "h264", "preset": "veryfast"}})

    assert result.success, result.summary()
    for item, clip in zip(result.items, shaky_pair):
        assert [Path(o).name for o in item.outputs] == [clip.stem + ".mp4"]
        out = Path(item.outputs[0])
        info = stream_info(out)
        assert (info["width"], info["height"]) == (320, 240) and info["codec"] == "h264"
        assert mean_shift(out) < 0.3 * mean_shift(clip)
        assert set(item.metadata["steps"]) == {"stabilize", "upscale", "encode"}
        assert item.metadata["steps"]["encode"]["encoder"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == sorted(c.stem + ".mp4" for c in shaky_pair)


def test_when_asked_to_keep_steps_then_the_intermediate_outputs_are_delivered_too(shaky_pair, tmp_path):
    clip = shaky_pair[0]
    run = subprocess.run([sys.executable, "-m", "cgpu_kit", "chain", "stabilize,encode", str(clip), "-o", str(tmp_path / "out"),
                          "--keep-steps", "--step-params", '{"stabilize": {"preset": "ultrafast"}, "encode": {"codec": "hevc"}}', "-q"],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file())
    assert names == sorted([f"{clip.stem}.1-stabilize.mp4", f"{clip.stem}.mp4"])
    assert stream_info(tmp_path / "out" / f"{clip.stem}.mp4")["codec"] == "hevc"
    assert stream_info(tmp_path / "out" / f"{clip.stem}.1-stabilize.mp4")["codec"] == "h264"


def test_when_a_step_fails_then_its_item_fails_naming_the_step_and_the_other_item_is_done(shaky_pair, tmp_path):
    still = tmp_path / "still.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", str(still)], check=True)  # audio only
    good = copy_as(shaky_pair[1], tmp_path / "good.mp4")
    result = cgpu_kit.chain("interpolate,beats", [good, still], tmp_path / "out",
                            params={"interpolate": {"fps": 5.0}})
    by_name = {Path(i.input_path).name: i for i in result.items}
    assert by_name["good.mp4"].status is ItemStatus.FAILED
    assert "step 1 (interpolate) failed" in by_name["good.mp4"].error and "good.mp4" in by_name["good.mp4"].error
    assert by_name["still.mp4"].status is ItemStatus.FAILED and "needs video" in by_name["still.mp4"].error


def test_a_chain_with_a_non_media_step_before_the_last_is_refused(shaky_pair, tmp_path):
    with pytest.raises(cgpu_kit.ParameterError, match="put it last"):
        cgpu_kit.chain(["scenes", "encode"], shaky_pair, tmp_path / "out")


def test_when_an_item_is_run_again_on_the_runtime_then_its_finished_steps_are_not_redone(shaky_pair, tmp_path):
    from cgpu_kit.media import probe
    from cgpu_kit.runtime.chain import ChainProcessor
    from cgpu_kit.runtime.context import ItemContext, RuntimeItem

    clip = shaky_pair[0]
    params = {"steps": ["stabilize", "encode"], "keep_steps": False,
              "processors": ["cgpu_kit.runtime.stabilize:StabilizeProcessor", "cgpu_kit.runtime.encode:EncodeProcessor"],
              "step_params": json.dumps({"stabilize": {"preset": "ultrafast"}, "encode": {"preset": "veryfast", "codec": "av1"}})}
    chain = ChainProcessor(params)
    item = RuntimeItem("i0000", clip.name, clip, 0, probe(clip).to_dict())

    def attempt() -> ItemContext:
        ctx = ItemContext(item, tmp_path / "work" / "out" / "i0000", params, timeout=300)
        assert [p.name for p in chain.process(ctx)] == ["output.mp4"]
        return ctx

    first = attempt()
    stabilized = tmp_path / "work" / "steps" / "i0000" / "1-stabilize" / "output.mp4"
    made_at = stabilized.stat().st_mtime_ns
    second = attempt()  # as after a runtime restart in the middle of the item's last step
    assert "resumed" not in first.metadata["steps"]["stabilize"]
    assert second.metadata["steps"]["stabilize"]["resumed"] is True and "stabilize" not in second.timings
    assert stabilized.stat().st_mtime_ns == made_at
    assert stream_info(second.output(".mp4"))["codec"] == "av1"
