"""A Colab runtime reached through Google's ``colab`` command-line tool (PyPI ``google-colab-cli``; see
``shared/reference/colab-cli.md``).

The client has named sessions, one-file uploads and downloads through Jupyter's contents API, an explicit
stop, and ``exec`` of Python in the session's kernel; it needs Python 3.12, so it may live in its own
environment (``COLAB_BIN`` names it). What it does not give, this transport adds:

- a shell command runs as a short Python snippet (``exec -f``) that starts ``bash -c`` with stdin closed in
  its own process group, kills the group past its own timeout (the client's ``--timeout`` stops nothing: it
  busy-waits, and a killed client leaves the code running and the next exec queued behind it), and prints
  the transport's random begin and end markers, the end one with the exit status. ``exec`` exits 0 when the
  code raises, so only the end marker says a command ran; once it is in, the client gets ``close_grace``
  seconds to exit (a reader thread of its websocket library often holds it 10 s longer) and is then stopped.
  Long work (the batch, the set-up's installs) is started detached by :mod:`cgpu_kit.remote` and polled;
- every call has stdin closed, so a client that is not logged in prints its Google URL, asks for the code and
  ends with ``Aborted.`` at once: that, and ``--auth adc`` without credentials, is a
  :class:`~cgpu_kit.exceptions.ColabAuthError` within seconds;
- ``Session 'NAME' appears to be lost (404/401)`` (and ``not found`` for a session this transport had open)
  is a :class:`~cgpu_kit.exceptions.RuntimeLostError`; the next call opens the session again with ``new``;
- uploads are checked (size and sha256) before and after (:mod:`._shell`); downloads are checked against the
  sha256 the runtime reports, written beside the target and renamed into place; files larger than
  ``copy_piece_bytes`` travel in pieces (the client holds a whole file and its base64 in memory);
- a refusal that trying again cannot change (a 4xx of the runtime's server, a missing local file, an
  allocation Colab refuses) is a :class:`~cgpu_kit.exceptions.CallRefusedError`; the client's messages carry
  the runtime's proxy token, which is cut out of every message.

The session is ``cgpu-kit-XXXXXX`` unless named; it is opened on the first call and stopped by
:meth:`close` (at the latest when the process exits) unless ``keep_session``.
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import re
import secrets
import selectors
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..exceptions import (
    CallRefusedError,
    CallTimeoutError,
    ColabAuthError,
    ConnectionLostError,
    MissingDependencyError,
    ParameterError,
    RemoteCommandError,
    RuntimeLostError,
)
from ..util import file_sha256
from ._shell import ShellRuntimeTransport, env_float, have_line, kill_group
from .base import CommandResult, sh

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install Google's colab client (it needs Python >= 3.12): `uv tool install google-colab-cli` or "
    "`pipx install google-colab-cli`, or in a venv of its own (`python3.12 -m venv ~/colab-cli && "
    "~/colab-cli/bin/pip install google-colab-cli`) and point COLAB_BIN at ~/colab-cli/bin/colab; then run "
    "`colab sessions` once in a terminal to log in"
)
GPUS = ("T4", "L4", "G4", "A100", "H100")
LOGIN_ADVICE = ("the colab client is not logged in (it asked for an authorization code): run `colab sessions` in a "
                "terminal, open the URL it prints, paste the code back, then run this again")
#: the client's own words when it has no valid login: (text, what the user must do)
LOGIN_NEEDED = (
    ("Enter the authorization code", LOGIN_ADVICE),
    ("To authorize colab-cli, visit this URL", LOGIN_ADVICE),
    ("No valid default credentials found", "the colab client (--auth adc) found no Google credentials: run "
     "`gcloud auth application-default login` with the scopes `colab` printed, then run this again"),
)
#: the client's words for refusals that trying again cannot change: (pattern, what the user must do)
REFUSED = (
    (re.compile(r"(Upload|Download) failed: 4\d\d"), "the runtime's server refused the path; a name starting with '.' "
     "is refused by Jupyter: pick a --remote-root (CGPU_KIT_REMOTE_ROOT) of plain folder names"),
    (re.compile(r"Local file '.*' not found"), "the local file is gone; check that it is still there and run again"),
    (re.compile(r"Allocation refused|Backend rejected accelerator"), "Colab refused a runtime of this kind: stop a "
     "session you no longer need (`colab sessions`, `colab stop -s NAME`), wait, or pick another --colab-gpu"),
)
_TOKEN = re.compile(r"(colab-runtime-proxy-token=|token=)[^&\s'\"]+")
#: runs in the session's kernel: a shell command with stdin closed, in its own process group, time-bounded
_RUN = """\
def _cgpukit_run():
    import base64, os, signal, subprocess, sys
    tag = "CGPUKIT_" + {token!r}
    print(tag + "_B", flush=True)
    cmd = base64.b64decode({command!r}).decode()
    p = subprocess.Popen(["/bin/bash", "-c", cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    try:
        out, _ = p.communicate(timeout={timeout!r})
        code = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        code = "T"
    sys.stdout.write(out.decode("utf-8", "replace"))
    print("\\n" + tag + "_E " + str(code), flush=True)
_cgpukit_run()
del _cgpukit_run
"""


def find_colab() -> str:
    """The colab executable: ``$COLAB_BIN`` when set, else ``colab`` on PATH."""
    named = os.environ.get("COLAB_BIN")
    path = shutil.which(os.path.expanduser(named)) if named else shutil.which("colab")
    if path is None:
        where = f"COLAB_BIN={named!r} is not an executable file" if named else "the colab command is not on PATH"
        raise MissingDependencyError(f"{where}; {INSTALL_HINT}")
    return path


def redact(text: str) -> str:
    """The client's words without the runtime's proxy token (its HTTP errors print the whole URL)."""
    return _TOKEN.sub(r"\1...", text)


@dataclass
class _Call:
    """What one colab invocation printed."""

    exit_code: int
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def said(self) -> str:
        lines = (s.strip() for s in self.stdout + self.stderr if s.strip() and "CGPUKIT_" not in s)
        return redact(" | ".join(lines)[-800:])


class ColabTransport(ShellRuntimeTransport):
    """Runs batches on the Colab runtime of one ``colab`` session; remote paths live under ``remote_root``."""

    name = "colab"
    python = "python3"

    def __init__(self, remote_root: str | None = None, *, session: str | None = None, gpu: str | None = "T4",
                 keep_session: bool = False) -> None:
        super().__init__(remote_root)
        if session is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", session):
            raise ParameterError(f"--session {session!r}: a session name is letters, digits, '_', '.' and '-' "
                                 "(at most 63, not starting with a sign)", name="session")
        if gpu is not None and gpu.upper() in ("CPU", "NONE"):
            gpu = None
        if gpu is not None and gpu.upper() not in GPUS:  # the client silently turns an unknown one into an A100
            raise ParameterError(f"--colab-gpu {gpu!r} is not one of {', '.join(GPUS)} or CPU", name="colab_gpu")
        self.executable = find_colab()
        self.named = session is not None
        self.session = session or f"cgpu-kit-{secrets.token_hex(3)}"
        self.name = f"colab:{self.session}"  # recorded in the job's plan: `attach` finds the same session
        self.gpu = gpu.upper() if gpu else None
        self.keep_session = keep_session
        #: "unknown" (named, maybe there), "open" (this transport used it) or "gone" (needs `new`)
        self.state = "unknown" if self.named else "gone"
        self.close_grace = env_float("CGPU_KIT_COLAB_CLOSE_GRACE", 1.5)
        self._exit_hook = False

    @property
    def key(self) -> str:
        return f"colab:{self.session if self.named else ''}:{self.remote_root}"

    # -- one colab invocation ---------------------------------------------------------------------------------

    def _invoke(self, args: list[str], *, timeout: float, done: str | None = None) -> _Call:
        """Run ``colab ARGS`` with stdin closed in its own process group, reading its output as it comes.

        Once a line containing ``done`` is in, the client has ``close_grace`` seconds left to exit."""
        self.calls += 1
        proc = subprocess.Popen([self.executable, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        call = _Call(-1)
        sinks = {proc.stdout.fileno(): call.stdout, proc.stderr.fileno(): call.stderr}
        partial = dict.fromkeys(sinks, b"")
        deadline = time.monotonic() + timeout
        finished = framed = False
        sel = selectors.DefaultSelector()
        for stream in (proc.stdout, proc.stderr):
            sel.register(stream, selectors.EVENT_READ)
        try:
            while sel.get_map() and time.monotonic() < deadline:
                for key, _ in sel.select(min(max(deadline - time.monotonic(), 0.01), 1.0)):
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        sel.unregister(key.fileobj)
                        data = b"\n" if partial[key.fd] else b""
                    *lines, partial[key.fd] = (partial[key.fd] + data).split(b"\n")
                    for raw in lines:
                        line = raw.decode("utf-8", "replace").rstrip("\r")
                        sinks[key.fd].append(line)
                        framed = framed or "CGPUKIT_" in line
                        if not framed:  # a command's own output may say anything
                            self._check_login(line, proc, call)
                        if done and not finished and done in line:
                            finished = True
                            deadline = min(deadline, time.monotonic() + self.close_grace)
            if not sel.get_map():
                try:
                    call.exit_code = proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
                    return call
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:  # an interrupt, or a login prompt: the client runs in its own session
            kill_group(proc)
            raise
        finally:
            sel.close()
        kill_group(proc)
        if finished:
            call.exit_code = 0
            return call  # the answer is complete; the client merely failed to close in time
        raise CallTimeoutError(f"colab {args[0]} did not finish within {timeout:.0f}s and was stopped",
                               output=redact("\n".join(call.stdout[-50:])))

    @staticmethod
    def _check_login(line: str, proc: subprocess.Popen, call: _Call) -> None:
        for text, advice in LOGIN_NEEDED:
            if text in line:
                kill_group(proc)
                raise ColabAuthError(f"{advice} (colab said: {redact(line.strip())[:200]!r})", output=call.said)

    def _session_call(self, args: list[str], *, timeout: float, done: str) -> _Call:
        """``colab ARGS -s SESSION ...`` with the session opened first when needed; a lost one raises."""
        if self.state == "gone":
            self.open_session(timeout=max(timeout, 120.0))
        call = self._invoke([args[0], "-s", self.session, *args[1:]], timeout=timeout, done=done)
        text = "\n".join(call.stdout)
        if "appears to be lost (404/401)" in text:
            self.state = "gone"
            raise RuntimeLostError(f"Colab recycled the runtime of session {self.session!r} (colab said: {call.said})")
        if f"Session '{self.session}' not found." in text:
            if self.state == "unknown":  # a named session that is not there (any more): open it, once
                self.state = "gone"
                return self._session_call(args, timeout=timeout, done=done)
            self.state = "gone"
            raise RuntimeLostError(
                f"the colab session {self.session!r} is gone (stopped or recycled; colab said: {call.said})")
        self._opened()
        return call

    def _opened(self) -> None:
        """The session is in use: stop it when the process ends, unless this transport is closed first."""
        self.state = "open"
        if not self._exit_hook:
            atexit.register(self.close)
            self._exit_hook = True

    def open_session(self, *, timeout: float = 180.0) -> None:
        """``colab new -s SESSION [--gpu GPU]``: assign a runtime (the manager sets it up afterwards)."""
        args = ["new", "-s", self.session, *(["--gpu", self.gpu] if self.gpu else [])]
        call = self._invoke(args, timeout=timeout, done="Session READY.")
        said = call.said
        for pattern, advice in REFUSED:
            if pattern.search(said):
                raise CallRefusedError(f"colab new refused a runtime for session {self.session!r}: {said} ({advice})")
        if "Session READY." not in "\n".join(call.stdout):
            raise ConnectionLostError(
                f"colab new did not open session {self.session!r} (exit {call.exit_code}: {said})")
        log.info("colab session %s opened (%s)", self.session, self.gpu or "CPU runtime")
        self._opened()

    # -- the seam -----------------------------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float) -> CommandResult:
        token = secrets.token_hex(8)
        inner = max(1.0, timeout - max(15.0, timeout / 4))  # the kernel's command ends before the client is stopped
        snippet = _RUN.format(token=token, command=base64.b64encode(command.encode()).decode(), timeout=inner)
        with tempfile.TemporaryDirectory(prefix="cgpu_kit_colab_") as tmp:
            code = Path(tmp) / "command.py"
            code.write_text(snippet)
            call = self._session_call(["exec", "--timeout", f"{timeout:.0f}", "-f", str(code)], timeout=timeout,
                                      done=f"CGPUKIT_{token}_E ")
        begin, end = f"CGPUKIT_{token}_B", re.compile(rf"CGPUKIT_{token}_E (\d+|T)$")
        lines = call.stdout
        starts = [i for i, line in enumerate(lines) if line == begin]
        ends = [i for i, line in enumerate(lines) if end.search(line)]
        if not starts or not ends:
            raise ConnectionLostError(
                f"colab exec lost its answer {'before the command began' if not starts else 'before its end'} "
                f"(exit {call.exit_code}: {call.said[-400:]})",
                output=redact("\n".join(lines[starts[0] + 1:] if starts else [])))
        body = lines[starts[0] + 1: ends[-1]]
        if body and body[-1] == "":
            body = body[:-1]  # the newline printed before the end marker
        status = end.search(lines[ends[-1]]).group(1)
        if status == "T":
            raise CallTimeoutError(
                f"the command did not finish within {inner:.0f}s on the runtime and was stopped there",
                output="\n".join(body))
        return CommandResult(int(status), "\n".join(body))

    def _send_one(self, local: Path, remote: str, *, deadline: float) -> CommandResult:
        """One ``colab upload``; the caller verifies what arrived."""
        call = self._session_call(["upload", "--", str(local.absolute()), remote],
                                  timeout=max(deadline - time.monotonic(), 30.0), done="[colab] Uploaded ")
        self._refused(call, f"colab upload of {local.name} to {remote}")
        return CommandResult(call.exit_code, f"colab upload exit {call.exit_code}: {call.said[-300:]}")

    @staticmethod
    def _refused(call: _Call, what: str) -> None:
        said = call.said
        for pattern, advice in REFUSED:
            if call.exit_code != 0 and pattern.search(said):
                raise CallRefusedError(f"{what} was refused: {said[:500]} ({advice})", output=said)

    def get(self, remote: str, local: Path, *, timeout: float) -> None:
        """``colab download`` into a file beside ``local``, renamed into place once its sha256 matches."""
        remote = self._absolute(remote)
        deadline = time.monotonic() + timeout
        q, folder = sh(remote), sh(os.path.dirname(remote))
        # Jupyter sends a notebook as parsed JSON, which the client writes back as a Python repr: fetch its bytes
        # through a link of another name (left in the job's folder, which goes at the end)
        source = f"{remote}.bytes" if remote.endswith(".ipynb") else remote
        link = f"ln -f -- {q} {sh(source)} 2>/dev/null || cp -f -- {q} {sh(source)}; " if source != remote else ""
        result = self.run(
            f"if [ -f {q} ]; then {link}{have_line(q)}; "
            f"elif [ -d {folder} ]; then echo missing; else echo nofolder; fi", timeout=min(timeout, 120.0),
        ).check(f"checking {remote}")
        words = result.output.split()
        if words[:1] == ["nofolder"]:
            raise RuntimeLostError(f"{remote}: neither the file nor its folder is on the runtime", output=result.output)
        if words[:1] == ["missing"]:
            raise RemoteCommandError(f"{remote}: no such file on the runtime", exit_code=2, output=result.output)
        if len(words) != 3 or words[0] != "have" or not words[1].isdigit():
            raise ConnectionLostError(f"the check of {remote} came back garbled", output=result.output)
        size, digest = int(words[1]), words[2]
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{local.name}.partial")
        partial.unlink(missing_ok=True)
        try:
            if size > self.copy_piece_bytes:
                self._get_in_pieces(source, partial, deadline=deadline)
            else:
                self._download(source, partial, deadline=deadline)
            if partial.stat().st_size != size or file_sha256(partial) != digest:
                raise ConnectionLostError(f"downloading {remote}: what arrived does not match the runtime's sha256")
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)

    def _download(self, remote: str, local: Path, *, deadline: float) -> None:
        call = self._session_call(["download", "--", remote, str(local.absolute())],
                                  timeout=max(deadline - time.monotonic(), 30.0), done="[colab] Downloaded ")
        self._refused(call, f"colab download of {remote}")
        if not local.is_file():
            raise ConnectionLostError(
                f"colab download of {remote} wrote nothing (exit {call.exit_code}: {call.said[-300:]})")

    def _get_in_pieces(self, remote: str, partial: Path, *, deadline: float) -> None:
        """Split a large file on the runtime, fetch the pieces one by one and join them here."""
        prefix = f"{remote}.piece"
        listing = self.run(f"rm -f -- {sh(prefix)}[0-9]*; split -b {self.copy_piece_bytes} -a 4 -d -- {sh(remote)} "
                           f"{sh(prefix)} && ls -1 -- {sh(prefix)}[0-9]*",
                           timeout=max(deadline - time.monotonic(), 60.0)).check(f"splitting {remote}")
        pieces = sorted(line for line in listing.output.splitlines() if line.startswith(prefix))
        try:
            with open(partial, "wb") as out, tempfile.TemporaryDirectory(prefix="cgpu_kit_pieces_") as tmp:
                for piece in pieces:
                    target = Path(tmp) / "piece"
                    self._download(piece, target, deadline=deadline)
                    with open(target, "rb") as f:
                        shutil.copyfileobj(f, out)
                    target.unlink()
        finally:
            self.run(f"rm -f -- {sh(prefix)}[0-9]*", timeout=60)

    def close(self) -> None:
        """Stop the session (``colab stop``) unless it is to be kept; a failure only warns."""
        if self.keep_session or self.state != "open":
            return
        self.state = "gone"
        try:
            call = self._invoke(["stop", "-s", self.session], timeout=60, done="Session terminated.")
            if "Session terminated." not in "\n".join(call.stdout):
                log.warning("colab stop -s %s did not confirm (%s); check `colab sessions`", self.session, call.said)
        except Exception as exc:  # at exit nothing may raise; the user can stop it by hand
            log.warning("the colab session %s may still hold a runtime (%s): run `colab stop -s %s`",
                        self.session, exc, self.session)
