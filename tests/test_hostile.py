"""Hostile and broken inputs in one batch: each gets a clear per-item outcome and the rest completes.

The table of what each input got is printed at the end of the test run and kept in docs/reliability.md.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import copy_as
from media_checks import stream_info

import cgpu_kit
from cgpu_kit import ItemStatus, JobStatus

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
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(small), "-c", "copy", "-movflags", "+faststart", str(faststart)],
        check=True)
    cases["truncated video (index at the end)"] = d / "truncated_a.mp4"
    cases["truncated video (index at the end)"].write_bytes(small.read_bytes()[: small.stat().st_size * 6 // 10])
    cases["truncated video (index first)"] = d / "truncated_b.mp4"
    cases["truncated video (index first)"].write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 6 // 10])
    cases["audio-only file"] = d / "voice.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac",
        str(cases["audio-only file"])], check=True)
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


# -- issue 21: what a hostile trial broke, one regression test per row ----------------------------------------

import errno  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from cgpu_kit import CGPUJobManager  # noqa: E402
from cgpu_kit.cli import main  # noqa: E402
from cgpu_kit.exceptions import CgpuKitError, ParameterError  # noqa: E402
from cgpu_kit.jobs import job_class  # noqa: E402
from cgpu_kit.ledger import OutputLock  # noqa: E402


def _clip(shaky_clip, dest: Path, seed: int = 0) -> Path:
    return copy_as(shaky_clip(width=64, height=48, frames=8, jitter=4, seed=seed), dest)


def _cli(capfd, *args: str) -> tuple[int, str]:
    rc = main(list(args))
    return rc, capfd.readouterr().err


def test_row1_when_an_output_name_is_taken_by_a_users_file_then_it_is_kept_unless_overwrite(shaky_clip, tmp_path):
    a, b = _clip(shaky_clip, tmp_path / "in" / "a.mp4"), _clip(shaky_clip, tmp_path / "in" / "b.mp4", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.mp4").write_text("mine")

    first = cgpu_kit.stabilize([a, b], out, preset="ultrafast")

    by_name = {Path(i.input_path).name: i for i in first.items}
    assert (out / "a.mp4").read_text() == "mine"
    assert by_name["a.mp4"].status is ItemStatus.SKIPPED
    assert str(out / "a.mp4") in by_name["a.mp4"].error and "--overwrite" in by_name["a.mp4"].error
    assert "another output folder" in by_name["a.mp4"].error
    assert first.status is JobStatus.PARTIAL and by_name["b.mp4"].status is ItemStatus.DONE
    (out / "b.mp4").write_bytes(b"hand-corrected")  # the user edits an output after the run

    forced = cgpu_kit.stabilize([b], out, preset="ultrafast", force=True)

    assert (out / "b.mp4").read_bytes() == b"hand-corrected"
    assert forced.items[0].status is ItemStatus.SKIPPED and "--overwrite" in forced.items[0].error

    replaced = cgpu_kit.stabilize([a], out, preset="ultrafast", overwrite=True)

    assert replaced.status is JobStatus.COMPLETED
    assert stream_info(out / "a.mp4")["width"] == 64


def test_row2_when_the_output_folder_is_inside_the_inputs_then_outputs_are_left_out(shaky_clip, tmp_path, capfd):
    clips = tmp_path / "clips"
    a = _clip(shaky_clip, clips / "a.mp4")
    out = clips / "stabilized"
    assert _cli(capfd, "stabilize", str(a), "-o", str(out), "--preset", "ultrafast", "-q")[0] == 0

    rc, err = _cli(capfd, "stabilize", *map(str, sorted(clips.rglob("*.mp4"))), "-o", str(out), "--preset", "ultrafast", "-q")

    assert rc == 0, err
    assert "1 input(s) left out" in err and "0 done, 0 failed, 1 skipped" in err
    assert sorted(p.name for p in out.glob("*.mp4")) == ["a.mp4"]
    # an output recorded by another folder's ledger is not an input either
    rc, err = _cli(capfd, "stabilize", str(out / "a.mp4"), "-o", str(tmp_path / "other"), "--preset", "ultrafast", "-q")
    assert rc == 2 and "every input given is an output of cgpu-kit" in err


def test_row3_13_when_the_api_fails_unexpectedly_then_the_output_folder_is_not_left_locked(shaky_clip, tmp_path, monkeypatch):
    a = _clip(shaky_clip, tmp_path / "a.mp4")
    with pytest.raises(ParameterError, match="timeout"):
        cgpu_kit.stabilize([a], tmp_path / "o", timeout="x")
    with monkeypatch.context() as patch:
        patch.setattr(job_class("stabilize"), "pack", lambda self, **_: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            cgpu_kit.stabilize([a], tmp_path / "o", preset="ultrafast")
    lock = OutputLock(tmp_path / "o")
    lock.acquire()  # free again: a later call on the folder is not refused
    lock.release()
    job = job_class("stabilize")([a], tmp_path / "o", preset="ultrafast")
    job.on_item = lambda job, item: job.cancel()  # row 13: Ctrl-C lands after the last item finished

    result = CGPUJobManager().run(job)

    assert result.status is JobStatus.COMPLETED and "cancelled" not in result.summary()


def test_row4_5_13_attach_on_a_finished_job_changes_nothing_and_a_symlink_loop_fails_alone(shaky_clip, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _clip(shaky_clip, tmp_path / "a.mp4")
    os.symlink("l1.mp4", "l2.mp4")
    os.symlink("l2.mp4", "l1.mp4")
    os.mkfifo("pipe.mp4")

    rc, err = _cli(capfd, "stabilize", "./a.mp4", "l1.mp4", "pipe.mp4", "a.mp4", "-o", "in/../out", "--preset", "ultrafast", "-q")

    assert rc == 1 and "Traceback" not in err, err
    assert "partial: 1 done, 2 failed, 1 skipped" in err
    assert "l1.mp4: is a symbolic link that loops back on itself" in err
    assert "pipe.mp4: is not a regular file" in err and "save its content to a file" in err
    assert "duplicate of input './a.mp4'" in err  # spelled as given
    assert "in/.." not in err and str(tmp_path / "out" / "_cgpu_kit") in err  # paths normalised
    job_dir = next((tmp_path / "out" / "_cgpu_kit").glob("job_*"))
    before = (job_dir / "result.json").read_bytes()

    rc, err = _cli(capfd, "attach", job_dir.name[len("job_"):], "-o", "out")

    assert rc == 1 and "finished already" in err and "nothing changed" in err, err
    assert (job_dir / "result.json").read_bytes() == before


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> None:
    with open(disk / "filler", "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_row6_when_the_disk_fills_mid_batch_then_it_stops_cleanly_and_finished_outputs_are_kept(shaky_clip, tmp_path, tiny_disk, capfd):
    clips = [_clip(shaky_clip, tmp_path / "in" / f"c{k}.mp4", seed=k) for k in range(4)]
    job = job_class("stabilize")(clips, tiny_disk / "o", preset="ultrafast", workers=1)
    job.on_item = lambda job, item: (tiny_disk / "filler").exists() or _fill(tiny_disk)  # another program fills the disk

    result = CGPUJobManager().run(job)

    assert result.status is JobStatus.PARTIAL and "the disk is full" in result.error and "run the same command again" in result.error
    done = [Path(i.output_path) for i in result.items if i.status is ItemStatus.DONE]
    assert len(done) == 1 and stream_info(done[0])["width"] == 64
    rc, err = _cli(capfd, "stabilize", *map(str, clips), "-o", str(tiny_disk / "o"), "--preset", "ultrafast", "-q")
    assert rc == 1 and "free some space" in err and "Traceback" not in err, err  # still full: a clear refusal
    (tiny_disk / "filler").unlink()
    rc, err = _cli(capfd, "stabilize", *map(str, clips), "-o", str(tiny_disk / "o"), "--preset", "ultrafast", "-q")
    assert rc == 0, err
    assert sorted(p.name for p in (tiny_disk / "o").glob("*.mp4")) == [c.name for c in clips]
    taken = sum((tiny_disk / "o" / c.name).stat().st_size for c in clips)
    assert sum(job.estimated_output_bytes(b) for b in job.batch_items.values()) >= taken  # the estimate covers them


@pytest.mark.parametrize("args, fragment", [
    (["-o", "FILE"], "is a file, not a folder"),
    (["-o", "FILE/sub"], "is a file, not a folder"),
    (["--zoom", "nan"], "--zoom"), (["--timeout", "nan"], "--timeout"), (["--timeout", "1e400"], "--timeout"),
    (["--timeout", "-1"], "--timeout"), (["--timeout", "0"], "--timeout"), (["--item-timeout", "-1"], "--item-timeout"),
    (["--item-timeout", "nan"], "--item-timeout"), (["--part-mb", "nan"], "--part-mb"), (["--part-mb", "inf"], "--part-mb"),
    (["--part-mb", "-5"], "--part-mb"), (["--part-mb", "0"], "--part-mb"), (["--workers", "-1"], "--workers"),
    (["--max-pixels", "0"], "--max-pixels"),
])
def test_row7_8_when_an_option_is_unusable_then_the_cli_exits_2_naming_it_before_anything_runs(tmp_path, capfd, args, fragment):
    (tmp_path / "FILE").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "FILE")) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out")]

    rc, err = _cli(capfd, "stabilize", str(tmp_path / "a.mp4"), *args)

    assert rc == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("inputs", [None, 5, b"a.mp4", ["a.mp4", None], []])
def test_row9_when_the_api_gets_wrong_types_then_it_raises_a_parameter_error(tmp_path, inputs):
    with pytest.raises(ParameterError, match="input"):
        cgpu_kit.stabilize(inputs, tmp_path / "o")


def test_row9_when_the_output_folder_is_none_then_a_parameter_error_names_it(tmp_path):
    with pytest.raises(CgpuKitError, match="output folder"):
        cgpu_kit.stabilize(["a.mp4"], None)


def test_row10_when_ctrl_c_hits_while_inputs_are_checked_then_it_ends_with_the_hint(shaky_clip, tmp_path):
    src = _clip(shaky_clip, tmp_path / "src.mp4")
    names = []
    for k in range(300):
        os.link(src, tmp_path / f"c{k}.mp4")
        names.append(str(tmp_path / f"c{k}.mp4"))
    run = subprocess.Popen([sys.executable, "-m", "cgpu_kit", "stabilize", *names, "-o", str(tmp_path / "out"), "-q"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "out" / "_cgpu_kit" / "lock"
    while not lock.exists() and run.poll() is None:  # the folder is locked: inputs are being checked
        pass
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)

    assert run.returncode == 130, err
    assert "run the same command again" in err and "Traceback" not in err


def test_row11_messages_name_the_option_that_fixes_them(shaky_clip, tmp_path, capfd):
    a = _clip(shaky_clip, tmp_path / "a.mp4")
    rc, err = _cli(capfd, "stabilize", str(a), "-o", str(tmp_path / "out"), "--max-pixels", "1000", "-q")
    assert rc == 1 and "64x48 is larger than the limit of 1000 pixels" in err and "--max-pixels" in err, err

    rc, err = _cli(capfd, "transcribe", str(a), "-o", str(tmp_path / "out"), "--model", "/etc/passwd")
    assert rc == 2 and "/etc/passwd is a file, not a model folder" in err


@pytest.mark.parametrize("device, compute_type, fragment", [("cuda", "auto", "--device cpu"), ("cpu", "float16", "--compute-type auto")])
def test_row11_when_the_device_or_compute_type_cannot_be_used_then_the_message_says_what_to_use(device, compute_type, fragment):
    pytest.importorskip("faster_whisper")
    from cgpu_kit.runtime.transcribe import FasterWhisperEngine

    if device == "cuda":
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            pytest.skip("this machine has a GPU")
    with pytest.raises(ParameterError, match=fragment):
        FasterWhisperEngine({"model": "tiny.en", "device": device, "compute_type": compute_type})


def test_row13_when_the_lock_refuses_a_run_then_no_empty_summary_is_printed(shaky_clip, tmp_path, capfd):
    a = _clip(shaky_clip, tmp_path / "a.mp4")
    lock = OutputLock(tmp_path / "o")
    lock.acquire()
    try:
        rc, err = _cli(capfd, "stabilize", str(a), "-o", str(tmp_path / "o"))
    finally:
        lock.release()
    assert rc == 2 and "in use by another run" in err and "0 done" not in err


def test_row7_when_the_output_folder_cannot_be_written_then_the_cli_exits_2_naming_it(tmp_path, capfd):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True, text=True)
    if mounted.returncode != 0:  # as a user, a folder without write permission does the same
        ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("root can write to a folder without write permission, and mounting a read-only tmpfs failed")
        rc, err = _cli(capfd, "stabilize", str(tmp_path / "a.mp4"), "-o", str(ro / "out"))
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(ro)], check=False)
        ro.chmod(0o755)
    assert rc == 2 and f"output folder {ro / 'out'} cannot be written" in err and "Traceback" not in err, err
