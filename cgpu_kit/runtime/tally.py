"""A batch's ``results.jsonl`` read as it grows.

A poll looks at it often: the local runtime every quarter of a second, a waiting poll on a Colab runtime every
half second (every 50 ms near the end). Each record carries the item's metadata, a stabilized clip's preview
included (30 kB an item), so reading the whole file each time costs a 1000-clip batch 30 MB of JSON a look, on
the cores the items need. A tally parses only the lines appended since its last look.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ResultsTally:
    """The records of one ``results.jsonl`` and the mean time of its items done, updated by :meth:`read`.

    Records are counted as :func:`cgpu_kit.util.read_jsonl` counts them (a line that is not JSON is skipped);
    a line still being written waits for its newline. Only the records from ``keep_from`` on are kept (a poll
    asks for those after the ones it already has); a file that shrank (replaced) is read again from its start.
    """

    def __init__(self, path: Path, keep_from: int = 0) -> None:
        self.path = path
        self.keep_from = keep_from
        self._reset()

    def _reset(self) -> None:
        self.offset = 0
        self.count = 0
        self.kept: list[dict[str, Any]] = []
        self._took = 0.0
        self._timed = 0

    @property
    def item_seconds(self) -> float | None:
        """The mean time of the items done so far (their ``timings.total``), or None before the first."""
        return self._took / self._timed if self._timed else None

    def records(self, since: int) -> list[dict[str, Any]]:
        """The records after the first ``since`` (``since`` at least ``keep_from``)."""
        if since < self.keep_from:
            raise ValueError(f"records from {since} were not kept (only from {self.keep_from})")
        return self.kept[since - self.keep_from:]

    def drop_before(self, since: int) -> None:
        """Keep only the records from ``since`` on (a poller that has the ones before it)."""
        if since > self.keep_from:
            del self.kept[:since - self.keep_from]
            self.keep_from = since

    def read(self) -> ResultsTally:
        """Take in what was appended since the last read."""
        try:
            with open(self.path, "rb") as f:
                if f.seek(0, 2) < self.offset:
                    self._reset()
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            if self.offset:
                self._reset()
            return self
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:  # not JSON (a torn line of a crash), or not UTF-8
                continue
            if not isinstance(rec, dict):
                continue
            if self.count >= self.keep_from:
                self.kept.append(rec)
            self.count += 1
            took = (rec.get("timings") or {}).get("total") if rec.get("status") == "done" else None
            if took:
                self._took += took
                self._timed += 1
        self.offset += end
        return self
