"""Whole stabilization batches through the stand-in cgpu: same results as local, faults survived, recycles resumed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cgpu_harness import no_pwned  # tests/fakes is on sys.path (conftest)
from conftest import named_clips  # noqa: E402

import cgpu_kit
from cgpu_kit.jobs.stabilize import StabilizeJob
from cgpu_kit.manager import CGPUJobManager, RetryPolicy
from cgpu_kit.media import probe
from cgpu_kit.remote import RemoteBatch
from cgpu_kit.results import ItemStatus, JobStatus
from cgpu_kit.util import file_sha256, read_jsonl

CLIP = dict(width=160, height=120, frames=30, jitter=8)


@pytest.fixture
def manager(fresh_manager):
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    return fresh_manager


def clips(shaky_clip, folder: Path, names: list[str]) -> list[Path]:
    return named_clips(shaky_clip, folder, names, **CLIP)


def test_when_faults_hit_upload_launch_poll_and_download_then_the_batch_still_matches_the_local_runtime(
    fake_cgpu, manager, shaky_clip, tmp_path, monkeypatch,
):
    """One batch, every kind of fault once, odd file names; nothing lost, nothing sent twice, same outputs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CGPU_KIT_GET_CHUNK_BYTES", "4096")
    monkeypatch.setenv("CGPU_KIT_INLINE_BYTES", "0")  # chunks come by the resumable download, not with the poll
    monkeypatch.setenv("CGPU_KIT_POLL_WAIT", "0")  # quick polls: the 2nd and 3rd surely come, however fast the batch
    fake_cgpu.set_rules(
        {"fault": "lose_end", "command": "copy", "match": "incoming/batch-"},  # the batch's one copy: arrived, answer lost
        {"fault": "never_starts", "command": "run", "match": "incoming"},      # the check before sending: never started
        {"fault": "lose_end", "command": "run", "match": "echo launched", "keep": 0},  # launch
        {"fault": "never_starts", "command": "run", "match": "cgpu_kit.runtime.status", "nth": 2},  # poll
        {"fault": "lose_end", "command": "run", "match": "cgpu_kit.runtime.status", "nth": 3},      # poll
        {"fault": "lose_end", "command": "run", "match": "out_0000.zip", "keep": 0.5},            # download
    )
    names = ["$(touch pwned).mp4", "it's \"quoted\" `touch pwned`.mp4", "plain.mp4"]
    inputs = clips(shaky_clip, tmp_path / "in", names)
    job = StabilizeJob(inputs, tmp_path / "cgpu", backend="cgpu", preset="ultrafast")
    remote = manager.run(job)
    local = cgpu_kit.stabilize(inputs, tmp_path / "local", preset="ultrafast")

    assert local.status is JobStatus.COMPLETED, local.error
    assert remote.status is JobStatus.COMPLETED, (remote.error, remote.remote_log)
    assert [i.status for i in remote.items] == [ItemStatus.DONE] * 3
    outputs = lambda r: sorted(Path(o).name for i in r.items for o in i.outputs)  # noqa: E731
    assert outputs(remote) == outputs(local) == sorted(names)
    for name in names:
        here, there = tmp_path / "local" / name, tmp_path / "cgpu" / name
        assert probe(there).frames == probe(here).frames == CLIP["frames"]
        assert file_sha256(there) == file_sha256(here)  # same ffmpeg, same x264 threads: the same bytes
    assert no_pwned(tmp_path, tmp_path / "in", fake_cgpu.root, Path("/"), Path.cwd()) == []

    assert fake_cgpu.fired() == [1, 1, 1, 1, 1, 1]
    assert remote.metadata["transport_retries"] >= 5  # the upload whose answer was lost needed none
    copies = fake_cgpu.complete_copies()
    assert copies and set(copies.values()) == {1}, copies  # no file reached the runtime twice
    runtime_log = (job.state_dir / "runtime.log").read_text()
    assert len(re.findall(r"stabilize: 3 items", runtime_log)) == 1  # the lost launch answer started no second driver
    gets = [int(re.search(r"out_0000\.zip'? (\d+) ", c["text"]).group(1)) for c in fake_cgpu.calls()
            if c["cmd"] == "run" and "out_0000.zip" in c["text"] and "runtime.status" not in c["text"]]
    assert gets[0] == 0 and gets[1] > 0  # the broken download resumed where it broke
    assert Path(remote.log_path).is_file() and not list(fake_cgpu.root.glob("job_*"))  # logs home, work folder removed


def test_when_the_runtime_is_recycled_mid_batch_then_it_is_set_up_again_and_only_unfinished_items_run(
    fake_cgpu, manager, shaky_clip, tmp_path, monkeypatch,
):
    # recycled just as the second finished item is fetched: the first is home, the others are not
    monkeypatch.setenv("CGPU_KIT_INLINE_BYTES", "0")
    fake_cgpu.set_rules({"fault": "recycle", "command": "run", "match": "out_0001.zip"})
    inputs = clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"])
    job = StabilizeJob(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast", workers=1)
    delivered: list[str] = []
    job.on_item = lambda _job, item: delivered.append(item.item_id)
    result = manager.run(job)
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert fake_cgpu.fired() == [1]
    assert sorted(delivered) == ["i0000", "i0001", "i0002"]
    assert next(iter(manager.sessions.values())).setups == 2
    second_run = [r["item_id"] for r in read_jsonl(job.state_dir / "results.jsonl")]
    first_run = [i for i in delivered if i not in second_run]
    assert first_run == ["i0000"] and sorted(second_run) == ["i0001", "i0002"]
    assert len(second_run) == len(set(second_run)) and not set(first_run) & set(second_run)
    sent = [c for c in fake_cgpu.calls() if c["cmd"] == "copy" and "/incoming/batch-" in c.get("dest", "")]
    assert len(sent) == 2  # the batch's files (and the shipped cgpu_kit) travel in one copy, twice in all
    setups = [c for c in fake_cgpu.calls() if c["cmd"] == "run" and "bundle.zip setup" in c.get("text", "")]
    assert len(setups) == 2  # the recycled runtime lost the shipped cgpu_kit: the check found it, it was set up again
    for item in result.items:
        assert probe(Path(item.outputs[0])).frames == CLIP["frames"]
    assert json.loads((job.state_dir / "status.json").read_text())["exit_code"] == 0


class _Died(BaseException):
    """The local process dies here (no layer catches it, as with SIGKILL)."""


def test_when_the_local_process_dies_after_launch_then_the_same_command_picks_the_remote_batch_up(
    fake_cgpu, manager, shaky_clip, tmp_path, monkeypatch,
):
    inputs = clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"])
    launch = RemoteBatch.launch

    def launch_then_die(self, **kw):
        launch(self, **kw)
        raise _Died

    with monkeypatch.context() as patch:
        patch.setattr(RemoteBatch, "launch", launch_then_die)
        job = StabilizeJob(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast")
        with pytest.raises(_Died):
            manager.run(job)
    while job._lock._fd is not None:  # the dead process's lock goes with it
        job.release_output()
    CGPUJobManager.reset()
    CGPUJobManager().retry_policy = RetryPolicy(sleep=lambda s: None)

    again = cgpu_kit.stabilize(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast")

    assert again.status is JobStatus.COMPLETED, (again.error, again.remote_log)
    assert [i.status for i in again.items] == [ItemStatus.SKIPPED] * 3  # fetched from the first run's batch
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == ["a.mp4", "b.mp4", "c.mp4"]
    launches = [c for c in fake_cgpu.calls() if c["cmd"] == "run" and "echo launched" in c.get("text", "")]
    assert len(launches) == 2  # the first run's, and the pick-up's, which found the batch running or done:
    records = read_jsonl(tmp_path / "out" / "_cgpu_kit" / f"job_{job.job_id}" / "results.jsonl")
    assert sorted(r["name"] for r in records) == ["a.mp4", "b.mp4", "c.mp4"]  # each processed once
    assert not list(fake_cgpu.root.glob("job_*"))  # picked up, logs home, then removed


def test_when_the_runtime_refuses_an_upload_then_the_batch_ends_at_once_with_the_servers_words(
    fake_cgpu, manager, shaky_clip, tmp_path,
):
    fake_cgpu.set_rules({"fault": "refuse", "command": "copy", "match": "incoming/batch-", "times": 99})
    inputs = clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4"])
    result = manager.run(StabilizeJob(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast"))
    assert result.status is JobStatus.FAILED
    assert "Cannot create file or directory" in result.error and "/incoming/batch-" in result.error
    assert "recycled" not in result.error
    assert fake_cgpu.fired() == [1]  # refused once, not retried
    assert result.metadata["transport_retries"] == 0
