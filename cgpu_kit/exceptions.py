"""The one exception tree of cgpu_kit.

::

    CgpuKitError                     root: catch this to catch everything cgpu_kit raises
    ├── ParameterError               a job parameter is out of range or of the wrong kind (names it and its bounds)
    ├── InputError                   an input file cannot be used (names the file and what to do)
    ├── MissingDependencyError       a tool or optional package is missing (says what to install)
    ├── ArchiveError                 an archive is corrupt or unsafe (absolute paths, `..`, links out)
    ├── OutputLockedError            another run is writing to the same output folder
    ├── DiskSpaceError               the batch would not fit on this machine's or the runtime's disk
    ├── TransportError               the runtime could not be reached or the call's outcome is unknown
    │   ├── ConnectionLostError      the call ran (maybe) but its framing/exit marker never arrived: retried
    │   ├── CallTimeoutError         the call did not finish within its timeout: retried
    │   ├── CgpuAuthError            cgpu is not logged in; never retried, says what to run
    │   ├── ColabAuthError           Google's colab client is not logged in (it would wait for a pasted
    │   │                            code); never retried, says what to run
    │   ├── CallRefusedError         the call was refused for a reason retrying cannot change (a 4xx from the
    │   │                            runtime's server: hidden or bad path, missing folder; a missing local file)
    │   └── RuntimeLostError         the runtime was recycled (work folder or set-up marker gone)
    ├── RemoteCommandError           a command ran on the runtime and exited non-zero (not retried)
    └── JobError                     a whole job failed (raised only by JobResult.raise_for_status)
        ├── JobTimeoutError          the job ran past its timeout
        └── JobCancelledError        the job was cancelled

Jobs report per-item problems as values (``ItemResult.error``); exceptions are for the edges.
"""

from __future__ import annotations

import errno


class CgpuKitError(Exception):
    """Root of every error cgpu_kit raises on purpose."""


class ParameterError(CgpuKitError, ValueError):
    """A job parameter is unknown, of the wrong type or outside its bounds; raised before anything runs."""

    def __init__(self, message: str, *, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class InputError(CgpuKitError):
    """An input file cannot be processed."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class MissingDependencyError(CgpuKitError):
    """A program or an optional Python package that the job needs is not installed."""


class ArchiveError(CgpuKitError):
    """An archive is corrupt, or an entry would land outside its destination folder."""


class OutputLockedError(CgpuKitError):
    """Another process holds the lock of the output folder."""


class DiskSpaceError(CgpuKitError):
    """Not enough free disk space here or on the runtime for the batch; checked before anything is sent."""


class TransportError(CgpuKitError):
    """The runtime could not be reached, or the outcome of a call is unknown.

    ``retryable`` tells the manager's retry policy whether trying the same call again may help.
    """

    retryable: bool = True

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class ConnectionLostError(TransportError):
    """The call's end marker never arrived: the connection broke, whatever the exit status said."""


class CallTimeoutError(TransportError):
    """The call did not finish within its timeout and was killed."""


class CgpuAuthError(TransportError):
    """The cgpu tool is not logged in (missing credentials, or it waits for a browser login)."""

    retryable = False


class ColabAuthError(TransportError):
    """Google's ``colab`` client has no valid login: it asked for an authorization code (which, with its stdin
    closed, it never gets) or found no default credentials. Raised within seconds, never retried."""

    retryable = False


class CallRefusedError(TransportError):
    """The runtime (or cgpu) refused the call for a reason that trying again cannot change.

    Raised for a 4xx answer of the runtime's Jupyter server (a hidden path, a bad path), a missing folder on
    the runtime, or a local file that is not there; carries the server's own words (``output``) and says what
    to do. Never retried: the batch ends at once instead of spending its retries on a certain refusal.
    """

    retryable = False


class RuntimeLostError(TransportError):
    """The runtime lost its files (Colab recycled it): set it up again and resume."""

    retryable = False


class RemoteCommandError(CgpuKitError):
    """A command ran on the runtime and exited with a non-zero status; retrying would not help."""

    def __init__(self, message: str, *, exit_code: int, output: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.output = output


class JobError(CgpuKitError):
    """A job failed as a whole; carries its :class:`~cgpu_kit.JobResult`."""

    def __init__(self, message: str, *, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class JobTimeoutError(JobError):
    """The job ran past its timeout."""


class JobCancelledError(JobError):
    """The job was cancelled by the user."""


def describe_failure(exc: BaseException) -> str:
    """A failure as one line a user can act on: a full disk says so and that finished outputs are kept."""
    if isinstance(exc, OSError) and not isinstance(exc, CgpuKitError):
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return (f"the disk is full{where}; the outputs finished so far are kept: free some space, then run the "
                    "same command again to do the rest")
        return f"{exc.strerror or exc}{where}; check that folder and run the same command again"
    return str(exc)
