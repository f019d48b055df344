"""Nothing lost, nothing redone: cancel, resume after a crash at every step of a batch, runtime loss, locks.

A crash is simulated by an exception that no layer catches (as SIGKILL would end the process): the test then
drops the dead process's lock and runs the same command again with a new manager, as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import copy_as

import cgpu_kit
from cgpu_kit import CGPUJobManager, ItemStatus, JobStatus
from cgpu_kit.exceptions import ConnectionLostError
from cgpu_kit.ledger import OutputLock
from cgpu_kit.remote import RemoteBatch
from cgpu_kit.testing import FakeClock, MockTransport, fail_nth, processes_in
from cgpu_kit.transports.local import LocalTransport

FAULTS = Counter()  # figures printed at the end of the suite (conftest's terminal summary)


class Crash(BaseException):
    """The local process dies here."""


def _inputs(shaky_clip, tmp_path: Path, n: int = 4) -> list[Path]:
    return [copy_as(shaky_clip(width=64, height=48, frames=8, jitter=4, audio=False, seed=k), tmp_path / "in" / f"clip {k}.mp4")
            for k in range(n)]


def _processed(counter: Path) -> Counter:
    return Counter(counter.read_text().splitlines()) if counter.exists() else Counter()


def _die(job) -> None:
    """What the OS does to a killed process: its lock goes away."""
    while job._lock._fd is not None:
        job._lock.release()


def _assert_exactly_once(out: Path, inputs: list[Path], counter: Path) -> None:
    outputs = sorted(p.name for p in out.iterdir() if p.name != "_cgpu_kit")
    assert outputs == sorted(p.stem + ".bin" for p in inputs)
    for src in inputs:
        assert (out / (src.stem + ".bin")).read_bytes() == src.read_bytes()
    processed = _processed(counter)
    assert set(processed) == {p.name for p in inputs}
    redone = sum(c - 1 for c in processed.values())
    FAULTS["items redone"] += redone
    assert redone == 0, processed
    records = (out / "_cgpu_kit" / "ledger.jsonl").read_text().splitlines()
    assert len(records) == len(inputs), records  # a resumed job neither re-delivers nor re-records an item


@pytest.fixture
def counter(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "processed.txt"
    monkeypatch.setenv("SLEEPY_COUNTER", str(path))
    return path


def test_when_cancelled_midway_then_finished_items_are_kept_and_a_rerun_does_only_the_rest(sleepy, shaky_clip, tmp_path, counter):
    inputs = _inputs(shaky_clip, tmp_path)
    job = sleepy(inputs, tmp_path / "out", seconds=0.6, workers=1)
    job.on_item = lambda j, item: j.cancel()  # cancel as soon as the first item is home

    result = CGPUJobManager().run(job)

    assert result.status is JobStatus.CANCELLED
    statuses = Counter(i.status for i in result.items)
    assert statuses[ItemStatus.DONE] >= 1 and statuses[ItemStatus.CANCELLED] >= 1
    assert statuses[ItemStatus.DONE] + statuses[ItemStatus.CANCELLED] == len(inputs)
    assert "cancelled" in result.summary()
    done_first = {Path(i.input_path).name for i in result.items if i.status is ItemStatus.DONE}

    CGPUJobManager.reset()
    again = CGPUJobManager().run(sleepy(inputs, tmp_path / "out", seconds=0.6, workers=1))
    assert again.status is JobStatus.COMPLETED
    assert {Path(i.input_path).name for i in again.items if i.status is ItemStatus.SKIPPED} == done_first
    _assert_exactly_once(tmp_path / "out", inputs, counter)


def _crash_on(monkeypatch, owner, name: str, *, after: bool, nth: int = 1) -> None:
    """Make ``owner.name`` crash the process on its ``nth`` call, before or after doing its work."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and not after:
            raise Crash(name)
        value = original(*args, **kwargs)
        if calls["n"] == nth and after:
            raise Crash(name)
        return value

    monkeypatch.setattr(owner, name, wrapper)


def _crash_points():
    from cgpu_kit.engine import delivery
    from cgpu_kit.jobs.base import CGPUJob

    return {
        "validate": (CGPUJob, "validate", False, 2),
        "pack": (CGPUJob, "pack", False, 1),
        "upload": (LocalTransport, "put", True, 1),
        "set-up": (LocalTransport, "setup", False, 1),
        "launch": (RemoteBatch, "launch", True, 1),
        "poll": (RemoteBatch, "poll", True, 3),
        "download": (RemoteBatch, "fetch", True, 1),
        "unpack": (delivery, "safe_extract", True, 1),
        "deliver": (delivery, "deliver", True, 1),
    }


@pytest.mark.parametrize("step", list(_crash_points()))
def test_when_the_process_dies_at_a_step_then_the_same_command_finishes_the_batch_with_each_item_once(
    step, sleepy, shaky_clip, tmp_path, counter, monkeypatch,
):
    inputs = _inputs(shaky_clip, tmp_path)
    owner, name, after, nth = _crash_points()[step]
    with monkeypatch.context() as patch:
        _crash_on(patch, owner, name, after=after, nth=nth)
        job = sleepy(inputs, tmp_path / "out", seconds=0.15, workers=1)
        FAULTS["faults injected"] += 1
        with pytest.raises(Crash):
            CGPUJobManager().run(job)
    _die(job)
    CGPUJobManager.reset()

    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "out", seconds=0.15, workers=1))

    assert result.status is JobStatus.COMPLETED, result.summary()
    assert all(i.ok for i in result.items)
    _assert_exactly_once(tmp_path / "out", inputs, counter)
    FAULTS["faults survived"] += 1


@pytest.mark.parametrize("method", ["put", "setup", "run", "get"])
def test_when_a_transport_call_fails_once_then_the_retry_survives_it_in_the_same_run(
    method, sleepy, shaky_clip, tmp_path, counter, monkeypatch,
):
    inputs = _inputs(shaky_clip, tmp_path, n=2)
    transport = MockTransport(fail_nth(method, 1, ConnectionLostError(f"injected: {method} lost")))
    manager = CGPUJobManager()
    manager.pacing.clock = clock = FakeClock()
    FAULTS["faults injected"] += 1

    result = manager.run(sleepy(inputs, tmp_path / "out", workers=1, backend=transport))

    assert transport.count(method) >= 2 and result.status is JobStatus.COMPLETED, result.summary()
    assert result.metadata["transport_retries"] == 1 and 1.0 in clock.sleeps  # the first back-off, not waited
    _assert_exactly_once(tmp_path / "out", inputs, counter)
    FAULTS["faults survived"] += 1


def test_when_the_runtime_is_recycled_midway_then_it_is_set_up_again_and_only_unfinished_items_run_again(
    sleepy, shaky_clip, tmp_path, counter, monkeypatch,
):
    inputs = _inputs(shaky_clip, tmp_path)
    state = {"recycled": False}

    def recycle_after_first_result(call):
        if call.method == "status" and not state["recycled"] and call.transport.results_count(call.target) >= 1:
            state["recycled"] = True  # the runtime vanishes: its processes die, its files are gone
            call.transport.lose_runtime()

    transport = MockTransport(recycle_after_first_result)
    FAULTS["faults injected"] += 1

    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "out", seconds=0.3, workers=1, backend=transport))

    assert state["recycled"] and result.status is JobStatus.COMPLETED, result.summary()
    assert transport.count("setup") == 2
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != "_cgpu_kit")
    assert outputs == sorted(p.stem + ".bin" for p in inputs)
    processed = _processed(counter)
    # what finished and came home before the loss is not redone; only the item running then (killed) may be
    assert set(processed) == {p.name for p in inputs} and sum(processed.values()) <= len(inputs) + 1
    FAULTS["items redone"] += sum(processed.values()) - len(inputs)
    FAULTS["faults survived"] += 1


def test_when_two_runs_share_an_output_folder_then_the_second_is_refused_clearly(shaky_clip, tmp_path):
    (tmp_path / "out").mkdir()
    holder = OutputLock(tmp_path / "out")
    holder.acquire()
    try:
        result = cgpu_kit.stabilize([shaky_clip(width=64, height=48, frames=8, jitter=4)], tmp_path / "out")
    finally:
        holder.release()
    assert result.status is JobStatus.FAILED
    assert "in use by another run" in result.error and str(tmp_path / "out") in result.error


def test_when_the_batch_would_not_fit_on_disk_then_it_is_refused_before_anything_is_sent(shaky_clip, tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    result = cgpu_kit.stabilize([shaky_clip(width=64, height=48, frames=8, jitter=4)], tmp_path / "out")
    assert result.status is JobStatus.FAILED
    assert "1 kB free but this batch needs about" in result.error
    assert not list(Path(os.environ["CGPU_KIT_LOCAL_ROOT"]).glob("job_*/parts/*.zip"))


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cgpu_kit", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_when_ctrl_c_hits_the_cli_then_finished_items_are_kept_and_the_same_command_does_only_the_rest(shaky_clip, tmp_path):
    clips = [copy_as(shaky_clip(width=320, height=240, frames=60, jitter=12, seed=k % 2), tmp_path / "in" / f"c{k}.mp4")
             for k in range(5)]
    out = tmp_path / "out"
    args = ["stabilize", *map(str, clips), "-o", str(out), "--workers", "1", "--preset", "medium", "-q"]
    run = _cli(*args)
    deadline = time.monotonic() + 120
    while not any(p.suffix == ".mp4" for p in out.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)

    assert run.returncode == 130, err
    assert "cancelled" in err and "run the same command again" in err
    kept = sorted(p.name for p in out.glob("*.mp4"))
    assert 1 <= len(kept) < len(clips), err
    settle = time.monotonic() + 10  # the driver wrote its status and is exiting
    while processes_in(Path(os.environ["CGPU_KIT_LOCAL_ROOT"])) and time.monotonic() < settle:
        time.sleep(0.1)
    left = [Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ") for pid in processes_in(Path(os.environ["CGPU_KIT_LOCAL_ROOT"]))]
    assert not left, f"the runtime's work must stop too: {left}\n{err}"

    again = _cli(*args)
    _, err2 = again.communicate(timeout=300)
    assert again.returncode == 0, err2
    assert f"{len(kept)} skipped" in err2 and f"{len(clips) - len(kept)} done" in err2
    assert sorted(p.name for p in out.glob("*.mp4")) == [c.name for c in clips]


def test_when_the_process_died_then_cgpu_kit_attach_fetches_what_its_batch_produced(shaky_clip, tmp_path, monkeypatch):
    from cgpu_kit import StabilizeJob

    clips = [copy_as(shaky_clip(width=160, height=120, frames=20, jitter=8, seed=k), tmp_path / "in" / f"c{k}.mp4") for k in range(3)]
    with monkeypatch.context() as patch:
        _crash_on(patch, RemoteBatch, "launch", after=True)
        job = StabilizeJob(clips, tmp_path / "out", preset="ultrafast")
        with pytest.raises(Crash):
            CGPUJobManager().run(job)
    _die(job)

    attach = _cli("attach", job.job_id)  # found through the per-user jobs index, no -o needed
    _, err = attach.communicate(timeout=300)

    assert attach.returncode == 0, err
    assert "completed: 3 done" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == ["c0.mp4", "c1.mp4", "c2.mp4"]
    again = _cli("attach", job.job_id, "-o", str(tmp_path / "nowhere"))
    assert again.wait(timeout=60) == 2 and "no record of job" in again.stderr.read()


def test_when_a_batch_is_larger_than_a_part_then_it_travels_in_parts_and_comes_back_whole(sleepy, shaky_clip, tmp_path, counter):
    inputs = _inputs(shaky_clip, tmp_path, n=3)
    sent = []
    put = LocalTransport.put

    class Recording(LocalTransport):
        def put(self, local, remote, *, timeout):
            sent.append(Path(remote).name)
            return put(self, local, remote, timeout=timeout)

    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "out", part_bytes=1, backend=Recording()))

    assert result.status is JobStatus.COMPLETED, result.summary()
    assert sorted(n for n in sent if n.startswith("part_")) == ["part_0000.zip", "part_0001.zip", "part_0002.zip"]
    _assert_exactly_once(tmp_path / "out", inputs, counter)


def test_when_a_batch_spread_over_two_runtimes_loses_its_process_then_attach_and_a_rerun_finish_it_once(
        sleepy, shaky_clip, tmp_path, counter):
    """SIGKILL to the CLI while each runtime runs a part: `cgpu-kit attach` brings both parts home, the same
    command again does the items no runtime had taken, and nothing is processed twice."""
    inputs = _inputs(shaky_clip, tmp_path, n=6)  # more than the first two parts hold
    out = tmp_path / "out"
    roots = [tmp_path / "rt one", tmp_path / "rt two"]
    args = ["sleepy", *map(str, inputs), "-o", str(out), "--seconds", "3", "--workers", "1", "-q",
            "--runtime", f"local:{roots[0]}", "--runtime", f"local:{roots[1]}"]
    run = _cli(*args)
    deadline = time.monotonic() + 120
    while not all(list(r.glob("job_*/runtime.log")) for r in roots) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)  # each runtime's first part is launched (its driver logs), none can have finished
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=30)
    parts = sorted((out / "_cgpu_kit").glob("job_*p*"))
    assert len(parts) == 2, parts
    launched = sorted(Path(i["input_path"]).stem + ".bin" for p in parts
                      for i in json.loads((p / "plan.json").read_text())["items"])
    assert 2 <= len(launched) < len(inputs)
    job_id = parts[0].name[len("job_"):].rsplit("p", 1)[0]

    attach = _cli("attach", job_id, "-o", str(out))
    _, err = attach.communicate(timeout=300)
    assert attach.returncode == 0, err
    assert sorted(p.name for p in out.glob("*.bin")) == launched, err  # the launched parts, fetched after the death

    again = _cli(*args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert f"{len(launched)} skipped" in err and f"{len(inputs) - len(launched)} done" in err
    _assert_exactly_once(out, inputs, counter)
