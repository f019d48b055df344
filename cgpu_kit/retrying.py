"""HOW OFTEN a transport call is tried: tenacity around every call of a session's transport.

A :class:`~cgpu_kit.exceptions.TransportError` that says it is retryable (a lost connection, a timeout) is
tried again with exponential backoff; anything else (a command that failed, a refused upload, a job's own
failure) is not. The waits sleep on the manager's clock, so tests assert them without waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tenacity

from .clock import SYSTEM_CLOCK, Clock
from .exceptions import TransportError
from .requirements import Requirements
from .transports.base import CommandResult, Transport

log = logging.getLogger("cgpu_kit.manager")


class RetryPolicy:
    """Tenacity settings for transport calls; ``sleep`` is injectable so tests assert waits without waiting."""

    def __init__(self, attempts: int = 3, multiplier: float = 1.0, max_wait: float = 30.0,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.attempts = attempts
        self.multiplier = multiplier
        self.max_wait = max_wait
        self.sleep = sleep

    def retrying(self, clock: Clock = SYSTEM_CLOCK) -> tenacity.Retrying:
        """The retry loop of one call; without a ``sleep`` of its own it sleeps on ``clock``."""
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.multiplier, max=self.max_wait),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, TransportError) and e.retryable),
            sleep=self.sleep or clock.sleep, reraise=True,
            before_sleep=lambda rs: log.warning(
                "transport call failed (%s); retry %d of %d", rs.outcome.exception(), rs.attempt_number, self.attempts - 1
            ),
        )


class RetryingTransport(Transport):
    """Wraps a transport so each call is retried on transport failures, and counts the calls."""

    def __init__(self, inner: Transport, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self.clock = inner.clock
        self.name = inner.name
        self.python = inner.python
        self.poll_interval = inner.poll_interval
        self.chunk_seconds = inner.chunk_seconds
        self.poll_wait = inner.poll_wait
        self.inline_bytes = inner.inline_bytes
        self.setup_travels = inner.setup_travels
        self.shares_files = inner.shares_files
        self.remote_root = inner.remote_root
        self.retries = 0
        self._retries_lock = threading.Lock()  # calls go side by side (a copy beside its land, tidying, lookahead)

    @property
    def key(self) -> str:
        return self.inner.key

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        for attempt in self.policy.retrying(self.clock):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    with self._retries_lock:
                        self.retries += 1
                return fn(*args, **kwargs)

    def run(self, command: str, *, timeout: float) -> CommandResult:
        return self._call(self.inner.run, command, timeout=timeout)

    def put(self, local: Path, remote: str, *, timeout: float) -> bool:
        return self._call(self.inner.put, local, remote, timeout=timeout)

    def get(self, remote: str, local: Path, *, timeout: float) -> None:
        return self._call(self.inner.get, remote, local, timeout=timeout)

    def setup(self, requirements: Requirements, *, timeout: float) -> None:
        return self._call(self.inner.setup, requirements, timeout=timeout)

    def is_set_up(self, requirements: Requirements, *, timeout: float) -> bool:
        return self._call(self.inner.is_set_up, requirements, timeout=timeout)

    def setup_on_next_batch(self, requirements: Requirements, *, timeout: float, unknown: bool = False) -> None:
        self.inner.setup_on_next_batch(requirements, timeout=timeout, unknown=unknown)

    def send_batch(self, files: Sequence[tuple[Path, str]], *, dirs: Sequence[str],
                   check_free: Callable[[int | None], None] | None, then: str, timeout: float,
                   ahead: str = "", need_bytes: int | None = None) -> CommandResult:
        """Retried whole: every step of a send skips what already arrived, and the launch is idempotent."""
        return self._call(self.inner.send_batch, files, dirs=dirs, check_free=check_free, then=then, timeout=timeout,
                          ahead=ahead, need_bytes=need_bytes)

    def runtime_env(self) -> dict[str, str]:
        return self.inner.runtime_env()

    def start_ahead(self, command: str) -> bool:
        """Not retried: a standby driver is a head start, never needed (the launch starts a driver without one)."""
        return self.inner.start_ahead(command)

    def read_status(self, work_dir: str, since: int) -> dict | None:
        return self.inner.read_status(work_dir, since)

    def close(self) -> None:
        self.inner.close()
