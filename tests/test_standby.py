"""The local runtime's fixed cost, hidden (issue 12): the batch's driver starts while its inputs are checked, and
the inputs are probed by the static ffmpeg, reading what ffprobe reads."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.sleepy import tones

from cgpu_kit import CGPUJobManager
from cgpu_kit.exceptions import InputError
from cgpu_kit.media import find_ffmpeg, probe, quick_probe
from cgpu_kit.remote import RemoteBatch
from cgpu_kit.results import ItemStatus, JobStatus
from cgpu_kit.runtime import layout
from cgpu_kit.testing import processes_gone
from cgpu_kit.transports.local import LocalTransport


@pytest.fixture(autouse=True)
def fresh_manager():
    CGPUJobManager.reset()
    yield
    CGPUJobManager.reset()


def test_a_local_batch_runs_on_the_driver_started_while_its_inputs_were_checked(sleepy, tmp_path):
    root = tmp_path / "runtime"
    job = sleepy(tones(tmp_path / "in", 3), tmp_path / "out", backend=LocalTransport(str(root)))

    result = CGPUJobManager().run(job)

    assert result.status is JobStatus.COMPLETED, result.summary()
    assert [p.read_bytes() for p in sorted((tmp_path / "out").glob("*.bin"))] == [
        p.read_bytes() for p in sorted((tmp_path / "in").glob("*.wav"))]
    log = (job.state_dir / layout.RUNTIME_LOG).read_text()
    assert "standby driver ready" in log and "standby driver claimed" in log
    assert log.count("Input Notebook") == 1  # one driver ran the template: the standby, not a second one
    cells = [c for c in json.loads((job.state_dir / layout.EXECUTED).read_text())["cells"] if c["cell_type"] == "code"]
    assert cells[0]["execution_count"] == 1  # the warm-up imports left no trace in the log notebook
    assert processes_gone(root)


def test_a_batch_with_nothing_to_run_leaves_no_driver_and_no_folder_behind(sleepy, tmp_path):
    root = tmp_path / "runtime"
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    job = sleepy([bad], tmp_path / "out", backend=LocalTransport(str(root)))

    result = CGPUJobManager().run(job)

    assert result.items[0].status is ItemStatus.FAILED and "not readable media" in result.items[0].error
    assert processes_gone(root), "the standby driver (or its kernel) was left running"
    assert not (root / f"job_{job.job_id}").exists()


def test_a_standby_nobody_claims_shuts_its_kernel_down_and_cannot_be_claimed_after(tmp_path, monkeypatch):
    monkeypatch.setenv("CGPU_KIT_STANDBY_SECONDS", "0")
    transport = LocalTransport(str(tmp_path / "runtime"))
    batch = RemoteBatch(transport, str(tmp_path / "runtime" / "job_a"))
    work = Path(batch.work_dir)

    assert transport.start_ahead(batch.standby_command(["json"]))

    assert processes_gone(work), "the unclaimed standby driver (or its kernel) is still running"
    assert "standby driver not claimed" in (work / layout.RUNTIME_LOG).read_text()
    assert not list(work.glob("standby*")) and not (work / layout.PID).exists()


SPOOF = "Stream #0:1: Video: h264, 1920x1080, 60 fps"  # a tag or a name that looks like a stream line
MEDIA = {  # name: ffmpeg arguments making it
    "av.mp4": ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=30", "-f", "lavfi", "-i", "sine", "-t", "1",
               "-c:v", "libx264", "-c:a", "aac"],
    "tone.wav": ["-f", "lavfi", "-i", "sine", "-t", "1"],
    "still.png": ["-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1"],
    "tagged.mkv": ["-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-t", "1", "-c:v", "libx264",
                   "-metadata", f"title={SPOOF}"],
}


def make_media(folder: Path) -> dict[str, Path]:
    out = {}
    for name, args in MEDIA.items():
        out[name] = folder / name
        subprocess.run([find_ffmpeg(), "-v", "error", "-y", *args, str(out[name])], check=True, capture_output=True)
    out["odd name"] = folder / f"x\n  {SPOOF}\n.wav"
    shutil.copy(out["tone.wav"], out["odd name"])
    out["header only.png"] = folder / "header only.png"  # a picture whose size cannot be read
    out["header only.png"].write_bytes(out["still.png"].read_bytes()[:40])
    return out


def test_inputs_are_probed_from_the_static_ffmpeg_as_ffprobe_reads_them(tmp_path):
    media = make_media(tmp_path)
    for name, path in media.items():
        fast, exact = quick_probe(path).to_dict(), probe(path).to_dict()
        assert fast["duration"] == pytest.approx(exact["duration"], abs=0.05) if exact["duration"] else fast["duration"] is None
        for key in ("has_video", "has_audio", "width", "height", "fps", "frames", "video_codec", "audio_codec", "format",
                    "is_image"):
            assert fast[key] == exact[key] or not (fast[key] or exact[key]), (name, key, fast[key], exact[key])
    assert quick_probe(media["tagged.mkv"]).width == 96  # not the tag's 1920
    assert not quick_probe(media["odd name"]).has_video  # not the name's stream


def test_many_inputs_probed_by_one_ffmpeg_read_exactly_as_each_alone_and_what_it_cannot_vouch_for_is_left_alone(tmp_path):
    """One ffmpeg reads many inputs (0.1 s for 20 clips where one each takes 0.6 s); whatever it says of an
    input is what that input's own probe says. A file ffmpeg cannot open stops it there: that one and those
    after it, and names it cannot tell apart in its banner (a newline, a quote), are probed alone."""
    from cgpu_kit import banner
    from cgpu_kit import media as media_mod

    made = make_media(tmp_path)
    quoted = tmp_path / "it's.wav"
    shutil.copy(made["tone.wav"], quoted)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not media")
    readable = [p for n, p in made.items() if n not in ("odd name", "header only.png")]
    order = [*readable[:2], quoted, made["odd name"], *readable[2:], broken, made["tone.wav"].with_name("after.wav")]
    shutil.copy(made["tone.wav"], order[-1])
    found = banner.read_many(media_mod.quick_ffmpeg(), order, timeout=60)
    assert set(found) == set(readable)  # not the quoted or odd names, not the broken file, nor the one after it
    for path, info in found.items():
        assert info == banner.read(media_mod.quick_ffmpeg(), path, timeout=60), path
    assert quick_probe(made["tagged.mkv"]).width == 96

    assert media_mod.probe_ahead(order) == len(readable)
    made["tone.wav"].write_bytes(made["tone.wav"].read_bytes()[:-4000])  # changed since: probed again, alone
    assert quick_probe(made["tone.wav"]).duration < found[made["tone.wav"]].duration
    with pytest.raises(InputError, match="Invalid data found"):
        quick_probe(broken)
    media_mod.forget_ahead(order)
    assert not media_mod._AHEAD


def test_when_one_ffmpeg_reading_many_inputs_stalls_it_is_given_up_in_seconds_and_each_input_is_probed_alone(tmp_path):
    """A stalled group (a file on a hung disk) costs a few seconds, not the probe's whole time limit; the
    inputs are then probed one by one, as ever. The stall is injected: an ffmpeg that hangs when given
    several inputs and is the real one when given one."""
    from cgpu_kit import banner
    from cgpu_kit.media import quick_ffmpeg

    made = make_media(tmp_path)
    stalling = tmp_path / "bin" / "ffmpeg"
    stalling.parent.mkdir()
    stalling.write_text(f'#!/bin/bash\n[ "$(printf "%s\\n" "$@" | grep -cx -- -i)" -gt 1 ] && exec sleep 300\n'
                        f'exec {quick_ffmpeg()} "$@"\n')
    stalling.chmod(0o755)
    inputs = [made["tone.wav"], made["tagged.mkv"], made["still.png"]]
    started = time.monotonic()
    assert banner.read_many(str(stalling), inputs, timeout=60) == {}
    assert time.monotonic() - started < 30  # given up after 5 + 0.25 s a file, not after 60 s
    assert banner.read(str(stalling), made["tagged.mkv"], timeout=60).width == 96


def test_a_file_that_is_not_media_is_named_with_ffmpegs_reason(tmp_path):
    bad = tmp_path / "-notes $(id).mp4"
    bad.write_text("hello")
    with pytest.raises(InputError) as err:
        quick_probe(bad)
    assert str(bad) in str(err.value) and "Invalid data found when processing input" in str(err.value)


def test_a_local_batch_reads_its_inputs_where_they_are_and_fails_alone_an_input_changed_after_its_check(sleepy, tmp_path):
    root = tmp_path / "runtime"
    inputs = tones(tmp_path / "in", 3)
    kept, changed, gone_input = inputs
    before = kept.read_bytes()
    job = sleepy(inputs, tmp_path / "out", backend=LocalTransport(str(root)))
    manager = CGPUJobManager()
    manager.prepare(job)
    changed.write_bytes(changed.read_bytes()[:-2] + b"\x01\x02")  # after the check, before the run
    gone_input.unlink()
    seen: dict[str, list] = {}

    def look(job, item) -> None:  # while the batch runs: what was sent, what the runtime reads
        seen.setdefault("parts", [p.stat().st_size for p in job.state_dir.glob("parts/part_*.zip")])
        seen.setdefault("inputs", [p.is_symlink() for p in (root / f"job_{job.job_id}" / "in").iterdir()
                                   if p.suffix == ".wav"])

    job.on_item = look
    result = manager.run(job)

    by_name = {Path(i.input_path).name: i for i in result.items}
    assert by_name[kept.name].ok and (tmp_path / "out" / f"{kept.stem}.bin").read_bytes() == before
    assert "changed after it was checked" in by_name[changed.name].error
    assert f"no longer at {gone_input}" in by_name[gone_input.name].error
    assert seen["parts"] and all(size < 4096 for size in seen["parts"])  # manifests only: no copy of the media
    assert seen["inputs"] == [True] * 3  # links to the inputs where they are
    assert kept.read_bytes() == before and processes_gone(root)  # the input itself untouched; nothing left running
