"""A part sent ahead is handed to the driver of the part before it on the same runtime, and runs in that driver's
kernel once the part before ends well (runtime/handover.py); otherwise it is left to its launch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.sleepy import tones

from cgpu_kit import CGPUJobManager
from cgpu_kit.remote import RemoteBatch
from cgpu_kit.runtime import layout
from cgpu_kit.testing import processes_gone
from cgpu_kit.transports.local import LocalTransport
from cgpu_kit.util import read_jsonl


class NoStandby(LocalTransport):
    """The local runtime without the standby it starts while inputs are checked: the parts here are sent as
    the lookahead sends a runtime's next part."""

    def start_ahead(self, command: str) -> bool:
        return False


@pytest.fixture
def parts(sleepy, tmp_path, request):
    """Two prepared, uploaded parts of sleepy items on one local runtime (its folder named by the test's
    parameter, else ``runtime``): (transport, part before, part after)."""
    CGPUJobManager.reset()
    transport = NoStandby(str(tmp_path / getattr(request, "param", "runtime")))
    manager = CGPUJobManager()
    before = sleepy(tones(tmp_path / "in_a", 2), tmp_path / "out_a", backend=transport, seconds=1.5, workers=1)
    after = sleepy(tones(tmp_path / "in_b", 1), tmp_path / "out_b", backend=transport, seconds=0.1, workers=1)
    for job in (before, after):
        manager.prepare(job)
        job.remote_root = transport.remote_root
        job.upload(transport)
    yield transport, before, after
    CGPUJobManager.reset()
    assert processes_gone(Path(transport.remote_root)), "a driver or kernel outlived the parts"


def wait_for(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never came"
        time.sleep(0.05)


def start(transport, before, after, *, launch_after_early: bool = False, cancel_before: bool = False) -> tuple[Path, Path]:
    a, b = Path(before.remote_work_dir), Path(after.remote_work_dir)
    assert RemoteBatch(transport, str(a)).launch() == "launched"
    wait_for(a / layout.PROGRESS)  # its template runs
    ahead = RemoteBatch(transport, str(b))
    ahead.send_ahead(after.standby_command(ahead, after=str(a)))
    if launch_after_early:  # the launch of the part after comes while the part before still runs
        assert ahead.launch() == "launched"
    if cancel_before:
        (a / layout.CANCEL).touch()
    wait_for(a / layout.STATUS)
    return a, b


def kernel_pids(work_dir: Path) -> set[int]:
    return {rec["metadata"]["pid"] for rec in read_jsonl(work_dir / layout.RESULTS) if rec.get("metadata")}


# a remote root whose path holds a newline: each part is still one line of the part before's ``next``
@pytest.mark.parametrize("parts", ["runtime", "run\ntime $(x)"], indirect=True, ids=["plain", "newline"])
def test_a_part_sent_ahead_runs_in_the_kernel_of_the_part_before_once_it_ends_well(parts):
    transport, before, after = parts
    a, b = start(transport, before, after)

    wait_for(b / layout.STATUS)
    assert json.loads((b / layout.STATUS).read_text())["exit_code"] == 0
    assert [r["status"] for r in read_jsonl(b / layout.RESULTS)] == ["done"]
    assert kernel_pids(b) == kernel_pids(a) and len(kernel_pids(a)) == 1  # one kernel ran both
    assert (b / layout.PID).read_text().strip() == (a / layout.PID).read_text().strip()  # and one driver
    log = (b / layout.RUNTIME_LOG).read_text()
    assert "handed over by the part before it" in log and "Input Notebook" in log
    assert "standby driver ready" not in log  # no driver or kernel of its own was started
    assert (a / layout.NEXT_CLOSED).exists()
    assert RemoteBatch(transport, str(b)).launch() == "finished"  # a launch that comes late finds it done


def test_after_a_cancelled_part_the_part_sent_ahead_is_left_to_its_launch_which_starts_a_driver_of_its_own(parts):
    transport, before, after = parts
    a, b = start(transport, before, after, cancel_before=True)

    wait_for(b / f"{layout.STANDBY}.expired", seconds=10)  # given back by the driver of the part before
    assert not (b / layout.STATUS).exists()
    assert RemoteBatch(transport, str(b)).launch() == "launched"
    wait_for(b / layout.STATUS)
    assert [r["status"] for r in read_jsonl(b / layout.RESULTS)] == ["done"]
    assert kernel_pids(b)  # its item ran, in a kernel of its own: a driver of its own started it
    assert (b / layout.PID).read_text().strip() != (a / layout.PID).read_text().strip()
    assert "handed over" not in (b / layout.RUNTIME_LOG).read_text()


def test_a_part_whose_launch_claimed_it_early_runs_even_after_the_part_before_was_cancelled(parts):
    transport, before, after = parts
    a, b = start(transport, before, after, launch_after_early=True, cancel_before=True)

    wait_for(b / layout.STATUS)  # the launch said "launched": it runs
    assert json.loads((a / layout.STATUS).read_text())["cancelled"]
    assert [r["status"] for r in read_jsonl(b / layout.RESULTS)] == ["done"]
    assert (b / layout.PID).read_text().strip() == (a / layout.PID).read_text().strip()  # by the driver of the part before
    assert "handed over by the part before it" in (b / layout.RUNTIME_LOG).read_text()


def test_a_part_sent_after_the_part_before_closed_its_door_gets_a_standby_driver_of_its_own(parts):
    transport, before, after = parts
    a, b = Path(before.remote_work_dir), Path(after.remote_work_dir)
    assert RemoteBatch(transport, str(a)).launch() == "launched"
    wait_for(a / layout.STATUS)
    ahead = RemoteBatch(transport, str(b))
    ahead.send_ahead(after.standby_command(ahead, after=str(a)))

    wait_for(b / layout.STATUS)  # the standby started itself: the part before had ended well
    assert [r["status"] for r in read_jsonl(b / layout.RESULTS)] == ["done"]
    log = (b / layout.RUNTIME_LOG).read_text()
    assert "standby driver started itself" in log and "handed over" not in log
