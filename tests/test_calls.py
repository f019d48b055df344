"""How many client calls a batch costs through the stand-in cgpu: a few, whatever the number of clips or files.

Each call of a Colab client costs seconds (node or Python starts, a login refresh, a websocket), so the goals
(issue 12) are: at most 12 calls for a batch on a fresh runtime, at most 8 on a runtime already set up, the
same count for 1 clip and for 10, and a queue of jobs on one runtime sets it up once.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import named_clips

from cgpu_kit import remote
from cgpu_kit.jobs.stabilize import StabilizeJob
from cgpu_kit.manager import CGPUJobManager, RetryPolicy
from cgpu_kit.results import ItemStatus, JobStatus
from cgpu_kit.runtime import layout, status

CLIP = dict(width=160, height=120, frames=20, jitter=8)
FRESH, SET_UP = 12, 8


@pytest.fixture
def stand_in(fake_cgpu, fresh_manager, monkeypatch):
    """The stand-in with the transport's real defaults: chunks every 30 s, polls that wait on the runtime
    (longer than the default, so a slow test machine does not cost polls)."""
    monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "30")
    monkeypatch.setenv("CGPU_KIT_POLL_WAIT", "60")
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    return fake_cgpu


def batch(fake_cgpu, clips: list[Path], out: Path) -> list[dict]:
    """Run one batch through the process's manager; the stand-in's calls it made, checked complete."""
    before = len(fake_cgpu.calls())
    result = CGPUJobManager().run(StabilizeJob(clips, out, backend="cgpu", preset="ultrafast"))
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert [i.status for i in result.items] == [ItemStatus.DONE] * len(clips)
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(c.name for c in clips)
    return fake_cgpu.calls()[before:]


def setting_up(calls: list[dict]) -> list[dict]:
    return [c for c in calls if c["cmd"] == "run" and "bundle.zip setup" in c.get("text", "")]


def summary(calls: list[dict]) -> list[str]:
    return [c["cmd"] + ": " + c.get("text", c.get("dest", ""))[:120] for c in calls]


def test_when_a_batch_of_1_or_10_clips_runs_on_a_fresh_runtime_then_it_costs_the_same_few_calls(
        stand_in, shaky_clip, tmp_path):
    clips = named_clips(shaky_clip, tmp_path / "in", [f"c{n} x.mp4" for n in range(10)], **CLIP)
    one = batch(stand_in, clips[:1], tmp_path / "one")
    shutil.rmtree(stand_in.root / "cgpu_kit_runtime")  # the runtime is recycled: the next batch meets a bare one
    CGPUJobManager.reset()
    CGPUJobManager().retry_policy = RetryPolicy(sleep=lambda s: None)
    ten = batch(stand_in, clips, tmp_path / "ten")

    assert len(one) <= FRESH, summary(one)
    assert len(ten) <= FRESH, summary(ten)
    assert len(setting_up(one)) == len(setting_up(ten)) == 1  # each found the runtime bare and set it up
    assert sum(c["cmd"] == "copy" for c in ten) == sum(c["cmd"] == "copy" for c in one) == 1


def test_when_a_queue_of_two_jobs_runs_on_one_runtime_then_it_is_set_up_once_and_a_new_process_checks_it(
        stand_in, shaky_clip, tmp_path):
    clips = named_clips(shaky_clip, tmp_path / "in", [f"c{n}.mp4" for n in range(11)], **CLIP)
    manager = CGPUJobManager()
    before, held_before = len(stand_in.calls()), set(remote._HELD)
    first = StabilizeJob(clips[:1], tmp_path / "q1", backend="cgpu", preset="ultrafast")
    second = StabilizeJob(clips[1:], tmp_path / "q2", backend="cgpu", preset="ultrafast")
    manager.submit(first)
    manager.submit(second)
    results = manager.process_queue()
    assert [r.status for r in results] == [JobStatus.COMPLETED] * 2, [r.error for r in results]
    calls = stand_in.calls()[before:]
    launches = [n for n, c in enumerate(calls) if "echo launched" in c.get("text", "")]
    assert len(launches) == 2
    first_dir = results[0].metadata["remote_work_dir"]  # the first job's last call is the last that names it
    split = max(n for n, c in enumerate(calls) if first_dir in c.get("text", ""))
    job1, job2 = calls[:split + 1], calls[split + 1:]
    assert len(job1) <= FRESH, summary(job1)
    assert len(job2) <= SET_UP, summary(job2)
    assert len(setting_up(calls)) == 1 and not setting_up(job2)  # set up once for the queue
    # the set-up runtime's batch ran on the driver its check call started (kernel booted during copy and land);
    # the fresh runtime had no shipped cgpu_kit yet for one, so its launch started the driver
    assert "standby driver claimed" in (results[1].remote_log or ""), results[1].remote_log
    assert "standby driver" not in (results[0].remote_log or ""), results[0].remote_log
    assert next(iter(manager.sessions.values())).setups == 1
    assert not set(remote._HELD) - held_before  # nothing of the two batches (their records, inline data) stays held in this process

    # a new process meets the runtime set up: the set-up is checked in the batch's first call, not redone
    CGPUJobManager.reset()
    CGPUJobManager().retry_policy = RetryPolicy(sleep=lambda s: None)
    again = batch(stand_in, clips[:1], tmp_path / "again")
    assert len(again) <= SET_UP, summary(again)
    assert not setting_up(again)
    assert "cgpu_kit_runtime/ready.json" in again[0]["text"]  # checked, not assumed


def test_when_the_runtime_is_recycled_between_two_polls_then_the_next_check_finds_it_bare_and_the_rest_is_redone(
        stand_in, fresh_manager, shaky_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "0")  # a chunk per item: the first poll brings the first one inline
    stand_in.set_rules({"fault": "recycle", "command": "run", "match": "cgpu_kit.runtime.status", "nth": 2})
    # clips long enough (about a second each, one at a time) that the second poll, which comes at once after the
    # first brought item a, always finds items still to run: a batch done before it would leave nothing to redo
    clips = named_clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"], **dict(CLIP, frames=300))
    job = StabilizeJob(clips, tmp_path / "out", backend="cgpu", preset="ultrafast", workers=1)
    result = fresh_manager.run(job)

    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert stand_in.fired() == [1]
    assert [i.status for i in result.items] == [ItemStatus.DONE] * 3
    assert next(iter(fresh_manager.sessions.values())).setups == 2
    assert len(setting_up(stand_in.calls())) == 2  # the check after the recycle found no set-up: it was redone


def _running_batch(work: Path, finished: int, total: int) -> Path:
    """A work folder as a running batch leaves it: a live driver (this process), progress, one new chunk."""
    (work / layout.READY).mkdir(parents=True)
    (work / layout.PID).write_text(str(os.getpid()))
    (work / layout.PROGRESS).write_text(json.dumps({"total": total, "finished": finished, "running": []}))
    (work / layout.READY / "out_0000.json").write_text(json.dumps({"size": 1, "sha256": "0" * 64}))
    return work


def test_when_the_last_item_is_done_then_the_poll_that_brings_it_waits_for_the_batch_end_too(tmp_path):
    # every item over: the end (status.json) comes a moment later, and the same poll brings it with the chunk
    over = _running_batch(tmp_path / "over", finished=3, total=3)
    ending = threading.Timer(0.5, lambda: (over / layout.STATUS).write_text(json.dumps({"exit_code": 0})))
    ending.start()
    answer = status.wait_for_news(over, 0, wait=30, skip=set())
    assert answer["state"] == "finished" and "out_0000.zip" in answer["ready"], answer

    # items still to run: the new chunk goes home at once, while the batch runs on
    midway = _running_batch(tmp_path / "midway", finished=1, total=3)
    later = threading.Timer(3, lambda: (midway / layout.STATUS).write_text(json.dumps({"exit_code": 0})))
    later.start()
    try:
        answer = status.wait_for_news(midway, 0, wait=30, skip=set())
        assert answer["state"] == "running" and "out_0000.zip" in answer["ready"], answer
    finally:
        later.cancel()
