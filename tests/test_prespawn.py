"""The notebook kernel launched before the driver imports jupyter_client, then adopted (runtime/prespawn.py,
runtime/adopt.py): the template runs in that very kernel, one that jupyter_client would launch otherwise is
killed and a fresh one runs the batch, and no kernel outlives its batch. Real kernels throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
from support.sleepy import tones

from cgpu_kit import CGPUJobManager
from cgpu_kit.results import JobStatus
from cgpu_kit.runtime import kernel, layout, prespawn
from cgpu_kit.testing import processes_gone, processes_in
from cgpu_kit.transports.local import LocalTransport

NATIVE_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def python3_spec(folder: Path, argv: list[str]) -> Path:
    """A ``python3`` kernel spec in ``folder``/kernels (a JUPYTER_PATH entry) launching ``argv``."""
    spec = folder / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"}))
    return spec


def run_notebook(km, work: Path) -> dict:
    """Run, as the driver does (papermill given the started kernel manager), a notebook whose cell reports the
    kernel's pid, working folder and command line."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import json, os\nprint(json.dumps({'pid': os.getpid(), 'cwd': os.getcwd(), "
        "'argv': open('/proc/self/cmdline').read().split(chr(0))}))")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / "probe.ipynb")
    papermill.execute_notebook(str(work / "probe.ipynb"), str(work / "probe.out.ipynb"), cwd=str(work),
                               kernel_name="python3", km=km, progress_bar=False)
    return json.loads(nbformat.read(work / "probe.out.ipynb", as_version=4).cells[0].outputs[0]["text"])


def test_when_a_local_batch_runs_then_its_template_runs_in_the_kernel_launched_before_jupyter_client(sleepy, tmp_path):
    root = tmp_path / "runtime"
    job = sleepy(tones(tmp_path / "in", 3), tmp_path / "out", backend=LocalTransport(str(root)))

    result = CGPUJobManager().run(job)

    assert result.status is JobStatus.COMPLETED, result.summary()
    log = (job.state_dir / layout.RUNTIME_LOG).read_text()
    adopted = [line for line in log.splitlines() if "kernel launched ahead (pid" in line]
    assert len(adopted) == 1 and adopted[0].endswith("adopted"), log
    pid = int(adopted[0].split("(pid ")[1].split(")")[0])
    assert {item.metadata["pid"] for item in result.items} == {pid}  # the items ran in that kernel
    assert processes_gone(root), "a kernel (or the driver) outlived the batch"


def test_when_adopted_then_the_kernel_uses_the_ports_it_bound_itself_and_runs_unencrypted_in_the_work_folder(tmp_path):
    """The kernel is launched with ports 0 and binds free ones itself (ports picked for it could be taken by
    another process before it binds them: it then hangs, and its batch fails a minute later); adoption waits
    for the ports it wrote back into its connection file."""
    work = tmp_path / "job"
    work.mkdir()
    pre = prespawn.spawn(work, "python3")
    assert pre is not None
    assert Path(pre.connection_file).parent == work  # a driver killed now leaves it to go with the folder
    assert Path(pre.connection_file).stat().st_mode & 0o077 == 0  # its key readable by its owner only
    ports = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]
    launched_with = json.loads(Path(pre.connection_file).read_text())
    assert [launched_with[p] for p in ports] == [0] * 5

    km = kernel.start(work, "python3", pre)
    try:
        assert km.provisioner.pid == pre.process.pid and km.has_kernel
        assert km.curve_publickey is None  # the installed python3 spec offers CurveZMQ: not switched on
        written_back = json.loads(Path(pre.connection_file).read_text())
        assert written_back["key"] == launched_with["key"] and all(written_back[p] > 0 for p in ports)
        assert [km.shell_port, km.iopub_port, km.stdin_port, km.control_port, km.hb_port] == [written_back[p] for p in ports]
        kernel.warm(km, ["json"])()  # the standby's warm-up, then the template, on the adopted kernel
        ran = run_notebook(km, work)
        assert ran["pid"] == pre.process.pid and ran["cwd"] == str(work)
        assert json.loads(Path(pre.connection_file).read_text()) == written_back  # nothing here rewrote it
        assert "curve" not in Path(pre.connection_file).read_text()
    finally:
        kernel.stop(km)
    assert pre.process.poll() is not None and processes_gone(work)
    assert not Path(pre.connection_file).exists()


def test_when_jupyter_client_would_launch_another_command_then_a_fresh_kernel_runs_the_notebook(tmp_path, monkeypatch):
    """The spec changed between the launch ahead and the adoption: the kernel launched ahead is killed, its
    connection file removed, and the notebook runs in the kernel jupyter_client launches from the spec it reads."""
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    spec = python3_spec(tmp_path / "jupyter", NATIVE_ARGV)
    work = tmp_path / "job"
    work.mkdir()
    pre = prespawn.spawn(work, "python3")
    assert pre is not None and pre.argv[:4] == NATIVE_ARGV[:4]
    python3_spec(tmp_path / "jupyter", [*NATIVE_ARGV, "--HistoryManager.enabled=False"])
    assert spec.exists()

    km = kernel.start(work, "python3", pre)
    try:
        assert pre.process.poll() is not None  # killed and reaped
        assert not Path(pre.connection_file).exists()
        ran = run_notebook(km, work)
        assert ran["pid"] != pre.process.pid and ran["cwd"] == str(work)
        assert "--HistoryManager.enabled=False" in ran["argv"]  # the spec as jupyter_client read it
    finally:
        kernel.stop(km)
    assert processes_gone(work), "a kernel outlived its notebook"


def test_when_a_kernel_json_names_the_kernel_then_it_is_launched_ahead_with_that_command(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    python3_spec(tmp_path / "jupyter", ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}",
                                        "--HistoryManager.enabled=False"])
    work = tmp_path / "job"
    work.mkdir()
    pre = prespawn.spawn(work, "python3")

    km = kernel.start(work, "python3", pre)
    try:
        assert pre.argv[0] == sys.executable  # "python" is this Python, as jupyter_client reads it
        ran = run_notebook(km, work)
        assert ran["pid"] == pre.process.pid and "--HistoryManager.enabled=False" in ran["argv"]
    finally:
        kernel.stop(km)
    assert processes_gone(work)


def test_when_jupyter_client_is_older_than_7_then_no_kernel_is_launched_ahead(tmp_path):
    """No provisioners to adopt it with: the driver leaves the launch to jupyter_client, as before."""
    old = tmp_path / "old" / "jupyter_client"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("version_info = (6, 1, 12)\n__version__ = '6.1.12'\n")
    work = tmp_path / "job"
    work.mkdir()
    code = ("import sys; from pathlib import Path; from cgpu_kit.runtime import prespawn; "
            "pre = prespawn.spawn(Path(sys.argv[1]), 'python3'); print(pre and f'{pre.process.pid} {pre.connection_file}')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "old"), os.environ.get("PYTHONPATH", "")]))
    old_run = subprocess.run([sys.executable, "-c", code, str(work)], env=env, capture_output=True, text=True, check=True)
    assert old_run.stdout.strip() == "None" and not processes_in(work)
    with open(tmp_path / "said", "w") as said:  # not a pipe: the kernel inherits it and would hold it open
        subprocess.run([sys.executable, "-c", code, str(work)], stdout=said, stderr=subprocess.DEVNULL, check=True)
    pid, connection_file = (tmp_path / "said").read_text().split()  # the installed jupyter_client: launched
    assert int(pid) in processes_in(work)
    os.killpg(int(pid), signal.SIGKILL)
    Path(connection_file).unlink()
    assert processes_gone(work)


def test_a_kernel_that_is_not_an_ipykernel_gets_free_ports_picked_for_it_and_an_ipykernel_binds_its_own(tmp_path):
    picked = json.loads(Path(prespawn._write_connection_file("other", tmp_path)).read_text())
    ports = [picked[p] for p in prespawn._PORTS]
    assert all(p > 0 for p in ports) and len(set(ports)) == len(ports)  # five distinct ports, free when picked
    own = json.loads(Path(prespawn._write_connection_file("python3", tmp_path, pick_ports=False)).read_text())
    assert [own[p] for p in prespawn._PORTS] == [0] * 5 and own["key"] != picked["key"]
