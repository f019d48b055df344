"""What an output folder already holds: one record per finished item, keyed by what made it.

An item's key is made of its content hash, the job type, its parameters and the tool version, so the same
clip with the same settings is recognised whatever its name or folder, and a changed parameter is not.
Records are appended as items finish; a record counts only while its outputs are there with the sha256 they
had when written (checked, not assumed).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .exceptions import OutputLockedError
from .util import append_jsonl, file_sha256, read_jsonl

STATE_DIR = "_cgpu_kit"


def item_key(job_type: str, sha256: str, params: dict[str, Any], version: str) -> str:
    blob = json.dumps([job_type, sha256, params, version], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class Ledger:
    """Finished outputs of an output folder, one record per output stem (the name they share)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / STATE_DIR / "ledger.jsonl"
        self._records: dict[str, dict[str, Any]] | None = None
        self._written: dict[str, dict[str, Any]] | None = None

    def records(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            self._records = {}
            for rec in read_jsonl(self.path):
                self._records[rec["out_stem"]] = rec
        return self._records

    def get(self, stem: str) -> dict[str, Any] | None:
        return self.records().get(stem)

    def intact(self, stem: str, key: str) -> dict[str, Any] | None:
        """The record of ``stem`` if it was made from ``key`` and every output is still there unchanged."""
        rec = self.records().get(stem)
        if rec is None or rec.get("key") != key or rec.get("status") != "done":
            return None
        for name, digest in rec.get("sha256", {}).items():
            path = self.out_dir / name
            if not path.is_file() or path.stat().st_size != rec.get("sizes", {}).get(name, -1):
                return None
            if file_sha256(path) != digest:
                return None
        return rec

    def written(self) -> dict[str, dict[str, Any]]:
        """Each output file the toolkit wrote here (by name), with the size and sha256 it had then."""
        if self._written is None:
            self._written = {}
            for rec in self.records().values():
                for name, digest in rec.get("sha256", {}).items():
                    self._written[name] = {"size": rec.get("sizes", {}).get(name), "sha256": digest}
        return self._written

    def wrote(self, name: str) -> bool:
        """Whether ``name`` in this folder is a file the toolkit wrote (its name and size as recorded)."""
        try:
            if not self.path.is_file():
                return False
            known = self.written().get(name)
            return known is not None and (self.out_dir / name).stat().st_size == known["size"]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def owns(self, name: str) -> bool:
        """Whether the file ``name`` may be replaced: absent, or exactly as the toolkit wrote it."""
        path = self.out_dir / name
        if not path.exists() and not path.is_symlink():
            return True
        known = self.written().get(name)
        if known is None or not path.is_file() or path.is_symlink() or path.stat().st_size != known["size"]:
            return False
        return file_sha256(path) == known["sha256"]

    def changed_outputs(self, stem: str) -> list[str]:
        """Outputs recorded for ``stem`` that are still there but no longer as written (a user edited them)."""
        rec = self.records().get(stem)
        if rec is None:
            return []
        return [name for name in rec.get("sha256", {})
                if ((self.out_dir / name).exists() or (self.out_dir / name).is_symlink()) and not self.owns(name)]

    def stem_for(self, natural: str, key: str, taken: set[str]) -> str:
        """The output stem for an input: its own name unless another input's outputs already have it."""
        stem, n = natural or "item", 1
        while True:
            rec = self.records().get(stem)
            if stem not in taken and (rec is None or rec.get("key") == key):
                return stem
            n += 1
            stem = f"{natural} ({n})"

    def add(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, record)
        self.records()[record["out_stem"]] = record
        self._written = None


class OutputLock:
    """An exclusive lock on an output folder, so two runs never interleave their results there."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STATE_DIR / "lock"
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        """Take the lock (re-entrant: a job adopting another job's leftovers shares its lock)."""
        if self._fd is not None:
            self._depth += 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip()
            os.close(fd)
            raise OutputLockedError(
                f"{self.path.parent.parent} is in use by another run ({holder or 'unknown process'}); "
                "wait for it to finish or choose another output folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        self._depth = 1

    def release_all(self) -> None:
        self._depth = 1
        self.release()

    def release(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._fd is not None and self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
