"""A Colab runtime reached through the ``cgpu`` command-line tool (see ``shared/reference/cgpu-cli.md``).

cgpu gives three things and no guarantees: ``cgpu run`` types one command into a fresh terminal and
streams what the terminal shows, ``cgpu copy`` uploads one file in one request, and nothing downloads.
Each call is a new process that may fail to start, lose its end, or wait forever for a browser login.
So this transport never trusts cgpu's framing:

- every command is wrapped so that it prints the transport's own random begin and end markers, the end one
  carrying the exit status; only what lies between them is output, and a missing end marker means "the
  connection broke" (:class:`~cgpu_kit.exceptions.ConnectionLostError`), whatever cgpu's exit status says;
- the remote command runs in a subshell with ``</dev/null``, so it can neither swallow the lines cgpu
  types after it nor end the terminal's shell with ``exit``;
- cgpu's own output is read as it comes, so the login failures (no credentials, no stored login, a refresh
  Google refused) become a :class:`~cgpu_kit.exceptions.CgpuAuthError` within seconds, and every call has a
  timeout that kills cgpu's whole process group (a terminal that kill may leave is ended by the next call:
  :mod:`._cgpu_terminals`);
- uploads are checked (size and sha256) before (skip what is there) and after (copy has no checksum); a copy
  the runtime's server refuses for good (4xx, a missing folder, a missing local file) is a
  :class:`~cgpu_kit.exceptions.CallRefusedError`, never retried;
- downloads (:mod:`._cgpu_download`) print base64 of bounded chunks with their sha256 in 76-character lines,
  written into a ``.partial`` file whose progress survives a broken call, so a retry resumes at the first
  missing chunk;
- nothing written on the runtime has a hidden name (``cgpu_kit_runtime/``, not ``.cgpu_kit/``): a stock
  Jupyter server refuses them.

Payloads never contain empty lines, and nothing a payload line can start with is cut by cgpu (it cuts a
leading ``/# ``): base64 and JSON lines are safe.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import posixpath
import re
import secrets
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import (
    CallRefusedError,
    CallTimeoutError,
    CgpuAuthError,
    ConnectionLostError,
    MissingDependencyError,
    ParameterError,
)

if TYPE_CHECKING:
    from ..bundle import Bundle
from ..util import file_sha256, kill_group
from . import _cgpu_terminals as terminals
from ._cgpu_download import Downloads
from ._cgpu_setup import BASE_REQUIREMENTS, SetUp  # noqa: F401 - known by this name here too
from .base import CommandResult, Transport, sh

log = logging.getLogger(__name__)

DEFAULT_REMOTE_ROOT = "/content"


def default_remote_root() -> str:
    """The folder of job folders on a Colab runtime: ``$CGPU_KIT_REMOTE_ROOT``, or ``/content``."""
    return os.environ.get("CGPU_KIT_REMOTE_ROOT") or DEFAULT_REMOTE_ROOT
#: the folder under the remote root holding the shipped cgpu_kit and its set-up marker (not hidden: the
#: runtime's Jupyter server refuses to create hidden paths)
HOME_NAME = "cgpu_kit_runtime"
INSTALL_HINT = (
    "install cgpu from its repository (it is not on the npm registry): "
    "git clone https://github.com/RohanAdwankar/cgpu && cd cgpu && npm install && npm run build && npm link; "
    "or point CGPU_BIN at the executable. Then run `cgpu status` once in a terminal to log in."
)
#: cgpu's own words when it is not logged in: (text, what the user must do)
LOGIN_NEEDED = (
    ("Missing Colab OAuth credentials", "cgpu has no Colab OAuth credentials: set COLAB_CLIENT_ID and "
     "COLAB_CLIENT_SECRET (or write ~/.config/cgpu/config.json), then run `cgpu status` in a terminal to log in"),
    ("No cached session found", "cgpu is not logged in and waits for a browser login: run `cgpu status` in a "
     "terminal and finish the Google login in the browser, then run this again"),
    ("Opened browser for Google login", "cgpu is not logged in and waits for a browser login: run `cgpu status` "
     "in a terminal and finish the Google login in the browser, then run this again"),
    ("Stored session invalid", "Google refused cgpu's stored login (expired or revoked) and cgpu deleted it: run "
     "`cgpu status` in a terminal to log in again, then run this again"),
)
#: cgpu copy's words for refusals that trying again cannot change: (pattern, what the user must do)
COPY_REFUSED = (
    (re.compile(r"Upload failed \(4\d\d"), "the runtime's server refused the path; a name starting with '.' is "
     "refused by Jupyter: pick a --remote-root (CGPU_KIT_REMOTE_ROOT) of plain folder names"),
    (re.compile(r"Upload failed \(5\d\d.*(No such file or directory|Errno 2)"), "the destination's folder does not "
     "exist on the runtime; run the command again (it creates the folder first)"),
    (re.compile(r"ENOENT: no such file or directory|not a file\."), "the local file is gone or is not a file; check "
     "that it is still there and run again"),
)

_UNSAFE_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def find_cgpu() -> str:
    """The cgpu executable: ``$CGPU_BIN`` when set, else ``cgpu`` on PATH."""
    named = os.environ.get("CGPU_BIN")
    if named:
        path = shutil.which(named)
        if path is None:
            raise MissingDependencyError(f"CGPU_BIN={named!r} is not an executable file; {INSTALL_HINT}")
        return path
    path = shutil.which("cgpu")
    if path is None:
        raise MissingDependencyError(f"the cgpu command is not on PATH; {INSTALL_HINT}")
    return path


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


@dataclass
class _Call:
    """What one cgpu invocation printed."""

    exit_code: int
    stdout: list[str]
    stderr: list[str] = field(default_factory=list)

    def stderr_tail(self, lines: int = 5) -> str:
        return " | ".join(s.strip() for s in self.stderr[-lines:] if s.strip())


@dataclass
class _Frame:
    """The part of a call's output between the transport's own markers."""

    begun: bool
    exit_code: int | None
    lines: list[str]


def wrap(command: str, token: str) -> str:
    """One terminal line that frames ``command``'s output between markers and reports its exit status.

    The markers are printed with ``%s`` so that the marker text itself never appears in what is typed
    (a terminal that echoes the command cannot fake an end marker). A command with newlines or control
    characters travels base64-encoded, because a terminal reads it line by line.
    """
    if _UNSAFE_TEXT.search(command):
        encoded = base64.b64encode(command.encode()).decode()
        command = f"eval \"$(printf %s {encoded} | base64 -d)\""
    return (  # eval of one quoted word: a comment or a stray quote in the command cannot unbalance the frame
        f"printf 'CGPUKIT_%s_B\\n' {token}; ( eval {sh(command)} ) </dev/null 2>&1; "
        f"printf '\\nCGPUKIT_%s_E %s\\n' {token} \"$?\""
    )


def unframe(lines: list[str], token: str) -> _Frame:
    begin, end = f"CGPUKIT_{token}_B", re.compile(rf"CGPUKIT_{token}_E (\d+)")
    begun, body = False, []
    for line in lines:
        if not begun:
            begun = begin in line
            continue
        m = end.search(line)
        if m:
            if line[: m.start()]:
                body.append(line[: m.start()])
            return _Frame(True, int(m.group(1)), body)
        body.append(line)
    return _Frame(begun, None, body)


class CgpuTransport(Downloads, SetUp, Transport):
    """Runs batches on the Colab runtime that ``cgpu`` reaches; remote paths live under ``remote_root``."""

    name = "cgpu"
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
        super().__init__(self._absolute(root))
        self.executable = find_cgpu()
        self.poll_interval = _env_float("CGPU_KIT_POLL_INTERVAL", 5.0)
        self.chunk_seconds = _env_float("CGPU_KIT_CHUNK_SECONDS", 30.0)
        #: downloads travel in chunks of this many bytes, this many chunks per ``cgpu run``
        self.get_chunk_bytes = int(_env_float("CGPU_KIT_GET_CHUNK_BYTES", 4 << 20))
        self.get_chunks_per_call = 8
        #: no single ``cgpu copy`` sends more than this (node holds about 10x a copied file in memory)
        self.copy_piece_bytes = int(_env_float("CGPU_KIT_COPY_PIECE_BYTES", 48 << 20))
        #: once the end marker is in, cgpu gets this long to close before it is stopped
        self.close_grace = 10.0
        self.calls = 0
        self._bundle: Bundle | None = None

    # -- paths ----------------------------------------------------------------------------------------------

    @staticmethod
    def _absolute(path: str) -> str:
        """A normalised absolute path: cgpu's shell starts in ``/`` and copy resolves from ``/``, alike."""
        norm = posixpath.normpath("/" + path.lstrip("/") if not path.startswith("/") else path)
        return "/" + norm.lstrip("/")

    @property
    def home(self) -> str:
        """Where the shipped cgpu_kit and the set-up marker live on the runtime."""
        return posixpath.join(self.remote_root, HOME_NAME)

    def runtime_env(self) -> dict[str, str]:
        return {"PYTHONPATH": posixpath.join(self.home, "lib")}

    # -- one cgpu invocation ----------------------------------------------------------------------------------

    def _invoke(self, args: list[str], *, timeout: float, end_token: str | None = None) -> _Call:
        """Run ``cgpu ARGS`` with stdin closed in its own process group, reading its output as it comes."""
        self.calls += 1
        started = time.time()
        proc = subprocess.Popen(
            [self.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        call = _Call(-1, [], [])
        partial = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
        sinks = {proc.stdout.fileno(): call.stdout, proc.stderr.fileno(): call.stderr}
        authenticated = False
        end_marker = f"CGPUKIT_{end_token}_E " if end_token else None
        begin_marker = f"CGPUKIT_{end_token}_B" if end_token else None

        def note_if_terminal_left() -> None:
            if begin_marker and authenticated and not any(begin_marker in line for line in call.stdout):
                terminals.note_killed(self.executable, started, time.time())

        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream, selectors.EVENT_READ)
        try:
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in sel.select(min(remaining, 1.0)):
                    fd = key.fd
                    data = os.read(fd, 1 << 16)
                    if not data:
                        sel.unregister(key.fileobj)
                        if partial[fd]:
                            sinks[fd].append(partial[fd].decode("utf-8", "replace"))
                            partial[fd] = b""
                        continue
                    *complete, partial[fd] = (partial[fd] + data).split(b"\n")
                    for raw in complete:
                        line = raw.decode("utf-8", "replace").rstrip("\r")
                        sinks[fd].append(line)
                        if fd == proc.stdout.fileno() and line.startswith("Authenticated as"):
                            authenticated = True
                        if fd == proc.stderr.fileno() or not authenticated:
                            self._check_login(line, proc, call)
                        if end_marker and fd == proc.stdout.fileno() and end_marker in line:
                            deadline = min(deadline, time.monotonic() + self.close_grace)
            else:
                remaining = max(deadline - time.monotonic(), 0.1)
                try:
                    call.exit_code = proc.wait(timeout=remaining)
                    return call
                except subprocess.TimeoutExpired:
                    pass
        except CgpuAuthError:
            raise  # not logged in: no terminal was opened
        except BaseException:  # an interrupt: cgpu runs in its own session, stop it here
            self._kill(proc)
            note_if_terminal_left()
            raise
        finally:
            sel.close()
        self._kill(proc)
        if end_marker and any(end_marker in line for line in call.stdout):
            return call  # the answer is complete; cgpu merely failed to close
        note_if_terminal_left()
        raise CallTimeoutError(
            f"cgpu {args[0]} did not finish within {timeout:.0f}s and was stopped", output="\n".join(call.stdout[-50:])
        )

    def _check_login(self, line: str, proc: subprocess.Popen, call: _Call) -> None:
        for text, advice in LOGIN_NEEDED:
            if text in line:
                self._kill(proc)
                raise CgpuAuthError(f"{advice} (cgpu said: {line.strip()!r})", output="\n".join(call.stdout + call.stderr))

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        kill_group(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    # -- the seam -----------------------------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float) -> CommandResult:
        token = secrets.token_hex(8)
        stale = terminals.pending(self.executable)
        if stale:
            command = terminals.cleanup_command(stale) + command
        call = self._invoke(["run", wrap(command, token)], timeout=timeout, end_token=token)
        frame = unframe(call.stdout, token)
        if stale and frame.begun:
            terminals.forget(stale)
        if frame.exit_code is None:
            how = "before the command's output began" if not frame.begun else "before the command's end"
            raise ConnectionLostError(
                f"cgpu run lost its answer {how} (cgpu exit {call.exit_code}{': ' + call.stderr_tail() if call.stderr else ''})",
                output="\n".join(frame.lines),
            )
        return CommandResult(frame.exit_code, "\n".join(frame.lines))

    def _remote_file(self, remote: str, *, timeout: float, mkdir: bool = False) -> tuple[int, str] | None:
        """(size, sha256) of a runtime file, or None when it is absent; optionally ``mkdir -p`` its folder."""
        q = sh(remote)
        prefix = f"mkdir -p -- {sh(posixpath.dirname(remote))} || exit 1; " if mkdir else ""
        result = self.run(
            prefix + f"if [ -f {q} ]; then printf 'have %s %s\\n' \"$(stat -c %s -- {q})\" \"$(sha256sum < {q} | cut -c1-64)\"; "
            "else echo missing; fi", timeout=timeout,
        ).check(f"checking {remote}")
        for line in result.output.splitlines():
            words = line.split()
            if words[:1] == ["missing"]:
                return None
            if len(words) == 3 and words[0] == "have" and words[1].isdigit():
                return int(words[1]), words[2]
        raise ConnectionLostError(f"the check of {remote} came back garbled", output=result.output)

    def put(self, local: Path, remote: str, *, timeout: float) -> bool:
        remote = self._absolute(remote)
        deadline = time.monotonic() + timeout
        try:
            want = (local.stat().st_size, file_sha256(local))
        except OSError as exc:
            raise CallRefusedError(f"cannot upload {local}: {exc.strerror}; check that the file is still there") from None
        if self._remote_file(remote, timeout=timeout, mkdir=True) == want:
            log.debug("%s is already on the runtime intact", remote)
            return False
        if want[0] > self.copy_piece_bytes:
            self._put_in_pieces(local, remote, want, deadline=deadline)
            return True
        self._copy(local, remote, want, deadline=deadline)
        return True

    def _copy(self, local: Path, remote: str, want: tuple[int, str], *, deadline: float) -> None:
        """One ``cgpu copy``, verified on the runtime afterwards."""
        call = self._invoke(["copy", str(local.absolute()), remote], timeout=max(deadline - time.monotonic(), 1.0))
        if call.exit_code != 0:
            said = " ".join(s.strip() for s in call.stderr if s.strip())
            for pattern, advice in COPY_REFUSED:
                if pattern.search(said):
                    raise CallRefusedError(f"cgpu copy of {local.name} to {remote} was refused: {said[:500]} ({advice})",
                                           output="\n".join(call.stdout + call.stderr))
        have = self._remote_file(remote, timeout=max(deadline - time.monotonic(), 30.0))
        if have != want:
            raise ConnectionLostError(
                f"uploading {local.name} to {remote} did not arrive intact (cgpu copy exit {call.exit_code}"
                f"{': ' + call.stderr_tail() if call.stderr else ''}; the runtime has {have or 'nothing'})",
            )
        if call.exit_code != 0:
            log.info("cgpu copy reported failure, but %s arrived intact", remote)

    def _put_in_pieces(self, local: Path, remote: str, want: tuple[int, str], *, deadline: float) -> None:
        """Send a file larger than ``copy_piece_bytes`` in pieces, joined on the runtime.

        ``cgpu copy`` holds the file, its base64 and the JSON body in memory at once (about 10x the file in
        node), so no single copy is larger than a piece; a piece already there intact is not sent again.
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
