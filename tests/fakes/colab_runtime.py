"""What stands between the REAL cgpu client and Google, so that the tests can run cgpu as a user does.

- :class:`TunServer`: a small fake of Colab's "tun" API (``/tun/m/assignments``, ``assign``, ``unassign``,
  ``ccu-info``, ``runtime-proxy-token``, ``keep-alive``), with the endpoints, query parameters and JSON shapes
  of cgpu's ``src/colab/client.ts`` and ``api.ts`` and of Google's ``colab_cli/client.py``; every JSON answer
  carries Colab's ``)]}'`` prefix, and a request without the access token the OAuth fakes hand out is refused.
  It also answers Google's OAuth token endpoint (``POST /token``, for the ``colab`` client; refused while a
  flag file exists) and PyPI's JSON for ``google-colab-cli`` (its daily update check).
- ``fake_google_oauth.mjs``: preloaded into node (``NODE_OPTIONS=--import=...``), it replaces
  google-auth-library's ``OAuth2Client.refreshAccessToken``; refused while a flag file exists.
  ``slow_typing.mjs``, preloaded too, delays cgpu's typing into a new terminal by ``$CGPU_FAKE_TYPE_DELAY_MS``.
- :class:`ColabRuntime`: a REAL ``jupyter_server`` (terminals on, stock contents manager: hidden paths
  refused) on 127.0.0.1, started in ``/`` with ``root_dir='/'`` as Colab's is, which takes the runtime proxy
  token of the tun fake (``colab_identity.py``). Its ``cgpu`` is a launcher of the real client with its own
  config folder (``CGPU_CONFIG_DIR``) and a stored login.

The real client is found (or built) by :func:`real_cgpu_dir`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FAKES = Path(__file__).resolve().parent
REPO = FAKES.parent.parent
XSSI = ")]}'\n"
ACCESS_TOKEN = "fake-access-token"
VENDORED = "cgpu-0.1.4"


# -- the real client -----------------------------------------------------------------------------------------


def vendored_source() -> Path | None:
    """cgpu's vendored source: ``$CGPU_VENDOR_DIR``, else ``../shared/vendor/cgpu-0.1.4`` beside the repository."""
    for candidate in (os.environ.get("CGPU_VENDOR_DIR"), REPO.parent / "shared" / "vendor" / VENDORED):
        if candidate and (Path(candidate) / "package.json").is_file():
            return Path(candidate)
    return None


def build_dir() -> Path:
    """Where the vendored cgpu is built: ``$CGPU_REAL_DIR``, else the user's cache."""
    named = os.environ.get("CGPU_REAL_DIR")
    if named:
        return Path(named)
    cache = Path(os.environ.get("CGPU_KIT_BUILD_CACHE") or Path.home() / ".cache" / "cgpu_kit")
    return cache / f"{VENDORED}-build"


def entry_point(folder: Path) -> Path:
    return folder / "dist" / "src" / "index.js"


def real_cgpu_dir() -> tuple[Path | None, str]:
    """(a built real cgpu, "") or (None, why not); builds the vendored source once (``npm ci && npm run build``)."""
    if shutil.which("node") is None:
        return None, "node is not installed (scripts/setup.sh --test installs it)"
    folder = build_dir()
    if entry_point(folder).is_file():
        return folder, ""
    source = vendored_source()
    if source is None:
        return None, f"cgpu's vendored source (../shared/vendor/{VENDORED}) is not beside the repository"
    if shutil.which("npm") is None:
        return None, "npm is not installed (scripts/setup.sh --test installs it)"
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.parent / f"{VENDORED}.lock"
    with open(lock, "w") as held:
        import fcntl

        fcntl.flock(held, fcntl.LOCK_EX)
        if not entry_point(folder).is_file():
            tmp = folder.with_name(f"{folder.name}.{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("node_modules", "dist"))
            for step in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "run", "build"]):
                done = subprocess.run(step, cwd=tmp, capture_output=True, text=True, stdin=subprocess.DEVNULL)
                if done.returncode != 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                    return None, f"building cgpu failed at {' '.join(step)}: {done.stderr[-500:]}"
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    return folder, ""


# -- Colab's tun API ------------------------------------------------------------------------------------------


class TunServer:
    """Colab's assignment API for ONE runtime, whose Jupyter server is at ``jupyter_url``."""

    def __init__(self, jupyter_url: str, proxy_token: str, tokens_file: Path | None = None,
                 refuse_flag: Path | None = None) -> None:
        self.jupyter_url = jupyter_url.rstrip("/")  # as Colab hands it out: no trailing slash
        self.proxy_token = proxy_token
        self.tokens_file = tokens_file
        self.refuse_flag = refuse_flag
        self.endpoint = "gpu-t4-s-" + secrets.token_hex(6)
        self.assigned = False
        self.accelerator = "T4"
        self.requests: list[str] = []
        self._write_tokens()
        self.lock = threading.Lock()
        tun = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                tun.handle(self, "GET")

            def do_POST(self) -> None:
                tun.handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def _write_tokens(self) -> None:
        if self.tokens_file is not None:
            self.tokens_file.write_text(self.proxy_token + "\n")

    def recycle(self) -> None:
        """Colab takes the runtime back: the assignment is gone and its proxy token answers 404 from now on."""
        with self.lock:
            self.assigned = False
            self.proxy_token = secrets.token_hex(16)
            self.endpoint = "gpu-t4-s-" + secrets.token_hex(6)
            self._write_tokens()

    def proxy_info(self) -> dict:
        return {"token": self.proxy_token, "tokenExpiresInSeconds": 3600, "url": self.jupyter_url}

    def assignment(self) -> dict:
        return {"accelerator": self.accelerator, "endpoint": self.endpoint, "variant": 1, "machineShape": 0,
                "runtimeProxyInfo": self.proxy_info()}

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with self.lock:
            self.requests.append(f"{method} {url.path}")
        if method == "POST" and url.path == "/token":
            return self.token_grant(h)
        if method == "GET" and url.path == "/pypi/google-colab-cli/json":
            return self.reply(h, 200, {"info": {"version": "0.7.5"}}, xssi=False)
        if h.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return self.reply(h, 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials."}})
        path = url.path
        if method == "GET" and path == "/tun/m/assignments":
            return self.reply(h, 200, {"assignments": [self.assignment()] if self.assigned else []})
        if method == "GET" and path == "/tun/m/ccu-info":
            return self.reply(h, 200, {"currentBalance": 0, "consumptionRateHourly": 0, "assignmentsCount": int(self.assigned),
                                       "eligibleGpus": ["T4"], "eligibleTpus": []})
        if path == "/tun/m/assign":
            if method == "GET" and not self.assigned:
                return self.reply(h, 200, {"acc": query.get("accelerator", "T4"), "nbh": query.get("nbh", ""), "p": False,
                                           "token": "xsrf-" + secrets.token_hex(4), "variant": "GPU"})
            if method == "POST" and not h.headers.get("X-Goog-Colab-Token"):
                return self.reply(h, 403, {"error": "missing xsrf token"})
            if method == "POST" and not self.assigned:
                self.accelerator = query.get("accelerator") or "NONE"
            self.assigned = True
            return self.reply(h, 200, {**self.assignment(), "runtimeProxyInfo": self.proxy_info(), "outcome": 4})
        if method == "GET" and path == "/tun/m/runtime-proxy-token":
            if query.get("endpoint") != self.endpoint or not self.assigned:
                return self.reply(h, 404, {"error": "no such runtime"})
            return self.reply(h, 200, self.proxy_info())
        if path == f"/tun/m/unassign/{self.endpoint}":
            if method == "GET":
                return self.reply(h, 200, {"token": "xsrf-" + secrets.token_hex(4)})
            if not h.headers.get("X-Goog-Colab-Token"):
                return self.reply(h, 403, {"error": "missing xsrf token"})
            self.recycle()
            return self.reply(h, 200, {})
        if method == "GET" and path == f"/tun/m/{self.endpoint}/keep-alive/":
            return self.reply(h, 200, None)
        return self.reply(h, 404, {"error": f"no fake for {method} {path}"})

    def token_grant(self, h: BaseHTTPRequestHandler) -> None:
        """Google's OAuth token endpoint: a refresh grant, refused (400 invalid_grant) while the flag exists."""
        h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if self.refuse_flag is not None and self.refuse_flag.exists():
            return self.reply(h, 400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."},
                              xssi=False)
        return self.reply(h, 200, {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer",
                                   "scope": "openid"}, xssi=False)

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: object, *, xssi: bool = True) -> None:
        data = b"" if body is None else ((XSSI if xssi else "") + json.dumps(body)).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the runtime --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtime_tag(server: str) -> str:
    return hashlib.sha1(server.encode()).hexdigest()[:16]


class ColabRuntime:
    """A real jupyter_server as the Colab runtime, the tun fake in front of it, and the real cgpu for it."""

    def __init__(self, base: Path, cgpu_dir: Path) -> None:
        self.base = base
        self.cgpu_dir = cgpu_dir
        self.token = secrets.token_hex(16)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tag = runtime_tag(self.url)
        log = open(base / "jupyter_server.log", "ab")
        env = dict(os.environ, CGPU_TEST_RUNTIME=self.tag, TERM="xterm-256color")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FAKES), env.get("PYTHONPATH")]))
        env["JUPYTER_CONFIG_DIR"] = str(base / "jupyter_config")  # none of this machine's own settings
        env["JUPYTER_RUNTIME_DIR"] = str(base / "jupyter_runtime")
        self.tokens_file = base / "proxy-tokens"
        self.tokens_file.write_text(self.token + "\n")
        env["CGPU_TEST_PROXY_TOKENS"] = str(self.tokens_file)
        # Colab's terminals run a plain bash whose python3 is a real interpreter; this machine's login files
        # (a version manager's shims: 0.2 s and more per python3) are not the runtime's
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        (base / "jupyter_config").mkdir(exist_ok=True)
        (base / "jupyter_config" / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"terminado_settings": {"shell_command": ["/bin/bash", "--norc", "--noprofile", "-i"]}}}))
        for name in [n for n in env if n.startswith(("CGPU_KIT_", "CGPU_FAKE_")) or n == "CGPU_BIN"]:
            del env[name]
        self.server = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", "--ServerApp.root_dir=/", "--ServerApp.open_browser=False",
             f"--IdentityProvider.token={self.token}",
             "--ServerApp.identity_provider_class=colab_identity.ColabProxyIdentityProvider"],
            cwd="/", env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        atexit.register(self.close)  # also when a test run is cut short: no server outlives it
        self.tun: TunServer | None = None
        try:
            self._wait_up()
            self.refuse_flag = base / "refuse-oauth"
            self.tun = TunServer(self.url, self.token, self.tokens_file, self.refuse_flag)
            self._write_cgpu_config()
        except BaseException:
            self.close()
            raise

    def _wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError("jupyter_server exited: " + (self.base / "jupyter_server.log").read_text()[-2000:])
            try:
                self.api("GET", "api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError("jupyter_server did not come up: " + (self.base / "jupyter_server.log").read_text()[-2000:])

    def api(self, method: str, path: str) -> object:
        """One call of the runtime's Jupyter REST API (as Colab's proxy would pass it)."""
        req = urllib.request.Request(f"{self.url}/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def terminals(self) -> list[str]:
        return [t["name"] for t in self.api("GET", "api/terminals")]

    def _write_cgpu_config(self) -> None:
        self.config_dir = self.base / "cgpu-config"
        (self.config_dir / "state").mkdir(parents=True, exist_ok=True)
        (self.config_dir / "config.json").write_text(json.dumps({
            "clientId": "fake-client.apps.googleusercontent.com", "clientSecret": "fake-secret",
            "colabApiDomain": self.tun.url, "colabGapiDomain": self.tun.url,
        }))
        self.login()
        self.executable = self.base / "bin" / "cgpu"
        self.executable.parent.mkdir(exist_ok=True)
        node_options = " ".join(f"--import={(FAKES / name).as_uri()}" for name in ("fake_google_oauth.mjs", "slow_typing.mjs"))
        self.executable.write_text(
            "#!/bin/sh\n"
            f"export CGPU_CONFIG_DIR=\"${{CGPU_CONFIG_DIR:-{self.config_dir}}}\" CGPU_FAKE_OAUTH_REFUSE='{self.refuse_flag}' "
            f"NODE_OPTIONS='{node_options}' BROWSER=true\nunset DISPLAY\n"
            f"exec node '{entry_point(self.cgpu_dir)}' \"$@\"\n"
        )
        self.executable.chmod(0o755)

    def login(self) -> None:
        """The stored login that ``cgpu status`` leaves behind after a browser login."""
        (self.config_dir / "state" / "session.json").write_text(json.dumps({
            "id": "session-1", "refreshToken": "fake-refresh-token", "scopes": ["profile", "email"],
            "account": {"id": "test@example.com", "label": "Test User"},
        }))

    def session_stored(self) -> bool:
        return (self.config_dir / "state" / "session.json").is_file()

    def refuse_login(self, refuse: bool = True) -> None:
        """Google refuses the stored login's refresh (expired or revoked) from now on, or no longer."""
        if refuse:
            self.refuse_flag.write_text("1")
        else:
            self.refuse_flag.unlink(missing_ok=True)

    def processes(self, root: str) -> list[int]:
        """Processes started on this runtime (they carry its tag) that belong to work under ``root``."""
        tag = f"CGPU_TEST_RUNTIME={self.tag}".encode()
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (os.getpid(), self.server.pid):
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if tag in environ and (root.encode() in cmdline or any(root.encode() in v for v in environ)
                                   or cwd == root or cwd.startswith(root + "/")):
                out.append(int(entry))
        return out

    def recycle(self, root: str) -> None:
        """What Colab does to an idle runtime, for the work under ``root``: its processes die, its files go."""
        for _ in range(20):
            pids = self.processes(root)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for child in Path(root).iterdir() if Path(root).is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def close(self) -> None:
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        if self.server.poll() is not None:
            return
        try:
            os.killpg(self.server.pid, signal.SIGTERM)
            self.server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.server.wait()
