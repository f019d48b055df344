"""The manager: one per process, FIFO, each runtime set up once, transport failures retried, timeouts kept."""

from __future__ import annotations

from pathlib import Path

from conftest import copy_as

from cgpu_kit import CGPUJobManager, ItemStatus, JobStatus, StabilizeJob
from cgpu_kit.exceptions import ConnectionLostError, RemoteCommandError
from cgpu_kit.testing import FakeClock, MockTransport, fail_nth


def failing_runs(times: int, error: BaseException) -> MockTransport:
    """The local runtime behind a MockTransport whose first ``times`` commands fail with ``error``."""
    return MockTransport(fail_nth("run", 1, error, times=times))


def retry_waits(clock: FakeClock) -> list[float]:
    """The retry back-offs among a fake clock's sleeps (polls sleep the transport's 0.25 s)."""
    return [s for s in clock.sleeps if s >= 1.0]


def test_the_manager_is_one_per_process():
    assert CGPUJobManager() is CGPUJobManager()


def test_when_two_jobs_are_submitted_then_they_run_first_in_first_out_and_the_runtime_is_set_up_once(shaky_clip, tmp_path):
    transport = MockTransport()
    clip = shaky_clip(width=160, height=120, frames=20, jitter=8)
    manager = CGPUJobManager()
    first = StabilizeJob([clip], tmp_path / "a", backend=transport, preset="ultrafast")
    second = StabilizeJob([clip], tmp_path / "b", backend=transport, preset="ultrafast", smoothing=5)
    order = []
    first.on_item = second.on_item = lambda job, item: order.append(job.job_id)

    assert manager.submit(first) == first.job_id
    assert manager.submit(second) == second.job_id
    assert list(manager.queue) == [first, second]
    results = manager.process_queue()

    assert [r.job_id for r in results] == [first.job_id, second.job_id] == order
    assert all(r.status is JobStatus.COMPLETED for r in results)
    assert transport.count("setup") == 1
    state = manager.sessions[transport.key]
    assert state.setups == 1 and state.initialised_at is not None
    assert not manager.queue


def test_when_the_manager_has_two_runtimes_then_each_queued_job_is_spread_over_both_and_each_is_set_up_once(
        sleepy, shaky_clip, tmp_path):
    runtimes = [MockTransport(), MockTransport()]
    clips = [copy_as(shaky_clip(width=64, height=48, frames=8, jitter=4, audio=False, seed=k), tmp_path / "in" / f"c {k}.mp4")
             for k in range(4)]
    manager = CGPUJobManager()
    manager.runtimes = runtimes  # for every job that names none
    jobs = [sleepy(clips, tmp_path / name, seconds=0.5, workers=1) for name in ("a", "b")]
    for job in jobs:
        manager.submit(job)

    results = manager.process_queue()

    assert [r.status for r in results] == [JobStatus.COMPLETED] * 2
    for result in results:
        assert sorted(result.metadata["runtimes"]) == sorted(t.key for t in runtimes)
        assert all(n > 0 for n in result.metadata["runtimes"].values())  # the first parts go to both at once
        assert {i.metadata["runtime"] for i in result.items} == {t.key for t in runtimes}
    for name in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / name).glob("*.bin")) == [f"c {k}.bin" for k in range(4)]
    assert [t.count("setup") for t in runtimes] == [1, 1]  # set up for the first job, not again for the second


def test_when_transport_calls_fail_twice_then_they_are_retried_with_exponential_backoff(shaky_clip, tmp_path):
    manager = CGPUJobManager()
    manager.pacing.clock = clock = FakeClock()
    transport = failing_runs(2, ConnectionLostError("injected failure"))

    result = manager.run(StabilizeJob([shaky_clip(width=160, height=120, frames=20, jitter=8)], tmp_path / "o", backend=transport,
        preset="ultrafast"))

    assert result.status is JobStatus.COMPLETED, result.summary()
    assert retry_waits(clock) == [1.0, 2.0]
    assert result.metadata["transport_retries"] == 2


def test_when_the_transport_keeps_failing_then_the_job_fails_after_three_attempts_with_the_reason(shaky_clip, tmp_path):
    manager = CGPUJobManager()
    manager.pacing.clock = clock = FakeClock()
    transport = failing_runs(3, ConnectionLostError("injected failure"))

    result = manager.run(StabilizeJob([shaky_clip(width=160, height=120, frames=20, jitter=8)], tmp_path / "o", backend=transport))

    assert result.status is JobStatus.FAILED
    assert "injected failure" in result.error
    runs = [c.target for c in transport.calls if c.method == "run"]
    assert runs[:3] == [runs[0]] * 3 and "mkdir" in runs[0]
    assert retry_waits(clock) == [1.0, 2.0]
    assert result.items[0].status is ItemStatus.FAILED and "injected failure" in result.items[0].error


def test_when_a_remote_command_fails_then_it_is_not_retried(shaky_clip, tmp_path):
    manager = CGPUJobManager()
    manager.pacing.clock = clock = FakeClock()
    transport = failing_runs(1, RemoteCommandError("injected", exit_code=7))

    result = manager.run(StabilizeJob([shaky_clip(width=160, height=120, frames=20, jitter=8)], tmp_path / "o", backend=transport))

    assert result.status is JobStatus.FAILED and "injected" in result.error
    runs = [c.target for c in transport.calls if c.method == "run"]
    assert "mkdir" in runs[0] and runs.count(runs[0]) == 1 and retry_waits(clock) == []


def test_when_an_item_runs_past_its_timeout_then_it_fails_alone(sleepy, shaky_clip, tmp_path):
    from conftest import copy_as

    clip = shaky_clip(width=160, height=120, frames=20, jitter=8)
    slow = copy_as(clip, tmp_path / "slow.mp4")
    result = CGPUJobManager().run(sleepy([slow], tmp_path / "o", seconds=30, item_timeout=0.5))
    assert result.items[0].status is ItemStatus.FAILED
    assert "timed out after" in result.items[0].error and "slow.mp4" in result.items[0].error


def test_when_a_job_runs_past_its_timeout_on_the_managers_clock_then_it_ends_failed_and_its_log_is_kept(sleepy, shaky_clip, tmp_path):
    from conftest import copy_as

    clip = shaky_clip(width=160, height=120, frames=20, jitter=8)
    inputs = [copy_as(clip, tmp_path / f"c{n}.mp4") for n in range(2)]
    manager = CGPUJobManager()
    manager.pacing.clock = clock = FakeClock()  # the 30 s timeout passes on the manager's clock, not in real time
    result = manager.run(sleepy(inputs, tmp_path / "o", seconds=600, timeout=30, workers=1))
    assert result.status is JobStatus.FAILED
    assert "timed out after 30s (the job timeout)" in result.error
    # every wait was a poll interval of the local runtime, on the fake clock; past the timeout, the batch
    # stopped within the grace period
    assert set(clock.sleeps) == {0.25} and 30 < clock.now() < 30 + manager.pacing.stop_grace
    assert all(i.status is ItemStatus.FAILED for i in result.items)
    assert result.log_path and Path(result.log_path).exists()
