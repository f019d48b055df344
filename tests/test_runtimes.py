"""Several runtimes at once: one batch spread over them (cgpu_kit/pool.py), --runtime specs (cgpu_kit/runtimes.py)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from support.sleepy import tones

from cgpu_kit import CGPUJobManager
from cgpu_kit.cli import main
from cgpu_kit.exceptions import CallRefusedError, CgpuAuthError, ParameterError
from cgpu_kit.results import ItemStatus, JobStatus
from cgpu_kit.runtimes import parse_runtime
from cgpu_kit.testing import MockTransport


def slow_calls(seconds: float):
    """A handler that makes every call of a MockTransport take ``seconds`` longer (a far-away runtime)."""
    return lambda call: time.sleep(seconds)


def processed(counter: Path) -> list[str]:
    return counter.read_text().splitlines() if counter.exists() else []


def delivered(out: Path) -> list[str]:
    """Output stems the ledger recorded (one record per delivery)."""
    lines = (out / "_cgpu_kit" / "ledger.jsonl").read_text().splitlines()
    return [json.loads(line)["out_stem"] for line in lines]


# -- specs -------------------------------------------------------------------------------------------------


def test_specs_name_a_kind_an_argument_and_a_remote_root(tmp_path):
    account = tmp_path / "account two"
    account.mkdir()
    assert parse_runtime("cgpu").backend == "cgpu"
    spec = parse_runtime(f"cgpu:{account}@/content/work")
    assert (spec.backend, spec.remote_root) == (f"cgpu:{account}", "/content/work")
    local = parse_runtime(f"local:{tmp_path}/w")
    assert (local.backend, local.remote_root) == ("local", f"{tmp_path}/w")
    assert parse_runtime("colab:s1").backend == "colab:s1"


@pytest.mark.parametrize("bad, words", [
    ("gpu-box", "unknown kind 'gpu-box'"),
    ("cgpu@", "nothing after '@'"),
    ("colab:", "nothing after 'colab:'"),
    ("cgpu:/no/such/account", "config folder /no/such/account does not exist"),
])
def test_a_bad_spec_is_refused_naming_it_and_the_accepted_forms(bad, words):
    with pytest.raises(ParameterError) as err:
        parse_runtime(bad)
    assert words in str(err.value) and repr(bad) in str(err.value)
    if "unknown kind" in words:
        assert "local:DIR" in str(err.value) and "cgpu:CONFIG_DIR" in str(err.value)


def test_the_cli_refuses_a_bad_runtime_with_exit_2_before_anything_runs(tmp_path, capsys):
    clip = tones(tmp_path / "in", 1)[0]
    code = main(["stabilize", str(clip), "-o", str(tmp_path / "o"), "--runtime", "local",
                 "--runtime", "quantum:7"])
    assert code == 2
    assert "quantum:7" in capsys.readouterr().err
    assert not (tmp_path / "o" / "_cgpu_kit" / "ledger.jsonl").exists()


def test_parts_are_few_and_the_last_ones_end_together():
    from cgpu_kit.pool import part_size

    # 24 items on 2 runtimes: a first round of 8 each, then the 8 left as 4 and 4 (two parts per runtime)
    assert part_size(24, 24, 2, 2) == 8 and part_size(24, 16, 2, 2) == 8
    assert part_size(24, 8, 2, 2) == 4 and part_size(24, 4, 2, 2) == 4
    # on 4 runtimes: 4 each, then the 8 left as 2 each; never more than a fair share of what is left
    assert part_size(24, 24, 4, 4) == 4 and part_size(24, 8, 4, 4) == 2 and part_size(24, 1, 4, 4) == 1
    # when a part costs 10 items' worth of overhead, the second round is not cut finer than the runtimes alive
    assert part_size(24, 8, 4, 4, least=10) == 2 and part_size(24, 8, 4, 2, least=10) == 4
    assert part_size(24, 12, 4, 1, least=10) == 12  # one runtime left alive takes what is left, in one part


# -- the pool ----------------------------------------------------------------------------------------------


def test_a_batch_over_a_fast_and_a_slow_runtime_is_done_once_and_says_which_runtime_did_what(
        sleepy, tmp_path, monkeypatch):
    counter = tmp_path / "counter"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))
    inputs = tones(tmp_path / "in", 4)
    fast, slow = MockTransport(), MockTransport(slow_calls(0.3))
    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "o", seconds=0.2, runtimes=[fast, slow]))
    assert result.status is JobStatus.COMPLETED, result.error
    assert sorted(processed(counter)) == sorted(p.name for p in inputs)  # each item processed once
    assert sorted(delivered(tmp_path / "o")) == sorted(p.stem for p in inputs)  # and delivered once
    assert all(Path(i.output_path).read_bytes() == Path(i.input_path).read_bytes() for i in result.items)
    by_runtime = result.metadata["runtimes"]
    assert set(by_runtime) == {fast.key, slow.key} and sum(by_runtime.values()) == 4
    assert {i.metadata["runtime"] for i in result.items} <= set(by_runtime)
    assert "by runtime:" in result.summary()


def test_a_runtime_that_dies_mid_batch_is_dropped_and_its_items_finish_on_the_other(sleepy, tmp_path, monkeypatch):
    counter = tmp_path / "counter"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))
    inputs = tones(tmp_path / "in", 4)

    def dies_at_its_first_poll(call):
        if call.method == "status":
            raise CallRefusedError("quota exceeded: the runtime was taken back")

    good, dying = MockTransport(), MockTransport(dies_at_its_first_poll)
    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "o", seconds=0.2, runtimes=[dying, good]))
    assert result.status is JobStatus.COMPLETED, result.error
    assert "quota exceeded" in result.metadata["dropped"][dying.key]
    assert result.metadata["runtimes"][good.key] == 4
    assert {i.metadata["runtime"] for i in result.items} == {good.key}
    assert sorted(delivered(tmp_path / "o")) == sorted(p.stem for p in inputs)  # none delivered twice
    assert f"dropped: {dying.key}" in result.summary()


def test_a_runtime_whose_login_is_missing_is_dropped_named_and_the_batch_runs_on_the_others(sleepy, tmp_path):
    inputs = tones(tmp_path / "in", 2)

    def not_logged_in(call):
        if call.method in ("setup", "is_set_up", "run"):
            raise CgpuAuthError("cgpu is not logged in: run `cgpu status` in a terminal")

    good, logged_out = MockTransport(), MockTransport(not_logged_in)
    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "o", runtimes=[logged_out, good]))
    assert result.status is JobStatus.COMPLETED, result.error
    assert "not logged in" in result.metadata["dropped"][logged_out.key]
    assert result.metadata["runtimes"] == {logged_out.key: 0, good.key: 2}


def test_when_every_runtime_is_dropped_the_items_fail_with_the_reasons(sleepy, tmp_path):
    def refused(call):
        raise CgpuAuthError("no stored login")

    a, b = MockTransport(refused), MockTransport(refused)
    result = CGPUJobManager().run(sleepy(tones(tmp_path / "in", 2), tmp_path / "o", runtimes=[a, b]))
    assert result.status is JobStatus.FAILED
    assert "every runtime was dropped" in result.error and a.key in result.error and b.key in result.error
    assert all(i.status is ItemStatus.FAILED and "no stored login" in i.error for i in result.items)


def test_a_stopped_multi_runtime_batch_is_finished_by_running_it_again_without_redoing_anything(
        sleepy, tmp_path, monkeypatch, capsys):
    counter = tmp_path / "counter"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))
    inputs = tones(tmp_path / "in", 4)
    runtimes = [f"local:{tmp_path}/r1", f"local:{tmp_path}/r2"]
    manager = CGPUJobManager()
    # items long enough that the cancel lands while each part's second item runs, however loaded the machine
    job = sleepy(inputs, tmp_path / "o", seconds=1.5, workers=1, runtimes=runtimes)
    job.on_item = lambda j, item: j.cancel()  # stop as soon as the first item is delivered (as Ctrl-C does)
    first = manager.run(job)
    assert first.status is JobStatus.CANCELLED
    done_first = {i.input_path for i in first.items if i.ok}
    assert 1 <= len(done_first) < 4
    # the same command again, from the CLI: the open part-jobs are picked up, the rest spread over both runtimes
    code = main(["sleepy", *map(str, inputs), "-o", str(tmp_path / "o"), "--seconds", "1.5", "-q",
                 "--runtime", runtimes[0], "--runtime", runtimes[1]])
    assert code == 0
    assert "completed" in capsys.readouterr().err
    assert sorted(delivered(tmp_path / "o")) == sorted(p.stem for p in inputs)  # every item delivered once
    assert all(Path(tmp_path / "o" / f"{p.stem}.bin").exists() for p in inputs)
    assert sorted(processed(counter)) == sorted(p.name for p in inputs)  # nothing finished was redone


class CgpuWithPlugins:
    """The cgpu transport whose runtime also imports the tests' ``support`` package (the sleepy processor), as a
    plugin installed there would be."""

    def __new__(cls, remote_root: str):
        import os

        from cgpu_kit.transports.cgpu import CgpuTransport

        class Transport(CgpuTransport):
            def runtime_env(self) -> dict[str, str]:
                env = dict(super().runtime_env())
                env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(Path(__file__).resolve().parent)])
                return env

        return Transport(remote_root=remote_root)


def test_a_batch_over_two_cgpu_runtimes_leaves_nothing_on_either_and_pays_few_calls_per_part(
        sleepy, fake_cgpu, tmp_path, monkeypatch):
    from cgpu_kit.pool import part_plans

    counter = tmp_path / "counter"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))
    inputs = tones(tmp_path / "in", 6)
    a, b = CgpuWithPlugins(str(fake_cgpu.root / "a")), CgpuWithPlugins(str(fake_cgpu.root / "b"))
    result = CGPUJobManager().run(sleepy(inputs, tmp_path / "o", seconds=0.2, workers=1, runtimes=[a, b]))
    assert result.status is JobStatus.COMPLETED, result.error
    assert sorted(processed(counter)) == sorted(p.name for p in inputs)  # each item processed once
    assert sorted(delivered(tmp_path / "o")) == sorted(p.stem for p in inputs)  # and delivered once
    assert sum(result.metadata["runtimes"].values()) == 6
    # every part's work folder was removed from its runtime (in the background, while the next part ran),
    # and no part is left open for `cgpu-kit attach` or a later run to pick up
    assert [p for r in ("a", "b") for p in (fake_cgpu.root / r).glob(f"job_{result.job_id}*")] == []
    assert part_plans(result.job_id, tmp_path / "o") == []
    # 6 items on 2 runtimes: a first round of 2 each, then 1 each (two parts per runtime, no more); a part
    # costs a check, a copy, a land-and-launch, a poll or two and a removal
    parts = sorted((tmp_path / "o" / "_cgpu_kit").glob(f"job_{result.job_id}p*"))
    assert len(parts) == 4
    for root in (fake_cgpu.root / "a", fake_cgpu.root / "b"):
        calls = [c for c in fake_cgpu.calls() if str(root) in c["text"]]
        assert 0 < len(calls) <= 2 * 7, [c["text"][:80] for c in calls]


# -- the real cgpu client on two Colab accounts ---------------------------------------------------------------


def real_cgpu_dir():
    import colab_runtime  # tests/fakes is on sys.path (conftest)

    return colab_runtime.real_cgpu_dir()


@pytest.mark.timeout(900)
@pytest.mark.skipif(real_cgpu_dir()[0] is None, reason="the real cgpu client is not available")
def test_two_colab_accounts_through_the_real_cgpu_client_share_one_batch(
        shaky_clip, tmp_path_factory, tmp_path, monkeypatch, fresh_manager):
    """Two stand-in Colab runtimes, each the runtime of one account (its own cgpu config folder); one cgpu."""
    import secrets

    import colab_runtime
    from conftest import named_clips

    from cgpu_kit.jobs.stabilize import StabilizeJob
    from cgpu_kit.manager import RetryPolicy

    cgpu_dir = real_cgpu_dir()[0]
    first = colab_runtime.ColabRuntime(tmp_path_factory.mktemp("colab_a"), cgpu_dir)
    second = colab_runtime.ColabRuntime(tmp_path_factory.mktemp("colab_b"), cgpu_dir)
    root = f"/tmp/cgpu_kit_rt_{secrets.token_hex(6)}"
    try:
        monkeypatch.setenv("CGPU_BIN", str(first.executable))  # one cgpu; the account is the config folder
        monkeypatch.setenv("CGPU_KIT_POLL_INTERVAL", "0.5")
        monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "0")
        fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
        # both stand-ins serve the same machine's files: each account gets its own remote root
        runtimes = [f"cgpu:{first.config_dir}@{root}_a", f"cgpu:{second.config_dir}@{root}_b"]
        inputs = named_clips(shaky_clip, tmp_path / "in", [f"clip {n}.mp4" for n in range(3)],
                             width=96, height=64, frames=12, jitter=6)
        result = fresh_manager.run(StabilizeJob(inputs, tmp_path / "out", preset="ultrafast", runtimes=runtimes))
        assert result.status is JobStatus.COMPLETED, result.error
        by_runtime = result.metadata["runtimes"]
        assert set(by_runtime) == set(runtimes) and sum(by_runtime.values()) == 3
        assert all(n >= 1 for n in by_runtime.values()), by_runtime  # both accounts did items
        assert sorted(delivered(tmp_path / "out")) == sorted(p.stem for p in inputs)
        keys = {state.transport.key for state in fresh_manager.sessions.values()}
        assert {f"cgpu:{first.config_dir}:{root}_a", f"cgpu:{second.config_dir}:{root}_b"} <= keys
    finally:
        for rt in (first, second):
            rt.close()
        for suffix in ("_a", "_b"):
            import shutil

            shutil.rmtree(root + suffix, ignore_errors=True)


def test_a_runtimes_next_part_is_sent_while_its_part_ends_and_each_item_still_runs_once(
        sleepy, fake_cgpu, tmp_path, monkeypatch, caplog):
    counter = tmp_path / "counter"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))
    inputs = tones(tmp_path / "in", 8)
    a, b = CgpuWithPlugins(str(fake_cgpu.root / "a")), CgpuWithPlugins(str(fake_cgpu.root / "b"))
    with caplog.at_level(logging.INFO, logger="cgpu_kit.lookahead"):
        result = CGPUJobManager().run(sleepy(inputs, tmp_path / "o", seconds=1.0, workers=1, runtimes=[a, b]))
    assert result.status is JobStatus.COMPLETED, result.error
    assert sorted(processed(counter)) == sorted(p.name for p in inputs)  # each item processed once
    assert sorted(delivered(tmp_path / "o")) == sorted(p.stem for p in inputs)  # and delivered once
    # two rounds (3 items each, then 1): each runtime's second part went while its first was ending, and ran
    # in the driver and kernel of its first (handed over: runtime/handover.py), or, where the first had ended
    # before it came, on a standby driver of its own
    ahead = [r.getMessage() for r in caplog.records if "sent ahead" in r.getMessage()]
    assert len(ahead) == 2, ahead
    logs = [p.read_text() for p in (tmp_path / "o" / "_cgpu_kit").glob(f"job_{result.job_id}p*/runtime.log")]
    handed = sum("handed over by the part before it" in log for log in logs)
    assert handed + sum("standby driver claimed" in log for log in logs) == 2, logs
    kernels = {label: {i.metadata["pid"] for i in result.items if i.metadata["runtime"] == label}
               for label in result.metadata["runtimes"]}
    assert sum(len(pids) == 1 for pids in kernels.values()) == handed, kernels  # a part handed over: one kernel
    assert [p for r in ("a", "b") for p in (fake_cgpu.root / r).glob(f"job_{result.job_id}*")] == []


def test_a_standby_sent_ahead_starts_itself_when_the_batch_before_it_ends_well_and_not_when_it_was_cancelled(
        tmp_path, monkeypatch):
    import threading

    from cgpu_kit.runtime import layout, standby

    monkeypatch.setenv("CGPU_KIT_STANDBY_SECONDS", "3")
    outcomes = {}
    for case, status in (("good", {"exit_code": 0}), ("cancelled", {"exit_code": 0, "cancelled": True}),
                         ("failed", {"exit_code": 1})):
        before, mine = tmp_path / case / "job_1", tmp_path / case / "job_2"
        before.mkdir(parents=True)
        mine.mkdir()
        (mine / layout.STANDBY).write_text(str(os.getpid()))  # as the shell that started "this" standby wrote it
        ending = threading.Timer(0.3, lambda b=before, s=status: (b / layout.STATUS).write_text(json.dumps(s)))
        ending.start()
        claimed, _ = standby._wait_for_claim(mine, None, [], after=before)
        outcomes[case] = (claimed, (mine / layout.PID).exists())
    assert outcomes == {"good": (True, True), "cancelled": (False, False), "failed": (False, False)}
