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

    def read_status(self, work_dir: str, since: int) -> dict | None:
        """The batch's status read directly, for transports whose runtime shares this machine's files;
        None means "ask the runtime with a command" (the default)."""
        return None

    def runtime_env(self) -> dict[str, str]:
        """Environment variables that commands running cgpu_kit's runtime modules need (PYTHONPATH...)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional: most transports hold nothing
        """Release what the transport holds locally."""
