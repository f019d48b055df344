"""Batches on a Dask cluster: a real ``distributed.LocalCluster`` of worker processes, and a ``dask scheduler``
with ``dask worker`` processes started from the command line (one of them killed in the middle of a batch)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TESTS_DIR, named_clips
from media_checks import stream_info

distributed = pytest.importorskip("distributed")

from cgpu_kit import CGPUJobManager, cluster, run  # noqa: E402
from cgpu_kit.cli import main  # noqa: E402
from cgpu_kit.cluster import close_all, scheduler_address  # noqa: E402
from cgpu_kit.results import ItemStatus  # noqa: E402

#: the ``dask`` command of this Python (a pyenv shim could pick another)
DASK = str(Path(sys.executable).parent / "dask") if (Path(sys.executable).parent / "dask").exists() else shutil.which("dask")
ODD_NAMES = ["a clip.mp4", "-lead's $(x).mp4", "plain.mp4"]


@pytest.fixture(autouse=True)
def _disconnect():
    """Each test's clusters are its own: the connections cached by cgpu_kit.cluster go with them."""
    yield
    close_all()


@pytest.fixture(scope="module")
def local_cluster():
    """Two worker processes on this machine, which find the tests' ``support`` package (the sleepy job)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    yield cluster
    cluster.close()


class CommandLineCluster:
    """``dask scheduler`` and ``dask worker`` processes, as an operator starts them on a cluster's machines."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.procs: dict[str, subprocess.Popen] = {}
        self._start("scheduler", ["scheduler", "--scheduler-file", str(self.scheduler_file), "--port", "0",
                                  "--no-dashboard", "--no-show"])
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            assert time.monotonic() < deadline and self.procs["scheduler"].poll() is None, self.log("scheduler")
            time.sleep(0.1)
        self.address = json.loads(self.scheduler_file.read_text())["address"]

    def _start(self, name: str, args: list[str]) -> None:
        with open(self.folder / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)

    def worker(self, name: str, *extra: str) -> None:
        """A worker without a nanny: killing its process loses the worker, as a machine that goes down."""
        self._start(name, ["worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny",
                           "--no-dashboard", "--local-directory", str(self.folder / name), *extra])

    def wait_for(self, count: int) -> dict[str, str]:
        """Wait until ``count`` workers joined; return their addresses by name."""
        with distributed.Client(self.address, timeout="30s") as client:
            client.wait_for_workers(count, timeout=90)
            return {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def cli_cluster(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    cluster = CommandLineCluster(tmp_path_factory.mktemp("dask"))
    yield cluster
    cluster.close()


def test_when_clips_are_stabilized_on_a_two_worker_local_cluster_then_each_comes_back_once_and_cpu_use_is_said(
        local_cluster, shaky_clip, tmp_path, caplog):
    clips = named_clips(shaky_clip, tmp_path / "in", ODD_NAMES)
    caplog.set_level("WARNING", logger="cgpu_kit.cluster")
    result = run("stabilize", clips, tmp_path / "out", backend="dask", scheduler=local_cluster.scheduler_address)

    assert result.success, result.error
    workers = set(local_cluster.scheduler_info["workers"])
    for clip, item in zip(clips, result.items):
        out = tmp_path / "out" / clip.name
        assert item.outputs == [str(out)]
        assert stream_info(out)["frames"] == stream_info(clip)["frames"]
        assert item.metadata["dask_device"] == "cpu" and item.metadata["dask_worker"] in workers
    assert "no worker with a GPU resource" in caplog.text
    ledger = (tmp_path / "out" / "_cgpu_kit" / "ledger.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["out_stem"] for line in ledger) == sorted(Path(n).stem for n in ODD_NAMES)

    again = run("stabilize", clips, tmp_path / "out", backend="dask", scheduler=local_cluster.scheduler_address)
    assert [i.status for i in again.items] == [ItemStatus.SKIPPED] * 3  # the ledger, as on every backend


def test_when_one_worker_declares_a_gpu_then_it_gets_every_part_and_the_address_comes_from_dask_settings(
        sleepy, cli_cluster, shaky_clip, tmp_path, monkeypatch, capsys):
    cli_cluster.worker("gpu", "--resources", "GPU=1")
    cli_cluster.worker("cpu")
    addresses = cli_cluster.wait_for(2)
    files = named_clips(shaky_clip, tmp_path / "in", [f"in {n}.mp4" for n in range(2)])  # two parts
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cli_cluster.address)

    code = main(["sleepy", *map(str, files), "-o", str(tmp_path / "out"), "--backend", "dask", "--json", "--quiet"])

    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert code == 0, result
    assert {i["metadata"]["dask_worker"] for i in result["items"]} == {addresses["gpu"]}
    assert {i["metadata"]["dask_device"] for i in result["items"]} == {"gpu"}
    for f in files:
        assert (tmp_path / "out" / (f.stem + ".bin")).read_bytes() == f.read_bytes()


def test_when_a_worker_is_killed_mid_part_then_its_part_is_rescheduled_and_nothing_that_came_back_is_redone(
        sleepy, cli_cluster, shaky_clip, tmp_path, monkeypatch):
    counter = tmp_path / "processed.txt"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))
    cli_cluster.worker("w0")
    cli_cluster.worker("w1")
    addresses = cli_cluster.wait_for(2)
    monkeypatch.setattr(cluster, "PARTS_PER_SLOT", 1)  # two parts of two items, one at a time in each
    files = named_clips(shaky_clip, tmp_path / "in", [f"item {n}.mp4" for n in range(4)])
    job = sleepy(files, tmp_path / "out", backend=f"dask:{cli_cluster.address}", params={"seconds": 1.0}, workers=1)
    back_before_kill: list[str] = []
    killed: list[str] = []

    def kill_after_first(job, item) -> None:
        if not killed and item.status is ItemStatus.DONE:
            name = next(n for n, a in addresses.items() if a == item.metadata["dask_worker"])
            cli_cluster.procs[name].send_signal(signal.SIGKILL)
            killed.append(name)
            back_before_kill.extend(Path(i.input_path).name for i in job.items if i.status is ItemStatus.DONE)

    job.on_item = kill_after_first
    result = CGPUJobManager().run(job)

    assert killed and result.success, "; ".join(f"{i.status.value} {i.error}" for i in result.items)
    survivor = addresses["w1" if killed == ["w0"] else "w0"]
    assert {i.metadata["dask_worker"] for i in result.items if Path(i.input_path).name not in back_before_kill} == {survivor}
    for f in files:
        assert (tmp_path / "out" / (f.stem + ".bin")).read_bytes() == f.read_bytes()
    processed = counter.read_text().splitlines()
    assert sorted(set(processed)) == sorted(f.name for f in files)
    assert all(processed.count(name) == 1 for name in back_before_kill)
    ledger = (tmp_path / "out" / "_cgpu_kit" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == len(files)  # each output written and recorded once


def test_when_no_scheduler_is_given_anywhere_then_the_cli_says_the_three_ways_and_runs_nothing(
        shaky_clip, tmp_path, monkeypatch, capsys):
    import dask.config

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask.config.set({"scheduler-address": None}):
        code = main(["stabilize", str(shaky_clip()), "-o", str(tmp_path / "out"), "--backend", "dask"])
    err = capsys.readouterr().err
    assert code == 2
    for way in ("--scheduler", "DASK_SCHEDULER_ADDRESS", "scheduler-address", "dask:ADDRESS"):
        assert way in err
    assert not (tmp_path / "out").exists()
    with dask.config.set({"scheduler-address": "tcp://10.0.0.7:8786"}):
        assert scheduler_address("dask") == "tcp://10.0.0.7:8786"


def test_when_a_batch_is_interrupted_then_what_came_back_is_kept_and_the_same_call_again_does_only_the_rest(
        sleepy, local_cluster, shaky_clip, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "PARTS_PER_SLOT", 1)
    files = named_clips(shaky_clip, tmp_path / "in", [f"take {n}.mp4" for n in range(4)])
    backend = f"dask:{local_cluster.scheduler_address}"
    job = sleepy(files, tmp_path / "out", backend=backend, params={"seconds": 2.0}, workers=1)

    def ctrl_c(job, item) -> None:
        raise KeyboardInterrupt  # as if typed while the first item was delivered

    job.on_item = ctrl_c
    manager = CGPUJobManager()
    with pytest.raises(KeyboardInterrupt):
        manager.run(job)
    first = manager.results[job.job_id]
    done = {Path(i.input_path).name for i in first.items if i.status is ItemStatus.DONE}
    assert done and {i.status for i in first.items} <= {ItemStatus.DONE, ItemStatus.CANCELLED}
    assert len(done) < len(files)

    again = run("sleepy", files, tmp_path / "out", backend=backend, params={"seconds": 2.0})
    assert again.success
    assert {Path(i.input_path).name for i in again.items if i.status is ItemStatus.SKIPPED} == done
    for f in files:
        assert (tmp_path / "out" / (f.stem + ".bin")).read_bytes() == f.read_bytes()


def test_when_a_dask_cluster_and_this_machine_are_two_runtimes_then_the_batch_is_spread_over_both_and_done_once(
        sleepy, local_cluster, shaky_clip, tmp_path, monkeypatch, capsys):
    counter = tmp_path / "processed.txt"
    monkeypatch.setenv("SLEEPY_COUNTER", str(counter))  # seen by the local runtime (the cluster started before)
    files = named_clips(shaky_clip, tmp_path / "in", [f"shot {n}.mp4" for n in range(6)])
    dask_spec = f"dask:{local_cluster.scheduler_address}"

    code = main(["sleepy", *map(str, files), "-o", str(tmp_path / "out"), "--runtime", dask_spec, "--runtime", "local",
                 "--workers", "1", "--json", "--quiet"])

    out = capsys.readouterr().out
    result = json.loads(out[out.index("{"):])
    assert code == 0, result
    by_item = [i["metadata"]["runtime"] for i in result["items"]]
    assert set(by_item) == {dask_spec, "local"}  # the first parts went to all three slots at once: both did some
    assert result["metadata"]["runtimes"] == {dask_spec: by_item.count(dask_spec), "local": by_item.count("local")}
    assert all("dask_worker" in i["metadata"] for i in result["items"] if i["metadata"]["runtime"] == dask_spec)
    for f in files:
        assert (tmp_path / "out" / (f.stem + ".bin")).read_bytes() == f.read_bytes()
    here = sorted(Path(i["input_path"]).name for i in result["items"] if i["metadata"]["runtime"] == "local")
    assert sorted(counter.read_text().splitlines()) == here  # this machine ran its items once, and no others
    ledger = (tmp_path / "out" / "_cgpu_kit" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == len(files)  # each output written and recorded once


def test_when_runtime_dask_names_no_scheduler_then_it_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    import dask.config

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with dask.config.set({"scheduler-address": None}):
        code = main(["stabilize", str(tmp_path / "a.mp4"), "-o", str(tmp_path / "out"), "--runtime", "dask",
                     "--runtime", "local"])
    assert code == 2 and "--scheduler" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
