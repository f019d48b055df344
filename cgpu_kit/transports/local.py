"""The embedded runtime: a work folder on this machine, driven exactly as a remote one is."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ..exceptions import CallTimeoutError, MissingDependencyError, RemoteCommandError
from ..requirements import Requirements
from ..util import atomic_copy, cache_dir, file_sha256, kill_group
from .base import CommandResult, Transport


def default_local_root() -> str:
    root = os.environ.get("CGPU_KIT_LOCAL_ROOT")
    if root:
        return root
    return str(cache_dir("runtime"))


class LocalTransport(Transport):
    """Runs commands with bash on this machine; "remote" paths are paths of this machine."""

    name = "local"
    poll_interval = 0.25
    chunk_seconds = 0.0
    shares_files = True

    def __init__(self, remote_root: str | None = None) -> None:
        super().__init__(remote_root or default_local_root())
        Path(self.remote_root).mkdir(parents=True, exist_ok=True)
        self.python = sys.executable
        #: each running batch's results as read by its last poll (runtime/tally.py), until it has finished
        self._tallies: dict[str, Any] = {}
        self._tallies_lock = threading.Lock()

    def run(self, command: str, *, timeout: float) -> CommandResult:
        proc = subprocess.Popen(
            ["bash", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc, wait=False)
            out, _ = proc.communicate()
            raise CallTimeoutError(f"local command did not finish within {timeout:.0f}s",
                                   output=out.decode(errors="replace")) from None
        return CommandResult(proc.returncode, out.decode(errors="replace"))

    def put(self, local: Path, remote: str, *, timeout: float) -> bool:
        dest = Path(remote)
        if dest.is_file() and dest.stat().st_size == local.stat().st_size and file_sha256(dest) == file_sha256(local):
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(local, dest)
        return True

    def get(self, remote: str, local: Path, *, timeout: float) -> None:
        try:
            atomic_copy(Path(remote), local)
        except FileNotFoundError:
            raise RemoteCommandError(f"{remote}: no such file on the runtime", exit_code=1) from None

    def start_ahead(self, command: str) -> bool:
        """A standby driver starts in milliseconds here, and its kernel boots while the inputs are probed."""
        return self.run(command, timeout=30).ok

    def read_status(self, work_dir: str, since: int) -> dict:
        """Read in this process: polling costs no interpreter start, so the local runtime can poll often, and
        each poll reads only the results added since the last one."""
        from ..runtime import layout
        from ..runtime.status import status
        from ..runtime.tally import ResultsTally

        with self._tallies_lock:  # one look at a time: a tally is not shared between threads
            tally = self._tallies.get(work_dir)
            if tally is None or since < tally.keep_from:
                tally = self._tallies[work_dir] = ResultsTally(Path(work_dir) / layout.RESULTS, since)
            answer = status(Path(work_dir), since, tally)
            if answer["state"] not in ("running", "uploaded"):  # over or gone: a later look reads it afresh
                self._tallies.pop(work_dir, None)
            tally.drop_before(since)  # the poller has those
        return answer

    def setup(self, requirements: Requirements, *, timeout: float) -> None:
        missing = [m for m in requirements.modules if importlib.util.find_spec(m) is None]
        if missing:
            hint = f"pip install 'cgpu-kit[{requirements.extra}]'" if requirements.extra else "pip install " + " ".join(requirements.pip)
            if requirements.pip_no_deps:
                hint = "pip install --no-deps " + " ".join(f"'{r}'" for r in requirements.pip_no_deps) + " && " + hint
            raise MissingDependencyError(
                f"the local runtime lacks the Python module(s) {', '.join(missing)}: run {hint}"
            )
        absent = [p for p in requirements.programs if shutil.which(p) is None]
        if absent:
            raise MissingDependencyError(
                f"the local runtime lacks the program(s) {', '.join(absent)} on PATH: install them (Debian: apt-get install "
                    f"{' '.join(absent)})"
            )
