"""What a processor gets for one item: its input, where to write, its deadline, and a safe way to run tools."""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..util import kill_group


class ItemError(Exception):
    """An item failed for a reason worth showing as it is (no traceback in the user's summary)."""


class ItemTimeout(ItemError):
    """The item ran past its own timeout."""


class ItemCancelled(ItemError):
    """The batch was cancelled while this item ran."""


@dataclass
class RuntimeItem:
    """One input as the runtime sees it: a safe local file name and the manifest's record of it."""

    item_id: str
    name: str  # original file name, for messages only: never used to build a path or a command
    path: Path
    part: int
    probe: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    #: where the input is, on a runtime that reads it in place (``path`` is then a link to it); else empty
    source: str = ""


class ItemContext:
    """Per-item services for a processor.

    ``output(suffix)`` gives the path of an output file (always a safe name); ``run(argv)`` runs a tool with
    stdin closed, the item's remaining time as its timeout, cancellation honoured, and the tail of its
    stderr kept for the item's result. ``cores`` is the item's share of the CPU where items run side by side
    (a tool given that many threads does not fight the others for the cores); None where it runs alone, and
    its tools pick their own thread counts.
    """

    def __init__(
        self, item: RuntimeItem, out_dir: Path, params: dict[str, Any], *, timeout: float,
        cancelled: Callable[[], bool] = lambda: False, logger: logging.Logger | None = None,
        cores: int | None = None,
    ) -> None:
        self.item = item
        self.cores = cores
        self.out_dir = out_dir
        self.params = params
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.cancelled = cancelled
        self.log = logger or logging.getLogger("cgpu_kit.runtime")
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.metadata: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        out_dir.mkdir(parents=True, exist_ok=True)

    def output(self, suffix: str) -> Path:
        """Path for an output whose name ends with ``suffix`` (``".mp4"``, ``".srt"``, ``".words.json"``)."""
        return self.out_dir / f"output{suffix}"

    def scratch(self, name: str) -> Path:
        """Path for a temporary file of this item, removed with the item's scratch folder."""
        d = self.out_dir.parent.parent / "scratch" / self.item.item_id
        d.mkdir(parents=True, exist_ok=True)
        return d / name

    def remaining(self) -> float:
        """Seconds left before the item's timeout; raises when none are left or the batch was cancelled."""
        self.check()
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.cancelled():
            raise ItemCancelled("cancelled")
        if time.monotonic() >= self.deadline:
            raise ItemTimeout(f"timed out after {self.timeout:.0f}s (the item timeout)")

    def run(self, argv: Sequence[str | os.PathLike], *, step: str | None = None, cwd: Path | None = None) -> str:
        """Run ``argv`` (no shell), return its stdout; raise :class:`ItemError` with the stderr tail on failure."""
        argv = [str(a) for a in argv]
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, cwd=cwd,
        )
        out_chunks: list[bytes] = []
        err_chunks: list[bytes] = []
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=0.2)
                    out_chunks.append(out or b"")
                    err_chunks.append(err or b"")
                    break
                except subprocess.TimeoutExpired:
                    try:
                        self.check()
                    except ItemError:
                        _kill(proc)
                        raise
        finally:
            if proc.poll() is None:
                _kill(proc)
        err_text = b"".join(err_chunks).decode(errors="replace")
        for line in err_text.splitlines():
            if line.strip():
                self.stderr_tail.append(line.rstrip())
        if step:
            self.timings[step] = round(self.timings.get(step, 0.0) + time.monotonic() - started, 3)
        if proc.returncode != 0:
            tail = "\n".join(err_text.strip().splitlines()[-8:])
            raise ItemError(f"{step or Path(argv[0]).name} failed (exit {proc.returncode}): {tail}")
        return b"".join(out_chunks).decode(errors="replace")


_kill = kill_group
