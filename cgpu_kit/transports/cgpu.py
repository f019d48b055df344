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
import logging
import os
import re
import secrets
import selectors
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import CallRefusedError, CallTimeoutError, CgpuAuthError, ConnectionLostError, MissingDependencyError
from . import _cgpu_terminals as terminals
from ._cgpu_download import Downloads
from ._shell import (  # noqa: F401 - known by these names here too
    BASE_REQUIREMENTS,
    DEFAULT_REMOTE_ROOT,
    HOME_NAME,
    ShellRuntimeTransport,
    default_remote_root,
    env_float,
    kill_group,
)
from .base import CommandResult, sh

log = logging.getLogger(__name__)

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
    # not a 404 saying "No such file or directory": the server saved the file, then found it gone when it read it
    # back for its answer (a land beside the copy took it); what arrived is checked, as after any failed copy
    (re.compile(r"Upload failed \(4(?!04[^\n]*No such file or directory)\d\d"), "the runtime's server refused the "
     "path; a name starting with '.' is "
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


class CgpuTransport(Downloads, ShellRuntimeTransport):
    """Runs batches on the Colab runtime that ``cgpu`` reaches; remote paths live under ``remote_root``."""

    name = "cgpu"
    python = "python3"
    #: cgpu calls are separate processes that only read its stored login: a copy can go beside a land
    overlap_calls = True

    def __init__(self, remote_root: str | None = None, config_dir: str | None = None) -> None:
        super().__init__(remote_root)
        self.executable = find_cgpu()
        #: another Colab account: cgpu reads its config and login from this folder (``CGPU_CONFIG_DIR``)
        self.config_dir = os.path.abspath(os.path.expanduser(config_dir)) if config_dir else None
        #: downloads travel in chunks of this many bytes, this many chunks per ``cgpu run``
        self.get_chunk_bytes = int(env_float("CGPU_KIT_GET_CHUNK_BYTES", 4 << 20))
        self.get_chunks_per_call = 8
        #: once the end marker is in, cgpu gets this long to close before it is stopped
        self.close_grace = 10.0

    @property
    def key(self) -> str:
        """Two accounts (config folders) are two runtimes, so two sessions."""
        return f"cgpu:{self.config_dir}:{self.remote_root}" if self.config_dir else super().key

    # -- one cgpu invocation ----------------------------------------------------------------------------------

    def _invoke(self, args: list[str], *, timeout: float, end_token: str | None = None,
                abort: threading.Event | None = None) -> _Call:
        """Run ``cgpu ARGS`` with stdin closed in its own process group, reading its output as it comes;
        ``abort`` set stops it (:class:`ConnectionLostError`)."""
        self.calls += 1
        started = time.time()
        proc = subprocess.Popen(
            [self.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, env={**os.environ, "CGPU_CONFIG_DIR": self.config_dir} if self.config_dir else None,
        )
        call = _Call(-1, [], [])
        partial = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
        sinks = {proc.stdout.fileno(): call.stdout, proc.stderr.fileno(): call.stderr}
        authenticated = False
        end_marker = f"CGPUKIT_{end_token}_E " if end_token else None
        begin_marker = f"CGPUKIT_{end_token}_B" if end_token else None

        def note_if_terminal_left() -> None:
            if begin_marker and not any(begin_marker in line for line in call.stdout):
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
                if abort is not None and abort.is_set():
                    raise ConnectionLostError(f"cgpu {args[0]} stopped: what it waited for will not come",
                                              output="\n".join(call.stdout[-50:]))
                for key, _ in sel.select(min(remaining, 1.0 if abort is None else 0.2)):
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

    _kill = staticmethod(kill_group)

    # -- the seam -----------------------------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float, abort: threading.Event | None = None) -> CommandResult:
        token = secrets.token_hex(8)
        stale = terminals.pending(self.executable)
        if stale:
            command = terminals.cleanup_command(stale) + command
        call = self._invoke(["run", wrap(command, token)], timeout=timeout, end_token=token, abort=abort)
        frame = unframe(call.stdout, token)
        if stale and frame.begun:
            terminals.forget(stale)
        if frame.begun:
            self.reached = True  # a runtime is assigned to this account now
        if frame.exit_code is None:
            how = "before the command's output began" if not frame.begun else "before the command's end"
            raise ConnectionLostError(
                f"cgpu run lost its answer {how} (cgpu exit {call.exit_code}{': ' + call.stderr_tail() if call.stderr else ''})",
                output="\n".join(frame.lines),
            )
        return CommandResult(frame.exit_code, "\n".join(frame.lines))

    def _send_one(self, local: Path, remote: str, *, deadline: float) -> CommandResult:
        """One ``cgpu copy``; its exit status is not trusted either way (the caller verifies what arrived)."""
        call = self._invoke(["copy", str(local.absolute()), remote], timeout=max(deadline - time.monotonic(), 1.0))
        if call.exit_code != 0:
            said = " ".join(s.strip() for s in call.stderr if s.strip())
            for pattern, advice in COPY_REFUSED:
                if pattern.search(said):
                    raise CallRefusedError(f"cgpu copy of {local.name} to {remote} was refused: {said[:500]} ({advice})",
                                           output="\n".join(call.stdout + call.stderr))
            log.info("cgpu copy of %s reported failure; what arrived is checked", local.name)
        return CommandResult(call.exit_code,
                             f"cgpu copy exit {call.exit_code}{': ' + call.stderr_tail() if call.stderr else ''}")
