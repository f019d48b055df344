"""Small file helpers shared by the local side and the runtime side."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .exceptions import ParameterError

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path beside ``dest`` to write to; renamed onto ``dest`` only when the block ends without
    an error (removed otherwise), so a reader never meets a half-written file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temporary file in the same folder, renamed only when complete."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, CHUNK)


def atomic_write_text(dest: Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(dest: Path, data: Any) -> None:
    atomic_write_text(dest, json.dumps(data, indent=1, sort_keys=True, default=str))


def append_jsonl(dest: Path, record: dict[str, Any]) -> None:
    """Append one record as one line, flushed and synced, so a crash never leaves half a line behind."""
    line = json.dumps(record, sort_keys=True, default=str, ensure_ascii=True) + "\n"
    with open(dest, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (crash while writing) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def input_names(inputs: Any) -> list[str]:
    """The inputs as strings, or a :class:`ParameterError` naming the one that is not a path."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if inputs is None or isinstance(inputs, (bytes, bytearray)) or not isinstance(inputs, Iterable):
        raise ParameterError(
            f"inputs must be a file path or a list of file paths (str or pathlib.Path), got {type(inputs).__name__}",
            name="inputs",
        )
    names = []
    for n, p in enumerate(inputs):
        if not isinstance(p, (str, os.PathLike)) or isinstance(p, (bytes, bytearray)):
            raise ParameterError(
                f"input #{n + 1} must be a file path (str or pathlib.Path), got {type(p).__name__} {p!r:.60}", name="inputs"
            )
        name = os.fspath(p)
        if not isinstance(name, str) or not name:
            raise ParameterError(f"input #{n + 1} must be a non-empty file path, got {name!r:.60}", name="inputs")
        names.append(name)
    return names


def output_folder(out_dir: Any) -> Path:
    """The output folder, absolute and normalised (``in/../out`` is ``out``), or a :class:`ParameterError`
    when it cannot be one (a file, a folder this user cannot write to); checked before anything runs."""
    if not isinstance(out_dir, (str, os.PathLike)) or isinstance(out_dir, (bytes, bytearray)) or not os.fspath(out_dir):
        raise ParameterError(f"the output folder must be a path (str or pathlib.Path), got {out_dir!r:.60}", name="out_dir")
    path = Path(os.path.normpath(Path(os.fspath(out_dir)).expanduser().absolute()))
    probe_dir = path
    while not probe_dir.exists() and probe_dir.parent != probe_dir and not probe_dir.is_symlink():
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        what = "is" if probe_dir == path else f"is inside {probe_dir}, which is"
        raise ParameterError(f"output folder {path} {what} a file, not a folder; give a folder (-o/out_dir)", name="out_dir")
    if probe_dir.exists() and not os.access(probe_dir, os.W_OK | os.X_OK):
        raise ParameterError(
            f"output folder {path} cannot be written ({probe_dir} is not writable by this user); "
            "choose another output folder or fix its permissions", name="out_dir",
        )
    return path


def real_path(path: Path) -> Path:
    """``path`` with its links resolved, or as given when they loop (the check reports the loop per item)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.normpath(path))


def cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/cgpu_kit/...`` (``~/.cache`` without it): the one place the toolkit keeps per-user state."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache, "cgpu_kit", *parts)


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a text file ('' when it cannot be read): what a log shows of a failure."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kill_group(proc: subprocess.Popen, *, wait: bool = True) -> None:
    """Kill a process started with ``start_new_session=True`` and all it started (its process group, even
    when the leader has already exited); the process alone when the group cannot be signalled."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
    if wait:
        proc.wait()


def last_json_line(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object (a remote helper's answer after whatever a shell or a
    terminal printed before it); ``None`` when there is none or it is garbled."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
