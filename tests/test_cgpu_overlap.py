"""A batch's copy beside its land call, and a later batch's check folded into that call (cgpu_kit/transports/
_cgpu_send.py), through the stand-in cgpu: fewer calls' time, and never a batch lost, landed twice or landed
on a runtime without its set-up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import named_clips

from cgpu_kit.jobs.stabilize import StabilizeJob
from cgpu_kit.manager import CGPUJobManager, RetryPolicy
from cgpu_kit.results import ItemStatus, JobStatus

CLIP = dict(width=160, height=120, frames=20, jitter=8)


@pytest.fixture
def stand_in(fake_cgpu, fresh_manager, monkeypatch):
    monkeypatch.setenv("CGPU_KIT_POLL_WAIT", "60")
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    return fake_cgpu


def run(clips: list[Path], out: Path):
    return CGPUJobManager().run(StabilizeJob(clips, out, backend="cgpu", preset="ultrafast"))


def done(result, clips: list[Path], out: Path) -> None:
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert [i.status for i in result.items] == [ItemStatus.DONE] * len(clips)
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(c.name for c in clips)


def lands(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["cmd"] == "run" and "echo launched" in c.get("text", "")]


def copies(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["cmd"] == "copy" and "/incoming/batch-" in c.get("dest", "")]


def leftovers(stand_in) -> list[str]:
    """What is left in the runtime's incoming folder (a zip landed beside its copy stays a minute as .landed:
    the server reads it back for the copy's answer)."""
    return sorted(p.name for p in (stand_in.root / "cgpu_kit_runtime" / "incoming").glob("*") if p.suffix != ".landed")


def test_a_copy_answered_404_no_such_file_is_checked_not_refused_for_good():
    """The server saves the file, then reads it back for its answer: a land beside the copy may have taken it
    by then (404, "No such file or directory"); what arrived is checked. A 400 stays a refusal for good."""
    from cgpu_kit.transports.cgpu import COPY_REFUSED

    def refused(said: str) -> bool:
        return any(pattern.search(said) for pattern, _ in COPY_REFUSED)

    assert not refused('Upload failed (404 Not Found): {"message": "No such file or directory: content/x.zip"}')
    assert refused('Upload failed (400 Bad Request): {"message": "Cannot create file or directory \'/content/.x\'"}')
    assert refused('Upload failed (500 Internal Server Error): {"message": "... [Errno 2] No such file or directory"}')


def test_when_a_second_batch_runs_on_a_set_up_runtime_then_its_check_travels_in_the_call_that_lands_beside_the_copy(
        stand_in, shaky_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CGPU_FAKE_LATENCY", "0.5")  # every call waits first, as over a network: two side by side overlap
    clips = named_clips(shaky_clip, tmp_path / "in", ["a b.mp4", "$(c).mp4", "d.mp4"], **CLIP)
    first = run(clips[:1], tmp_path / "one")
    done(first, clips[:1], tmp_path / "one")
    before = len(stand_in.calls())
    second = run(clips[1:], tmp_path / "two")
    done(second, clips[1:], tmp_path / "two")
    calls = stand_in.calls()[before:]

    # first call of the batch: its copy, or the land, which made the folders and checked space and set-up itself
    assert not any("df -Pk" in c.get("text", "") for c in calls if c not in lands(calls)), [c["text"][:80] for c in calls]
    (land,), (copy,) = lands(calls), copies(calls)
    assert "df -Pk" in land["text"] and "mkdir -p" in land["text"]
    assert land["start"] < copy["end"] and copy["start"] < land["end"]  # side by side, as sent
    assert "standby driver claimed" in (second.remote_log or "")  # the standby its land call started ran it
    assert leftovers(stand_in) == []  # the zip was landed (and removed), nothing else left


def test_when_the_set_up_is_gone_before_a_folded_send_then_nothing_lands_until_the_runtime_is_set_up_again(
        stand_in, shaky_clip, tmp_path):
    clips = named_clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4"], **CLIP)
    done(run(clips[:1], tmp_path / "one"), clips[:1], tmp_path / "one")
    (stand_in.root / "cgpu_kit_runtime" / "ready.json").unlink()  # its marker gone (as after a reinstall)
    before = len(stand_in.calls())
    second = run(clips[1:], tmp_path / "two")
    done(second, clips[1:], tmp_path / "two")
    calls = stand_in.calls()[before:]

    setups = [c for c in calls if c["cmd"] == "run" and "bundle.zip setup" in c.get("text", "")]
    assert len(setups) == 1  # the folded land found no marker and landed nothing; the careful path set it up
    assert len(lands(calls)) == 2 and len(copies(calls)) == 2
    assert leftovers(stand_in) == []  # the zip the folded land left was removed by the check
    assert (stand_in.root / "cgpu_kit_runtime" / "ready.json").is_file()


def test_when_a_folded_copy_is_refused_then_the_runtime_is_checked_and_the_batch_sent_again(
        stand_in, shaky_clip, tmp_path):
    clips = named_clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4"], **CLIP)
    done(run(clips[:1], tmp_path / "one"), clips[:1], tmp_path / "one")
    # the folded send's zip (named ...-f<token>.zip) refused once, as the server does before its folder exists
    stand_in.set_rules({"fault": "refuse", "command": "copy", "match": "-f"})
    before = len(stand_in.calls())
    done(run(clips[1:], tmp_path / "two"), clips[1:], tmp_path / "two")
    calls = stand_in.calls()[before:]

    assert stand_in.fired() == [1]
    assert len(copies(calls)) == 2  # refused, then sent after the check
    assert any("df -Pk" in c.get("text", "") for c in calls if c not in lands(calls))  # the check came back
    assert leftovers(stand_in) == []


def test_when_the_runtime_is_short_of_space_for_a_folded_send_then_the_batch_is_refused_and_nothing_is_launched(
        stand_in, shaky_clip, tmp_path, monkeypatch):
    clips = named_clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4"], **CLIP)
    done(run(clips[:1], tmp_path / "one"), clips[:1], tmp_path / "one")
    monkeypatch.setattr(StabilizeJob, "space_needed", lambda self: (0, 1 << 60))  # more than any disk
    job = StabilizeJob(clips[1:], tmp_path / "two", backend="cgpu", preset="ultrafast")
    before = len(stand_in.calls())
    result = CGPUJobManager().run(job)
    assert len(copies(stand_in.calls()[before:])) == 1  # sent beside the land, which refused it

    assert result.status is JobStatus.FAILED
    assert "the runtime has" in result.error and "split the batch" in result.error, result.error
    assert not (stand_in.root / f"job_{job.job_id}" / "pid").exists()  # no driver was started for it
    assert leftovers(stand_in) == []  # its copy was taken away again
    assert not list((tmp_path / "two").glob("*.mp4"))


def test_when_the_final_poll_brings_everything_then_it_tidies_the_folder_itself_and_a_damaged_copy_is_fetched_again(
        stand_in, shaky_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CGPU_KIT_TIDY_SECONDS", "2")  # the runtime empties its trash that long after
    from cgpu_kit.remote import RemoteBatch

    taken = RemoteBatch._take_inline

    def damaged_once(self, output: str) -> None:  # the final chunk came inline damaged: it must be fetched again
        taken(self, output)
        if self.held.inline.pop("ready/out_0000.zip", None) is not None:
            RemoteBatch._take_inline = taken

    monkeypatch.setattr(RemoteBatch, "_take_inline", damaged_once)
    clips = named_clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4"], **CLIP)
    before = len(stand_in.calls())
    result = run(clips, tmp_path / "out")
    done(result, clips, tmp_path / "out")
    calls = stand_in.calls()[before:]

    assert not any("rm -rf" in c.get("text", "") for c in calls)  # no call of its own to remove the folder
    trash = stand_in.root / "cgpu_kit_runtime" / "trash"
    fetched = [c for c in calls if "out_0000.zip" in c.get("text", "") and "runtime.status" not in c.get("text", "")]
    assert fetched and all(str(trash) in c["text"] for c in fetched)  # the damaged chunk, fetched from the trash
    assert not list(stand_in.root.glob("job_*"))
    deadline = time.monotonic() + 60
    while list(trash.glob("job_*")) and time.monotonic() < deadline:  # the runtime removes it by itself
        time.sleep(0.2)
    assert not list(trash.glob("job_*"))
