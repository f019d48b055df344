"""The seam between WHAT a job does and WHERE it runs.

A transport does three things, each with a timeout: run a shell command on the runtime, put a file there,
get a file back. Everything else (launching a batch detached, polling it, setting the runtime up) is built
from those three by :mod:`cgpu_kit.remote`, the same way for every transport.

Contract for implementations:

- ``run`` returns a :class:`CommandResult` for a command that ran, whatever its exit status, and raises a
  :class:`~cgpu_kit.exceptions.TransportError` when it cannot tell (connection lost, timeout).
- ``put`` is idempotent: a file already on the runtime with the same size and sha256 is not sent again.
- ``get`` writes a temporary file and renames it into place only when it is complete and verified.
- Commands are shell strings built with :func:`shlex.quote` by the caller; remote programs get no stdin.
"""

from __future__ import annotations

import abc
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..clock import SYSTEM_CLOCK, Clock
from ..exceptions import RemoteCommandError

if TYPE_CHECKING:
    from ..requirements import Requirements


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self, what: str) -> CommandResult:
        if self.exit_code != 0:
            tail = "\n".join(self.output.strip().splitlines()[-20:])
            raise RemoteCommandError(
                f"{what} failed on the runtime (exit {self.exit_code}): {tail}", exit_code=self.exit_code, output=self.output
            )
        return self


def free_kib(df_output: str) -> int | None:
    """Free bytes from ``df -Pk``'s last data line, or None when it printed none."""
    for line in reversed(df_output.splitlines()):
        fields = line.split()
        if len(fields) >= 6 and fields[3].isdigit():
            return int(fields[3]) * 1024
    return None


def sh(*argv: str | Path) -> str:
    """A shell command line in which every word is quoted: nothing in it is interpreted by the shell."""
    return " ".join(shlex.quote(str(a)) for a in argv)


class Transport(abc.ABC):
    """Where a batch runs: a local work folder, or a Colab runtime reached through ``cgpu``."""

    name: str = "abstract"
    #: interpreter that runs cgpu_kit's runtime modules on the runtime
    python: str = "python3"
    #: seconds between two polls of a running batch
    poll_interval: float = 2.0
    #: what its own waits (a set-up in progress) sleep on; the manager gives it its pacing clock
    clock: Clock = SYSTEM_CLOCK
    #: the runtime zips finished items for download at most this often (seconds)
    chunk_seconds: float = 30.0
    #: a poll waits this long on the runtime for the batch to end or a chunk to be ready (0: answer at once)
    poll_wait: float = 0.0
    #: a poll brings finished chunks and logs up to this many bytes inline (0: each is fetched with ``get``)
    inline_bytes: int = 0
    #: the set-up is checked (and done when missing) by the next batch's first call, not by calls of its own
    setup_travels: bool = False
    #: the runtime reads this machine's files where they are: a batch's parts name its inputs, not carry them
    shares_files: bool = False

    def __init__(self, remote_root: str) -> None:
        self.remote_root = remote_root.rstrip("/") or "/"

    @property
    def key(self) -> str:
        """Identity of the runtime session; the manager sets each one up once."""
        return f"{self.name}:{self.remote_root}"

    @abc.abstractmethod
    def run(self, command: str, *, timeout: float) -> CommandResult:
        """Run one shell command on the runtime with stdin closed."""

    @abc.abstractmethod
    def put(self, local: Path, remote: str, *, timeout: float) -> bool:
        """Copy a local file to the runtime; return False when it was already there intact."""

    @abc.abstractmethod
    def get(self, remote: str, local: Path, *, timeout: float) -> None:
        """Copy a runtime file to ``local`` atomically."""

    def setup(self, requirements: Requirements, *, timeout: float) -> None:  # noqa: B027 - optional: nothing to set up
        """Make the runtime able to run jobs needing ``requirements``; the manager calls it once per session."""

    def is_set_up(self, requirements: Requirements, *, timeout: float) -> bool:
        """Whether the runtime still holds what :meth:`setup` did (a recycled runtime does not)."""
        return True

    def setup_on_next_batch(self, requirements: Requirements, *, timeout: float, unknown: bool = False) -> None:
        """For transports with ``setup_travels``: the next :meth:`send_batch` checks the set-up for
        ``requirements`` in its first call and sets the runtime up when it is missing (a recycled runtime).
        ``unknown``: the session's first batch, or its runtime was lost: expect to set it up."""
        self.setup(requirements, timeout=timeout)

    def send_batch(self, files: Sequence[tuple[Path, str]], *, dirs: Sequence[str],
                   check_free: Callable[[int | None], None] | None, then: str, timeout: float,
                   ahead: str = "", need_bytes: int | None = None) -> CommandResult:
        """Create ``dirs``, let ``check_free`` see the free bytes of the remote root (it may refuse the batch
        before anything is sent), send ``files`` (local, remote) and run ``then``; returns ``then``'s result.
        ``ahead`` (a standby driver's start) runs in the first call where the transport's calls are dear, so it
        works while the files travel; this default ignores it (:meth:`start_ahead` started it already).
        ``need_bytes``: what ``check_free`` asks of the runtime, for a transport that checks it on the runtime
        in the same call that lands the files (then ``check_free`` refuses the batch afterwards).

        This default costs a call per file; a transport whose calls are dear does it in a few calls whatever
        the number of files."""
        root = self.remote_root
        result = self.run(f"mkdir -p -- {sh(*dirs)} {sh(root)} && df -Pk -- {sh(root)}", timeout=timeout)
        result.check("creating the work folder")
        if check_free is not None:
            check_free(free_kib(result.output))
        for local, remote in files:
            self.put(local, remote, timeout=timeout)
        return self.run(then, timeout=timeout)

    def start_ahead(self, command: str) -> bool:
        """Run ``command`` (a standby driver's start, :meth:`cgpu_kit.remote.RemoteBatch.standby_command`) now,
        while the batch's inputs are still being checked, where a call costs next to nothing (the local runtime);
        False: not run here (a call to a Colab runtime is dear: there it travels with the batch's first call)."""
        return False

    def read_status(self, work_dir: str, since: int) -> dict | None:
        """The batch's status read directly, for transports whose runtime shares this machine's files;
        None means "ask the runtime with a command" (the default)."""
        return None

    def runtime_env(self) -> dict[str, str]:
        """Environment variables that commands running cgpu_kit's runtime modules need (PYTHONPATH...)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional: most transports hold nothing
        """Release what the transport holds locally."""
