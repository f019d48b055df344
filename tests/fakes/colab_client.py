"""Google's REAL ``colab`` client (PyPI ``google-colab-cli``) for the tests, pointed at the Colab stand-in.

:func:`real_colab_python` finds or builds a Python >= 3.12 virtual environment holding the client (the
package needs 3.12; cgpu-kit itself runs on 3.10+). :class:`ColabClient` writes, for one
:class:`colab_runtime.ColabRuntime`, a ``colab`` launcher with its own home folder (sessions, login token,
settings, history: nothing of the user's) whose Google endpoints are the stand-in's
(``colab_cli_launcher.py``), and the login that ``colab``'s browser flow leaves behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

FAKES = Path(__file__).resolve().parent
PACKAGE = "google-colab-cli==0.7.5"
#: where a Python >= 3.12 may be found, first match wins (pyenv's, then PATH's)
CANDIDATES = ("COLAB_TEST_PYTHON", "~/.pyenv/versions/3.12.1/bin/python", "python3.12", "python3.13", "python3")


def venv_dir() -> Path:
    """``$CGPU_KIT_COLAB_VENV``, else the build cache (shared with ``scripts/setup.sh --test``)."""
    named = os.environ.get("CGPU_KIT_COLAB_VENV")
    if named:
        return Path(named)
    cache = Path(os.environ.get("CGPU_KIT_BUILD_CACHE") or Path.home() / ".cache" / "cgpu_kit")
    return cache / "colab-cli-0.7.5-venv"


def python312() -> str | None:
    for candidate in CANDIDATES:
        if candidate == "COLAB_TEST_PYTHON":
            candidate = os.environ.get(candidate) or ""
        if not candidate:
            continue
        path = shutil.which(os.path.expanduser(candidate))
        if path is None:
            continue
        done = subprocess.run([path, "-c", "import sys; print(sys.version_info >= (3, 12))"], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        if done.stdout.strip() == "True":
            return path
    return None


def real_colab_python() -> tuple[Path | None, str]:
    """(the venv's python holding the real client, "") or (None, why not); builds the venv once."""
    folder = venv_dir()
    python = folder / "bin" / "python"
    if (folder / "ok").is_file():
        return python, ""
    base = python312()
    if base is None:
        return None, "no Python >= 3.12 here (google-colab-cli needs it; set COLAB_TEST_PYTHON)"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if (folder / "ok").is_file():
            return python, ""
        shutil.rmtree(folder, ignore_errors=True)
        for step in ([base, "-m", "venv", str(folder)],
                     [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PACKAGE]):
            done = subprocess.run(step, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                shutil.rmtree(folder, ignore_errors=True)
                return None, f"installing {PACKAGE} failed at {' '.join(step[:4])}: {done.stderr[-500:]}"
        (folder / "ok").write_text(PACKAGE)
    return python, ""


class ColabClient:
    """The real ``colab`` for one Colab stand-in: ``executable`` is what ``COLAB_BIN`` names."""

    def __init__(self, runtime, python: Path) -> None:  # noqa: ANN001 (a colab_runtime.ColabRuntime)
        self.runtime = runtime
        self.home = runtime.base / "colab-home"
        self.config = self.home / ".config" / "colab-cli"
        self.config.mkdir(parents=True, exist_ok=True)
        update_url = f"{runtime.tun.url}/pypi/google-colab-cli/json"  # its daily check, answered by the tun fake
        (self.config / "settings.json").write_text(json.dumps({"update_url": update_url}))
        self.executable = runtime.base / "bin" / "colab"
        self.executable.parent.mkdir(exist_ok=True)
        self.executable.write_text(
            "#!/bin/sh\n"
            f"export HOME='{self.home}' COLAB_FAKE_TUN_URL='{runtime.tun.url}'\n"
            "unset PYTHONPATH PYTHONHOME\n"
            f"exec '{python}' '{FAKES / 'colab_cli_launcher.py'}' \"$@\"\n"
        )
        self.executable.chmod(0o755)
        self.login()

    @property
    def token_file(self) -> Path:
        return self.config / "token.json"

    def login(self, *, expired: bool = False) -> None:
        """The token file ``colab``'s browser login leaves; an expired one makes the client refresh it first."""
        expiry = datetime.now(timezone.utc) + timedelta(hours=-1 if expired else 1)
        self.token_file.write_text(json.dumps({
            "token": "fake-access-token", "refresh_token": "fake-refresh-token",
            "token_uri": "https://oauth2.googleapis.com/token", "client_id": "fake-client.apps.googleusercontent.com",
            "client_secret": "fake-secret", "scopes": ["openid"], "universe_domain": "googleapis.com",
            "account": "", "expiry": expiry.replace(tzinfo=None).isoformat() + "Z",
        }))

    def sessions(self) -> dict:
        path = self.config / "sessions.json"
        return json.loads(path.read_text() or "{}") if path.is_file() else {}

    def forget_sessions(self) -> None:
        (self.config / "sessions.json").unlink(missing_ok=True)
