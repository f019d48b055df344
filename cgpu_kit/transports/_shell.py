"""What the cgpu and colab transports share: a Colab runtime reached by shell commands and file copies.

Both clients give the same three things (run a short command, copy a file up, get a file back) through
different programs, so everything built on those three lives here once: the remote root's checks (absolute,
no hidden folder: a stock Jupyter server refuses hidden paths), uploads verified by size and sha256 before
(skip what is there) and after (neither client checks), files larger than ``copy_piece_bytes`` sent in
verified pieces and joined on the runtime, and the runtime's set-up (:mod:`._cgpu_remote`, shipped as the
``__main__`` of the bundle: this machine's cgpu_kit unpacked, requirements installed detached, a marker
checked before each batch). A subclass writes ``run`` and ``_copy`` (one upload by its client).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import posixpath
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import tenacity

from ..exceptions import CallRefusedError, CallTimeoutError, ConnectionLostError, MissingDependencyError, ParameterError
from ..requirements import Requirements
from ..util import file_sha256
from ..util import kill_group as util_kill_group
from ._cgpu_send import BatchSending
from .base import CommandResult, Transport, sh

if TYPE_CHECKING:
    from ..bundle import Bundle

log = logging.getLogger(__name__)

DEFAULT_REMOTE_ROOT = "/content"
#: the folder under the remote root holding the shipped cgpu_kit and its set-up marker (not hidden: the
#: runtime's Jupyter server refuses to create hidden paths)
HOME_NAME = "cgpu_kit_runtime"
#: what the runtime needs to run any template, whatever the job type
BASE_REQUIREMENTS = Requirements(pip=("papermill", "nbformat", "nbclient", "ipykernel", "tenacity", "tqdm"))


def env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


def have_line(q: str) -> str:
    """A shell command printing ``have SIZE SHA256`` of the (quoted) file ``q``."""
    return f"printf 'have %s %s\\n' \"$(stat -c %s -- {q})\" \"$(sha256sum < {q} | cut -c1-64)\""


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a client started with ``start_new_session=True`` and everything it started; close its pipes."""
    util_kill_group(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def default_remote_root() -> str:
    """The folder of job folders on a Colab runtime: ``$CGPU_KIT_REMOTE_ROOT``, or ``/content``."""
    return os.environ.get("CGPU_KIT_REMOTE_ROOT") or DEFAULT_REMOTE_ROOT


def absolute(path: str) -> str:
    """A normalised absolute path: both clients' shells start in ``/`` and their copies resolve from ``/``."""
    norm = posixpath.normpath("/" + path.lstrip("/") if not path.startswith("/") else path)
    return "/" + norm.lstrip("/")


class ShellRuntimeTransport(BatchSending, Transport):
    """A Colab runtime driven with short shell commands (``run``) and one-file uploads (``_copy``)."""

    python = "python3"

    def __init__(self, remote_root: str | None = None) -> None:
        root = remote_root or default_remote_root()
        hidden = [part for part in root.split("/") if part.startswith(".") and part not in (".", "..")]
        if hidden:
            raise ParameterError(
                f"the remote root {root!r} has a hidden folder ({hidden[0]!r}): the runtime's Jupyter server refuses "
                "to create hidden paths; pick a --remote-root (CGPU_KIT_REMOTE_ROOT) of plain folder names",
                name="remote_root",
            )
        super().__init__(absolute(root))
        self.poll_interval = env_float("CGPU_KIT_POLL_INTERVAL", 5.0)
        self.chunk_seconds = env_float("CGPU_KIT_CHUNK_SECONDS", 30.0)
        #: a poll waits on the runtime up to this long for news (fewer calls; a cancel waits as long at most)
        self.poll_wait = env_float("CGPU_KIT_POLL_WAIT", 20.0)
        #: a poll brings this many bytes of finished chunks and logs inline (the rest: ``get``)
        self.inline_bytes = int(env_float("CGPU_KIT_INLINE_BYTES", 8 << 20))
        #: no single upload sends more than this (a client holds a few times the file in memory)
        self.copy_piece_bytes = int(env_float("CGPU_KIT_COPY_PIECE_BYTES", 48 << 20))
        self.calls = 0
        self._bundle: Bundle | None = None
        self._folded: set[str] = set()

    @staticmethod
    def _absolute(path: str) -> str:
        return absolute(path)

    @property
    def home(self) -> str:
        """Where the shipped cgpu_kit and the set-up marker live on the runtime."""
        return posixpath.join(self.remote_root, HOME_NAME)

    def runtime_env(self) -> dict[str, str]:
        return {"PYTHONPATH": posixpath.join(self.home, "lib")}

    def _send_one(self, local: Path, remote: str, *, deadline: float) -> CommandResult:
        """One upload by the client, unverified (a refusal for good raises): the client's exit code and what it
        said (for messages)."""
        raise NotImplementedError

    def _copy(self, local: Path, remote: str, want: tuple[int, str], *, deadline: float) -> None:
        """One upload by the client, verified on the runtime afterwards (see :meth:`_verify`)."""
        said = self._send_one(local, remote, deadline=deadline).output
        self._verify(local, remote, want, deadline=deadline, said=said)

    # -- uploads ----------------------------------------------------------------------------------------------

    def _remote_file(self, remote: str, *, timeout: float, mkdir: bool = False) -> tuple[int, str] | None:
        """(size, sha256) of a runtime file, or None when it is absent; optionally ``mkdir -p`` its folder."""
        q = sh(remote)
        prefix = f"mkdir -p -- {sh(posixpath.dirname(remote))} || exit 1; " if mkdir else ""
        result = self.run(
            prefix + f"if [ -f {q} ]; then {have_line(q)}; else echo missing; fi", timeout=timeout,
        ).check(f"checking {remote}")
        for line in result.output.splitlines():
            words = line.split()
            if words[:1] == ["missing"]:
                return None
            if len(words) == 3 and words[0] == "have" and words[1].isdigit():
                return int(words[1]), words[2]
        raise ConnectionLostError(f"the check of {remote} came back garbled", output=result.output)

    def _verify(self, local: Path, remote: str, want: tuple[int, str], *, deadline: float, said: str) -> None:
        """Raise :class:`ConnectionLostError` unless ``remote`` now has ``want``'s size and sha256."""
        have = self._remote_file(remote, timeout=max(deadline - time.monotonic(), 30.0))
        if have != want:
            raise ConnectionLostError(
                f"uploading {local.name} to {remote} did not arrive intact ({said}; "
                f"the runtime has {have or 'nothing'})")

    def put(self, local: Path, remote: str, *, timeout: float) -> bool:
        remote = self._absolute(remote)
        deadline = time.monotonic() + timeout
        try:
            want = (local.stat().st_size, file_sha256(local))
        except OSError as exc:
            raise CallRefusedError(
                f"cannot upload {local}: {exc.strerror}; check that the file is still there") from None
        if self._remote_file(remote, timeout=timeout, mkdir=True) == want:
            log.debug("%s is already on the runtime intact", remote)
            return False
        if want[0] > self.copy_piece_bytes:
            self._put_in_pieces(local, remote, want, deadline=deadline)
            return True
        self._copy(local, remote, want, deadline=deadline)
        return True

    def _put_in_pieces(self, local: Path, remote: str, want: tuple[int, str], *, deadline: float) -> None:
        """Send a file larger than ``copy_piece_bytes`` in pieces, joined on the runtime.

        Both clients hold the file, its base64 and the JSON body in memory at once (cgpu's node about 10x the
        file), so no single copy is larger than a piece; a piece already there intact is not sent again.
        """
        with tempfile.TemporaryDirectory(prefix="cgpu_kit_pieces_") as tmp:
            pieces = []
            with open(local, "rb") as f:
                for index, data in enumerate(iter(lambda: f.read(self.copy_piece_bytes), b"")):
                    piece = Path(tmp) / f"{local.name[:80]}.piece{index:04d}"
                    piece.write_bytes(data)
                    target = f"{remote}.piece{index:04d}"
                    piece_want = (len(data), hashlib.sha256(data).hexdigest())
                    if self._remote_file(target, timeout=max(deadline - time.monotonic(), 30.0)) != piece_want:
                        self._copy(piece, target, piece_want, deadline=deadline)
                    piece.unlink()
                    pieces.append(target)
        joined = f"{remote}.joining"
        self.run(f"cat -- {sh(*pieces)} > {sh(joined)} && mv -f -- {sh(joined)} {sh(remote)} && rm -f -- {sh(*pieces)}",
                 timeout=max(deadline - time.monotonic(), 60.0)).check(f"joining the pieces of {local.name}")
        have = self._remote_file(remote, timeout=max(deadline - time.monotonic(), 30.0))
        if have != want:
            raise ConnectionLostError(f"uploading {local.name} to {remote} in pieces did not arrive intact "
                                      f"(the runtime has {have or 'nothing'})")

    # -- set-up -----------------------------------------------------------------------------------------------

    def _spec(self, requirements: Requirements) -> tuple[Requirements, str]:
        wanted = BASE_REQUIREMENTS | requirements
        spec = {"pip": list(wanted.pip), "apt": list(wanted.apt), "modules": list(wanted.modules),
                "programs": list(wanted.programs), "pip_options": list(wanted.pip_options),
                "pip_no_deps": list(wanted.pip_no_deps)}
        return wanted, base64.b64encode(json.dumps(spec).encode()).decode()

    def _setup_call(self, mode: str, bundle_sha: str, encoded: str, *, timeout: float, wait: float = 0.0) -> dict:
        zip_path = posixpath.join(self.home, "bundle.zip")
        extra = [f"{wait:g}"] if wait > 0 else []
        result = self.run(sh(self.python, zip_path, mode, self.home, bundle_sha, encoded, *extra), timeout=timeout + wait)
        for line in reversed(result.output.splitlines()):
            if line.startswith("CGPUKIT_SETUP "):
                return json.loads(line[len("CGPUKIT_SETUP "):])
        raise ConnectionLostError(f"setting the runtime up: no answer from the set-up helper (exit {result.exit_code})",
                                  output=result.output[-2000:])

    def setup(self, requirements: Requirements, *, timeout: float) -> None:
        """Ship this machine's cgpu_kit and install what the runtime lacks, detached, polling its progress."""
        from ..bundle import build_bundle

        deadline = self.clock.now() + timeout
        bundle = self._bundle = build_bundle()
        wanted, encoded = self._spec(requirements)
        if self._marker_matches(wanted, bundle.sha256, timeout=min(timeout, 120)):
            log.info("the runtime %s is already set up", self.remote_root)
            return
        self.put(bundle.path, posixpath.join(self.home, "bundle.zip"), timeout=max(60.0, 60 + bundle.size / 250e3))
        answer = self._wait_installing(self._setup_call("setup", bundle.sha256, encoded, timeout=120),
                                       bundle.sha256, encoded, deadline=deadline, timeout=timeout)
        if answer["state"] == "failed":
            raise MissingDependencyError(
                f"setting the runtime up failed: {answer.get('error')}\n{answer.get('log', '')}".strip()
            )
        if answer["state"] == "dead":
            raise ConnectionLostError("the set-up process died on the runtime; trying again",
                                      output=answer.get("log", ""))

    def _wait_installing(self, answer: dict, bundle_sha: str, encoded: str, *, deadline: float, timeout: float) -> dict:
        """Poll the detached install while it is installing: each call waits on the runtime up to
        ``poll_wait`` seconds for the install to end (a call per ``poll_wait`` seconds of pip, not per poll
        interval), then a tenacity loop whose "failure" is "still installing", slept on the transport's clock
        (the manager gives it its own)."""
        def still_installing(state: dict) -> bool:
            if state["state"] != "installing":
                return False
            log.info("installing on the runtime: %s", state.get("missing") or state.get("log", "")[-200:])
            if self.clock.now() > deadline:
                raise CallTimeoutError(f"setting the runtime up did not finish within {timeout:.0f}s")
            return True

        if not still_installing(answer):
            return answer
        wait = max(0.0, min(self.poll_wait, deadline - self.clock.now()))
        pause = 0.0 if wait else self.poll_interval  # a waiting call already spent its time on the runtime
        self.clock.sleep(pause)
        return tenacity.Retrying(
            retry=tenacity.retry_if_result(still_installing), wait=tenacity.wait_fixed(pause),
            stop=tenacity.stop_never, sleep=self.clock.sleep, reraise=True,
        )(self._setup_call, "state", bundle_sha, encoded, timeout=120, wait=wait)

    def _marker_matches(self, wanted: Requirements, bundle_sha: str, *, timeout: float) -> bool:
        marker = posixpath.join(self.home, "ready.json")
        init = posixpath.join(self.home, "lib", "cgpu_kit", "__init__.py")
        result = self.run(f"if [ -f {sh(init)} ] && [ -f {sh(marker)} ]; then cat {sh(marker)}; else echo '{{}}'; fi",
                          timeout=timeout)
        for line in reversed(result.output.splitlines()):
            line = line.strip()
            if line.startswith("{") and line.endswith("}"):
                return self._marker_says(line, wanted, bundle_sha)
        raise ConnectionLostError("the set-up marker's check came back garbled", output=result.output)

    @staticmethod
    def _marker_says(text: str | None, wanted: Requirements, bundle_sha: str) -> bool:
        """Whether the marker's JSON ``text`` records this bundle and every requirement of ``wanted``."""
        try:
            have = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise ConnectionLostError("the set-up marker's check came back garbled", output=text or "") from None
        kinds = ("pip", "apt", "modules", "programs", "pip_no_deps")
        return have.get("bundle") == bundle_sha and all(set(getattr(wanted, k)) <= set(have.get(k, [])) for k in kinds)

    def is_set_up(self, requirements: Requirements, *, timeout: float) -> bool:
        from ..bundle import build_bundle

        wanted, _ = self._spec(requirements)
        bundle = self._bundle or build_bundle()  # the code this session shipped, even if the sources moved on
        return self._marker_matches(wanted, bundle.sha256, timeout=timeout)
