"""The cgpu transport against the stand-in cgpu: framing, faults, login failures, quoting, files both ways."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from cgpu_harness import FAKE, no_pwned  # tests/fakes is on sys.path (conftest)

from cgpu_kit.exceptions import (  # noqa: E402
    CallTimeoutError,
    CgpuAuthError,
    ConnectionLostError,
    MissingDependencyError,
    RemoteCommandError,
    RuntimeLostError,
)
from cgpu_kit.requirements import Requirements  # noqa: E402
from cgpu_kit.transports import get_transport  # noqa: E402
from cgpu_kit.transports.cgpu import CgpuTransport  # noqa: E402

ODD_NAMES = ["$(touch pwned).bin", "it's \"quoted\" `touch pwned`.bin", "-leading dash; rm -rf x.bin", "ünïcødé ✓.bin",
             "new\nline.bin"]


def fake(*args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([str(FAKE), *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=timeout, env={**os.environ, **(env or {})})


# -- the stand-in behaves as the reference says ---------------------------------------------------------------


def test_when_the_fake_runs_a_command_then_it_filters_output_as_cgpu_does(fake_cgpu):
    out = fake("run", r"printf 'one\r\n\n  \n\033[1mbold\033[0m\nexit\nPS1=\n/# cut\n'; echo err >&2; exit 4")
    assert out.returncode == 1  # `exit 4` ends the terminal's shell before cgpu's marker: no exit code
    assert "without reporting an exit code" in out.stderr
    assert out.stdout.splitlines() == ["Authenticated as Test User <test@example.com>", "one", "  ", "bold", "cut", "err"]
    ok = fake("run", "echo hi; (exit 5)")
    assert (ok.returncode, ok.stdout.splitlines()[1:]) == (5, ["hi"])


def test_when_a_remote_program_reads_stdin_then_it_swallows_what_cgpu_types_after_it(fake_cgpu):
    proc = subprocess.Popen([str(FAKE), "run", 'read -r line; echo "got:$line"'], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:  # the terminal lost the rest of what cgpu typed: the call hangs
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
    assert "got:__COLAB_CLI_STATUS=$?" in out.splitlines()
    assert proc.returncode != 0 and (proc.returncode < 0 or "without reporting an exit code" in err)


def test_when_the_fake_copies_then_it_strips_leading_dots_and_refuses_a_missing_folder(fake_cgpu, tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 2048)
    dest = "../.." + str(fake_cgpu.root / "a.bin")
    out = fake("copy", str(src), dest)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["Authenticated as Test User <test@example.com>",
        f"Uploaded: a.bin → {fake_cgpu.root}/a.bin (2.0 KB)"]
    assert (fake_cgpu.root / "a.bin").read_bytes() == src.read_bytes()
    missing = fake("copy", str(src), str(fake_cgpu.root / "no" / "such" / "a.bin"))
    assert missing.returncode == 1 and not (fake_cgpu.root / "no").exists()


# -- run: framing, exit status, lost ends, timeouts ---------------------------------------------------------------


def test_when_a_remote_command_fails_then_its_exit_status_comes_back(fake_cgpu):
    t = CgpuTransport()
    assert t.remote_root == str(fake_cgpu.root)
    result = t.run("echo out; echo; echo err >&2; exit 3", timeout=30)
    assert (result.exit_code, result.output.splitlines()) == (3, ["out", "err"])
    assert t.run("printf 'no newline'", timeout=30).output == "no newline"
    assert t.run("echo a # a comment; echo b", timeout=30).output == "a"
    assert t.run("head -n 2; echo read-nothing", timeout=30).output == "read-nothing"


@pytest.mark.parametrize("fault", ["never_starts", "lose_end"])
def test_when_the_end_marker_never_arrives_then_the_connection_is_lost(fake_cgpu, fault):
    fake_cgpu.set_rules({"fault": fault, "command": "run", "keep": 0.9})
    with pytest.raises(ConnectionLostError):
        CgpuTransport().run("echo begin; echo more; echo end", timeout=30)
    assert fake_cgpu.fired() == [1]


def test_when_a_call_hangs_then_its_timeout_stops_it(fake_cgpu):
    fake_cgpu.set_rules({"fault": "slow", "seconds": 120})
    with pytest.raises(CallTimeoutError):
        CgpuTransport().run("echo hi", timeout=1.5)


@pytest.mark.parametrize("mode", ["missing", "browser"])
def test_when_cgpu_is_not_logged_in_then_a_clear_auth_error_comes_within_the_call(fake_cgpu, monkeypatch, tmp_path, mode):
    monkeypatch.setenv("CGPU_FAKE_AUTH", mode)
    t = CgpuTransport()
    with pytest.raises(CgpuAuthError, match="cgpu status"):
        t.run("echo hi", timeout=60)  # a browser wait that went unnoticed would end in CallTimeoutError instead
    src = tmp_path / "f.bin"
    src.write_bytes(b"1")
    with pytest.raises(CgpuAuthError):
        t.put(src, str(fake_cgpu.root / "f.bin"), timeout=60)
    assert not CgpuAuthError("x").retryable


def test_when_cgpu_is_not_installed_then_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.delenv("CGPU_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependencyError, match="github.com/RohanAdwankar/cgpu"):
        get_transport("cgpu")
    monkeypatch.setenv("CGPU_BIN", str(tmp_path / "nowhere"))
    with pytest.raises(MissingDependencyError, match="CGPU_BIN"):
        CgpuTransport()


# -- files up and down ----------------------------------------------------------------------------------------------


def test_when_files_have_odd_names_then_they_travel_intact_and_run_no_code(fake_cgpu, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = CgpuTransport()
    for n, name in enumerate(ODD_NAMES):
        src = tmp_path / "src" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(os.urandom(3000 + n))
        remote = f"{fake_cgpu.root}/{name}/{name}"
        assert t.put(src, remote, timeout=30) is True
        assert Path(remote).read_bytes() == src.read_bytes()
        back = tmp_path / "back" / name
        t.get(remote, back, timeout=30)
        assert back.read_bytes() == src.read_bytes()
    assert no_pwned(tmp_path, fake_cgpu.root, Path("/"), Path.cwd()) == []


def test_when_a_file_is_already_on_the_runtime_then_put_sends_nothing(fake_cgpu, tmp_path):
    t = CgpuTransport()
    src = tmp_path / "part.zip"
    src.write_bytes(os.urandom(5000))
    remote = f"{fake_cgpu.root}/deep/er/part.zip"
    assert t.put(src, remote, timeout=30) is True
    copies = sum(c["cmd"] == "copy" for c in fake_cgpu.calls())
    assert t.put(src, remote, timeout=30) is False
    assert sum(c["cmd"] == "copy" for c in fake_cgpu.calls()) == copies == 1


def test_when_an_upload_arrives_broken_then_put_fails_and_the_retry_sends_it_whole(fake_cgpu, tmp_path):
    fake_cgpu.set_rules({"fault": "lose_end", "command": "copy", "partial": True})
    t = CgpuTransport()
    src = tmp_path / "part.zip"
    src.write_bytes(os.urandom(5000))
    remote = f"{fake_cgpu.root}/part.zip"
    with pytest.raises(ConnectionLostError, match="did not arrive intact"):
        t.put(src, remote, timeout=30)
    assert t.put(src, remote, timeout=30) is True
    assert Path(remote).read_bytes() == src.read_bytes()


def test_when_a_download_breaks_then_the_next_try_resumes_at_the_first_missing_chunk(fake_cgpu, tmp_path):
    data = os.urandom(100_000)
    remote = fake_cgpu.root / "out_0000.zip"
    remote.write_bytes(data)
    fake_cgpu.set_rules({"fault": "lose_end", "command": "run", "match": "out_0000.zip", "keep": 0.6})
    t = CgpuTransport()
    t.get_chunk_bytes = 8192
    t.get_chunks_per_call = 100
    dest = tmp_path / "got" / "out.zip"
    with pytest.raises(ConnectionLostError):
        t.get(str(remote), dest, timeout=30)
    assert not dest.exists()
    t.get(str(remote), dest, timeout=30)
    assert dest.read_bytes() == data
    starts = [int(re.search(r"out_0000\.zip'? (\d+) ", c["text"]).group(1)) for c in fake_cgpu.calls() if "out_0000.zip" in c["text"]]
    assert starts[0] == 0 and starts[1] > 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.zip"]


def test_when_a_file_is_missing_on_the_runtime_then_get_says_so_and_a_missing_folder_means_recycled(fake_cgpu, tmp_path):
    with pytest.raises(RemoteCommandError, match="no such file"):
        CgpuTransport().get(str(fake_cgpu.root / "nothing.zip"), tmp_path / "x.zip", timeout=30)
    with pytest.raises(RuntimeLostError):
        CgpuTransport().get(str(fake_cgpu.root / "job_x" / "ready" / "out_0000.zip"), tmp_path / "x.zip", timeout=30)


# -- set-up ----------------------------------------------------------------------------------------------------------


def test_when_the_runtime_is_set_up_then_it_runs_this_very_cgpu_kit_and_a_recycle_is_noticed(fake_cgpu):
    import cgpu_kit

    t = CgpuTransport()
    needs = Requirements(apt=("ffmpeg",), pip=("imageio-ffmpeg",))
    assert not t.is_set_up(needs, timeout=30)
    t.setup(needs, timeout=120)
    assert t.is_set_up(needs, timeout=30)
    lib = fake_cgpu.root / "cgpu_kit_runtime" / "lib"
    assert (lib / "cgpu_kit" / "jobs" / "base.py").read_bytes() == (Path(cgpu_kit.__file__).parent / "jobs" / "base.py").read_bytes()
    assert not (fake_cgpu.root / "cgpu_kit_runtime" / "setup.log").exists()  # everything was there: nothing installed
    env = " ".join(f"{k}={v}" for k, v in t.runtime_env().items())
    where = t.run(f"env {env} python3 -c 'import cgpu_kit; print(cgpu_kit.__file__)'", timeout=60).check("import")
    assert where.output.strip() == str(lib / "cgpu_kit" / "__init__.py")
    calls = len(fake_cgpu.calls())
    t.setup(needs, timeout=120)
    assert len(fake_cgpu.calls()) == calls + 1  # the marker is checked, nothing else happens
    fake_cgpu.recycle()
    assert not t.is_set_up(needs, timeout=30)


def test_when_a_requirement_cannot_be_met_then_setup_fails_with_what_is_missing(fake_cgpu):
    t = CgpuTransport()
    with pytest.raises(MissingDependencyError, match="no-such-tool-cgpu-kit"):
        t.setup(Requirements(programs=("no-such-tool-cgpu-kit",)), timeout=120)
    assert (fake_cgpu.root / "cgpu_kit_runtime" / "setup.log").exists()  # the installer ran detached, with its log


def test_when_a_file_is_larger_than_a_copy_piece_then_it_travels_in_pieces_and_a_retry_sends_only_what_is_missing(
    fake_cgpu, tmp_path,
):
    t = CgpuTransport()
    t.copy_piece_bytes = 10_000  # node holds about 10x a copied file: no single copy may be larger than a piece
    src = tmp_path / "it's a model.bin"
    src.write_bytes(os.urandom(25_000))
    remote = f"{fake_cgpu.root}/model dir/it's a model.bin"
    fake_cgpu.set_rules({"fault": "lose_end", "command": "copy", "match": "piece0001", "partial": True})
    with pytest.raises(ConnectionLostError):
        t.put(src, remote, timeout=60)
    assert t.put(src, remote, timeout=60) is True
    assert Path(remote).read_bytes() == src.read_bytes()
    sent = [c["dest"].rsplit(".", 1)[1] for c in fake_cgpu.calls() if c["cmd"] == "copy"]
    assert sent == ["piece0000", "piece0001", "piece0001", "piece0002"]  # piece 0 was not sent again
    assert sorted(p.name for p in Path(remote).parent.iterdir()) == ["it's a model.bin"]
    assert t.put(src, remote, timeout=60) is False


def test_when_a_fresh_runtime_is_still_installing_then_one_state_call_waits_for_the_outcome(tmp_path):
    """A long pip install on a fresh Colab runtime is waited on by the runtime, not polled call after call."""
    import base64
    import json
    import sys
    import threading

    from cgpu_kit.transports import _cgpu_remote

    spec = {"pip": ["some-package"]}
    encoded = base64.b64encode(json.dumps(spec).encode()).decode()
    key = _cgpu_remote.spec_key("abc", spec)
    installer = subprocess.Popen(["sleep", "30"])  # the detached installer, still at work
    (tmp_path / f"setup-{key}.pid").write_text(str(installer.pid))
    script = Path(_cgpu_remote.__file__)

    def ask(*wait: str) -> dict:
        out = subprocess.run([sys.executable, str(script), "state", str(tmp_path), "abc", encoded, *wait],
                             capture_output=True, text=True, timeout=60).stdout
        return json.loads(out.split(_cgpu_remote.PREFIX, 1)[1])

    try:
        assert ask()["state"] == "installing"  # no wait: the answer comes at once
        done = threading.Timer(1.0, lambda: (tmp_path / f"setup-{key}.json").write_text(
            json.dumps({"exit_code": 0, "installed": {"pip": ["some-package"]}})))
        done.start()
        assert ask("30")["state"] == "ready"  # the same call saw the install end
        done.join()
    finally:
        installer.kill()
        installer.wait()
    (tmp_path / f"setup-{key}.json").unlink()
    assert ask("30")["state"] == "dead"  # an installer gone without an outcome is not waited on
