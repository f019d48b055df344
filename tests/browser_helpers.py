"""A JupyterLab server and a headless Chromium for the end-to-end panel test.

The server listens on loopback with a fixed token, keeps its config, data and runtime files in a temporary
folder, runs as its own process session and is stopped by its PID. Chromium is Debian's (``/usr/bin/chromium``)
driven by Playwright through ``executable_path``, with the flags that keep it off the network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
TOKEN = "cgpu-kit-browser-test"


def chromium_path() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_for_browser_test() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    if chromium_path() is None:
        return "Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh --test does)"
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab"),
                            ("ipywidgets", "ipywidgets"), ("jupyterlab_widgets", "jupyterlab_widgets")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install -e '.[widgets,test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``with JupyterLab(root, home) as lab:`` a Lab server on ``root``, gone when the block ends."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self.port = free_port()
        self.log_path = home / "jupyter.log"
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={TOKEN}"

    def api(self, path: str) -> object:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/{path}",
                                         headers={"Authorization": f"token {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    def __enter__(self) -> JupyterLab:
        config, data, runtime = (self.home / n for n in ("config", "data", "runtime"))
        settings = config / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # no news or update toasts over the page (and no attempt to fetch them)
        (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(data),
                   JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_PLATFORM_DIRS="1")
        argv = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={self.root}", "--ServerApp.allow_root=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        try:
            self._until(lambda: self.api("api/status") is not None, 60, "the server to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to the server (it shuts its kernels down), then SIGKILL to its process group if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_kernel_idle(self, notebook: str, timeout: float = 60) -> None:
        """Wait until the server itself reports the notebook's kernel idle (Lab's indicator says so too early)."""
        def idle() -> bool:
            sessions = self.api("api/sessions")
            return any(s.get("path") == notebook and (s.get("kernel") or {}).get("execution_state") == "idle"
                       for s in sessions)
        self._until(idle, timeout, f"the kernel of {notebook} to be idle")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _until(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout:.0f}s for {what}:\n{self.log_tail()}")
