"""A stand-in for the ``cgpu`` command-line tool, faithful to ``shared/reference/cgpu-cli.md``.

Its "Colab runtime" is this machine: the server root is ``/``, the runtime's content folder (what a
recycle wipes) is ``$CGPU_FAKE_CONTENT`` (default ``/content``). ``run`` types the command into a fresh
interactive bash on a pseudo-terminal, exactly as cgpu types it into a Jupyter terminal, followed by cgpu's
own exit-marker lines, and filters the output as cgpu does (``\\r`` and ANSI stripped, empty lines and the
``exit``/``PS1=``/``stty`` lines dropped, a leading ``/# `` cut). A program that reads stdin really
swallows what follows it, and the terminal's stderr arrives on stdout. ``copy`` refuses what a stock Jupyter
server refuses, in the real client's words (seen running, see the reference): a hidden destination (400), a
missing folder (500, ``[Errno 2]``), a missing local file (``ENOENT``) or a folder (``not a file.``).

Environment:

- ``CGPU_FAKE_AUTH``: ``missing`` (no credentials: exit 1 at once) or ``browser`` (waits forever for a
  browser login); anything else is logged in.
- ``CGPU_FAKE_CONTENT``: the runtime's content folder, wiped by a recycle; it also names the runtime, whose
  processes carry ``CGPU_FAKE_RUNTIME=<id>`` in their environment so a recycle can kill them.
- ``CGPU_FAKE_LATENCY``: seconds every call waits before it starts (a slow network, for benchmarks).
- ``CGPU_FAKE_LOG``: a JSON-lines file; one record per invocation (what it ran, which faults, exit status,
  and for ``copy`` whether a complete file was written).
- ``CGPU_FAKE_RULES``: a JSON file of fault rules, with its counters kept in ``<file>.state``::

      {"rules": [{"fault": "lose_end", "command": "run", "match": "runtime.status", "nth": 2}]}

  ``fault``: ``never_starts`` (exit 1 before running anything), ``lose_end`` (runs, but the end of its
  output and its exit marker are lost; ``keep``: fraction of output lines that arrive, default 0.5;
  ``partial``: for copy, only half the file is written), ``slow`` (waits ``seconds`` before running),
  ``recycle`` (the runtime is recycled just before the call runs: content wiped, processes killed),
  ``refuse`` (copy only: the server refuses the destination with a 400, as it does a hidden path).
  ``command``: ``run``, ``copy`` or ``*``; ``match``: a substring of the command (for copy: of
  ``SOURCE DEST``); ``after``: count only calls after one whose text contained this substring;
  ``nth``: the first matching call that fires (1-based, default 1); ``times``: how many calls in a row fire.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from typing import Any

ACCOUNT = "Test User <test@example.com>"
EXIT_SENTINEL_PREFIX = "__COLAB_CLI_EXIT__"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
PROMPT_PREFIX = "/# "
SUPPRESSED = {"PS1=", "stty -echo", "stty echo", "exit", "logout"}
NO_EXIT_CODE = "Command finished without reporting an exit code; assuming failure (exit code 1)."
RUN_FLAGS = {"--new-runtime", "--cpu", "--tpu", "-v", "--verbose"}


# -- the runtime's identity and its recycling ------------------------------------------------------------


def content_dir() -> Path:
    return Path(os.environ.get("CGPU_FAKE_CONTENT") or "/content")


def runtime_id(content: Path | None = None) -> str:
    return hashlib.sha1(str((content or content_dir()).absolute()).encode()).hexdigest()[:16]


def runtime_pids(content: Path | None = None) -> list[int]:
    """Processes started on this runtime (they carry its tag in their environment)."""
    tag = f"CGPU_FAKE_RUNTIME={runtime_id(content)}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def kill_runtime_processes(content: Path | None = None) -> int:
    """Kill every process of the runtime (again until none is left); return how many were killed."""
    killed = 0
    for _ in range(20):
        pids = runtime_pids(content)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return killed


def recycle(content: Path | None = None) -> None:
    """What Colab does to an idle runtime: its processes die and its content folder starts empty."""
    content = (content or content_dir()).absolute()
    if content == Path("/") or content == Path.home():
        raise SystemExit(f"cgpu fake: refusing to wipe {content}")
    kill_runtime_processes(content)
    if content.is_dir():
        for child in content.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


# -- fault rules --------------------------------------------------------------------------------------------


def _faults(command: str, text: str) -> list[dict[str, Any]]:
    """The rules that fire for this call; counters live in the rules file's state file, under a lock."""
    rules_path = os.environ.get("CGPU_FAKE_RULES")
    if not rules_path:
        return []
    rules = json.loads(Path(rules_path).read_text()).get("rules", [])
    state_path = Path(rules_path + ".state")
    with open(rules_path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        counts = state.setdefault("counts", {})
        armed = state.setdefault("armed", {})
        fired = state.setdefault("fired", {})
        out = []
        for n, rule in enumerate(rules):
            key = str(n)
            if rule.get("after") and not armed.get(key):
                if rule["after"] in text:
                    armed[key] = True
                continue
            if rule.get("command", "*") not in ("*", command) or rule.get("match", "") not in text:
                continue
            counts[key] = counts.get(key, 0) + 1
            first = int(rule.get("nth", 1))
            if first <= counts[key] < first + int(rule.get("times", 1)):
                fired[key] = fired.get(key, 0) + 1
                out.append(rule)
        state_path.write_text(json.dumps(state))
    return out


def _log(record: dict[str, Any]) -> None:
    path = os.environ.get("CGPU_FAKE_LOG")
    if not path:
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")


# -- login ---------------------------------------------------------------------------------------------------


def _login() -> None:
    """Fail as cgpu does when it is not logged in; return when it is."""
    mode = os.environ.get("CGPU_FAKE_AUTH", "")
    if mode == "missing":
        print("\n".join([
            "Missing Colab OAuth credentials.",
            "Provide COLAB_CLIENT_ID and COLAB_CLIENT_SECRET via:",
            "  • Environment variables (e.g. in a .env file)",
            "  • or cgpu.config.json / ~/.config/cgpu/config.json (legacy colab-cli.* files are still supported)",
            "Validation errors: clientId: String must contain at least 1 character(s)",
        ]), file=sys.stderr, flush=True)
        raise SystemExit(1)
    if mode == "browser":
        print("No cached session found. Starting OAuth login...", flush=True)
        print("Opened browser for Google login. If it did not open, visit:", flush=True)
        print("https://accounts.google.com/o/oauth2/v2/auth?access_type=offline&state=" + uuid.uuid4().hex, flush=True)
        while True:  # the loopback server waits for a browser that never comes
            time.sleep(3600)


# -- run -----------------------------------------------------------------------------------------------------


def _filter(line: str, marker: str, verbose: bool) -> tuple[str | None, int | None]:
    """cgpu's flushLine: returns (line to print or None, exit code if this was the marker line)."""
    normalized = ANSI.sub("", line.replace("\r", ""))
    without_prompt = normalized[len(PROMPT_PREFIX):] if normalized.startswith(PROMPT_PREFIX) else normalized
    target = without_prompt.strip()
    if target.startswith(marker + ":"):
        try:
            return None, int(target[len(marker) + 1:])
        except ValueError:
            return None, None
    if not verbose and (target.startswith("printf '" + EXIT_SENTINEL_PREFIX) or target in SUPPRESSED):
        return None, None
    out = line if verbose else without_prompt
    return (out if out else None), None


def _terminal_bash() -> tuple[subprocess.Popen, int]:
    master, slave = os.openpty()
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("CGPU_FAKE_") or name == "CGPU_BIN":
            del env[name]
    # the runtime's python3 is the interpreter running this stand-in (not a slow version-manager shim)
    path = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.update(PS1=r"\w# ", TERM="xterm-256color", HISTFILE="/dev/null", CGPU_FAKE_RUNTIME=runtime_id(), PATH=path)
    proc = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave, stderr=slave, cwd="/", env=env,
        start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    return proc, master


def _read(master: int, timeout: float) -> bytes | None:
    """Bytes from the terminal; b"" when nothing came within ``timeout``; None when it closed."""
    ready, _, _ = select.select([master], [], [], timeout)
    if not ready:
        return b""
    try:
        data = os.read(master, 1 << 16)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return None
        raise
    return data or None


def run_command(command: str, *, verbose: bool, lose: dict[str, Any] | None) -> int:
    marker = f"{EXIT_SENTINEL_PREFIX}{uuid.uuid4()}"
    proc, master = _terminal_bash()
    seen = b""
    deadline = time.monotonic() + 10
    while b"# " not in seen and time.monotonic() < deadline:  # the terminal shows its prompt
        data = _read(master, 0.1)
        if data is None:
            break
        seen += data
    payload = "\n".join([
        "stty -echo", "PS1=", command, "__COLAB_CLI_STATUS=$?", "stty echo",
        f"printf '{marker}:%s\\n' \"$__COLAB_CLI_STATUS\"", "exit", "",
    ])
    os.write(master, payload.encode())
    buffered = seen  # the prompt cgpu's websocket received before the command: part of the output
    out_lines: list[str] = []
    exit_code: int | None = None
    held: list[str] = []

    def flush(raw: bytes) -> None:
        nonlocal exit_code
        line, code = _filter(raw.decode("utf-8", errors="replace"), marker, verbose)
        if code is not None:
            exit_code = code
        if line is not None:
            (held if lose else out_lines).append(line)

    quiet_since: float | None = None
    while True:
        data = _read(master, 0.1)
        if data is None:
            break
        if data:
            quiet_since = None
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for raw in lines:
                flush(raw)
            if out_lines:
                sys.stdout.write("".join(line + "\n" for line in out_lines))
                sys.stdout.flush()
                out_lines.clear()
        elif proc.poll() is not None:
            # bash has exited; a stray background process may still hold the terminal: drain, then close
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.3:
                break
    if buffered:
        flush(buffered)
    os.close(master)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGHUP)
        except ProcessLookupError:
            pass
    proc.wait()
    if lose:
        keep = held[: int(len(held) * float(lose.get("keep", 0.5)))]
        sys.stdout.write("".join(line + "\n" for line in keep))
        exit_code = None
    elif out_lines:
        sys.stdout.write("".join(line + "\n" for line in out_lines))
    sys.stdout.flush()
    if exit_code is None:
        print(NO_EXIT_CODE, file=sys.stderr, flush=True)
        return 1
    return exit_code


# -- copy ----------------------------------------------------------------------------------------------------


def remote_destination(source: str, destination: str | None) -> str:
    """cgpu's mapping: default /content/<basename>; empty and ``..`` segments dropped (not resolved); from ``/``."""
    dest = destination or f"/content/{os.path.basename(source)}"
    return "/" + "/".join(p for p in dest.replace("\\", "/").split("/") if p and p != "..")


def _format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value, units = n / 1024, ["KB", "MB", "GB", "TB"]
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {units[unit]}"


def copy_file(source: str, destination: str | None, faults: list[dict[str, Any]], record: dict[str, Any]) -> int:
    local = os.path.abspath(source)
    if not os.path.exists(local):
        print(f"ENOENT: no such file or directory, stat '{local}'", file=sys.stderr)
        return 1
    if not os.path.isfile(local):
        print(f"Cannot upload {local}: not a file.", file=sys.stderr)
        return 1
    data = Path(local).read_bytes()
    remote = remote_destination(source, destination)
    record["dest"] = remote
    parent = os.path.dirname(remote)
    if any(part.startswith(".") for part in remote.split("/")):  # a stock Jupyter server refuses hidden paths
        print(f'Upload failed (400 Bad Request): {{"message": "Cannot create file or directory \'{remote}\'", '
              '"reason": null}', file=sys.stderr)
        return 1
    if not os.path.isdir(parent):
        print(f'Upload failed (500 Internal Server Error): {{"message": "Unexpected error while saving file: '
              f'{remote.lstrip("/")} [Errno 2] No such file or directory: \'{remote}\'", "reason": null}}', file=sys.stderr)
        return 1
    if any(f["fault"] == "refuse" for f in faults):  # as the server answers a path it will never accept
        print(f'Upload failed (400 Bad Request): {{"message": "Cannot create file or directory \'{remote}\'", '
              '"reason": null}', file=sys.stderr)
        return 1
    lose = next((f for f in faults if f["fault"] == "lose_end"), None)
    body = data[: len(data) // 2] if lose and lose.get("partial") else data
    Path(remote).write_bytes(body)
    record["complete"] = len(body) == len(data)
    if lose:
        print("socket hang up", file=sys.stderr)
        return 1
    print(f"Uploaded: {os.path.basename(source)} → {remote} ({_format_bytes(len(data))})")
    return 0


# -- the command line ---------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    args = list(argv)
    while args and args[0] in ("-c", "--config", "--force-login"):
        args = args[2:] if args[0] in ("-c", "--config") else args[1:]
    if not args:
        print("Usage: cgpu [options] [command]", file=sys.stderr)
        return 1
    command, rest = args[0], args[1:]
    if command not in ("run", "copy", "status", "logout", "connect"):
        print(f"error: unknown command '{command}'", file=sys.stderr)
        return 1
    flags = {a for a in rest if a in RUN_FLAGS}
    words = [a for a in rest if a not in RUN_FLAGS]
    if command == "run":
        if not words:
            print("error: missing required argument 'command'", file=sys.stderr)
            return 1
        text = words[0] + "".join(" " + shlex.quote(w) for w in words[1:])
    elif command == "copy":
        text = " ".join(words)
    else:
        text = command
    record: dict[str, Any] = {"pid": os.getpid(), "cmd": command, "text": text, "start": time.time(), "faults": []}
    try:
        _login()
        latency = float(os.environ.get("CGPU_FAKE_LATENCY") or 0)
        if latency:
            time.sleep(latency)
        faults = _faults(command, text)
        record["faults"] = [f["fault"] for f in faults]
        print(f"Authenticated as {ACCOUNT}", flush=True)
        if command == "status":
            print("Authenticated as Test User. Eligible GPUs: T4")
            code = 0
        elif command in ("logout", "connect"):
            print("cgpu fake: not supported", file=sys.stderr)
            code = 1
        elif any(f["fault"] == "never_starts" for f in faults):
            print("Failed to create remote terminal: Bad Gateway", file=sys.stderr)
            code = 1
        else:
            for f in faults:
                if f["fault"] == "slow":
                    time.sleep(float(f.get("seconds", 30)))
            if "--new-runtime" in flags or any(f["fault"] == "recycle" for f in faults):
                recycle()
            lose = next((f for f in faults if f["fault"] == "lose_end"), None)
            if command == "run":
                code = run_command(text, verbose=bool(flags & {"-v", "--verbose"}), lose=lose)
            else:
                if not words or len(words) > 2:
                    print("error: copy takes <source> [destination]", file=sys.stderr)
                    code = 1
                else:
                    code = copy_file(words[0], words[1] if len(words) > 1 else None, faults, record)
        record["exit"] = code
        return code
    except SystemExit as exc:
        record["exit"] = exc.code
        raise
    finally:
        record["end"] = time.time()
        _log(record)
