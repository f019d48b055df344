"""A batch's results read as they grow: each look parses only what was appended, and says what a full read says."""

from __future__ import annotations

import json

import pytest

from cgpu_kit.runtime import status as status_mod
from cgpu_kit.runtime import tally as tally_mod
from cgpu_kit.runtime.status import status
from cgpu_kit.runtime.tally import ResultsTally
from cgpu_kit.transports.local import LocalTransport
from cgpu_kit.util import append_jsonl, read_jsonl


def record(n: int, took: float | None = 1.0, state: str = "done") -> dict:
    return {"item_id": f"i{n:04d}", "status": state, "timings": {"total": took} if took else {},
            "metadata": {"preview": "x" * 2000}}


@pytest.fixture
def counted_loads(monkeypatch):
    """How many JSON documents were parsed (by anyone: count around the call to look at)."""
    calls = []
    real = json.loads
    monkeypatch.setattr(tally_mod.json, "loads", lambda s, *a, **k: (calls.append(1), real(s, *a, **k))[1])
    return calls


def test_each_look_parses_only_the_new_lines_and_says_what_a_full_read_says(tmp_path, counted_loads):
    path = tmp_path / "results.jsonl"
    tally = ResultsTally(path)
    tally.read()  # no file yet
    assert tally.count == 0 and tally.item_seconds is None
    parsed = 0
    for n in range(30):
        append_jsonl(path, record(n, took=float(n % 3 + 1), state="done" if n % 5 else "failed"))
        before = len(counted_loads)
        tally.read()
        parsed += len(counted_loads) - before
        full = read_jsonl(path)
        assert tally.count == len(full) and tally.records(0) == full
        done = [r["timings"]["total"] for r in full if r["status"] == "done"]
        assert tally.item_seconds == (pytest.approx(sum(done) / len(done)) if done else None)
    assert parsed == 30  # one parse a line, not 1 + 2 + ... + 30


def test_a_line_still_being_written_waits_and_a_torn_one_is_skipped_as_a_full_read_skips_it(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl(path, record(0))
    line = json.dumps(record(1)) + "\n"
    with open(path, "a") as f:
        f.write(line[:40])  # half a line: its writer has not finished
    tally = ResultsTally(path).read()
    assert tally.count == 1
    with open(path, "a") as f:
        f.write(line[40:])
    assert tally.read().count == 2 and tally.records(1)[0]["item_id"] == "i0001"
    with open(path, "a") as f:
        f.write('{"item_id": "torn\n')  # a crash mid-line, then the resumed batch goes on
    append_jsonl(path, record(2))
    assert [r["item_id"] for r in tally.read().records(0)] == [r["item_id"] for r in read_jsonl(path)]


def test_a_poll_that_has_some_records_gets_the_rest_and_a_replaced_file_is_read_afresh(tmp_path):
    path = tmp_path / "results.jsonl"
    for n in range(5):
        append_jsonl(path, record(n))
    tally = ResultsTally(path, keep_from=3).read()
    assert tally.count == 5 and [r["item_id"] for r in tally.records(3)] == ["i0003", "i0004"]
    with pytest.raises(ValueError):
        tally.records(2)
    tally.drop_before(4)
    assert [r["item_id"] for r in tally.records(4)] == ["i0004"]
    path.write_text(json.dumps(record(9)) + "\n")  # shorter: another batch's file
    assert tally.read().count == 1 and tally.records(4) == []


def test_a_waiting_poll_and_the_local_runtime_read_each_result_once(tmp_path, counted_loads, monkeypatch):
    work = tmp_path / "job"
    work.mkdir()
    (work / "pid").write_text("999999999")  # no such process: the batch reads as dead, not running
    for n in range(10):
        append_jsonl(work / "results.jsonl", record(n))
    monkeypatch.setattr(status_mod, "_alive", lambda pid_file: True)  # running: the transport keeps its tally
    local = LocalTransport(str(tmp_path / "root"))
    answers = []
    for n in range(10, 20):
        answers.append(local.read_status(str(work), since=n - 10))
        append_jsonl(work / "results.jsonl", record(n))
    assert len(counted_loads) == 19  # each line parsed once, over ten polls
    assert [a["results_count"] for a in answers] == list(range(10, 20))
    assert answers[-1]["results"][0]["item_id"] == "i0009" and answers[-1]["item_seconds"] == 1.0
    assert status(work, 19)["results"][0]["item_id"] == "i0019"  # a look without a tally reads it all
