"""``python -m cgpu_kit.runtime.status WORK_DIR [SINCE]``: one JSON line saying how a batch stands.

``state`` is ``absent`` (no work folder: a recycled runtime), ``uploaded`` (never launched), ``running``,
``finished``, or ``dead`` (launched, not running, no status: the driver was killed). ``results`` holds the
item records after the first ``SINCE``; ``ready`` the output parts that can be fetched, with size and sha256.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..util import read_jsonl
from . import layout


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def status(work_dir: Path, since: int = 0) -> dict[str, Any]:
    if not work_dir.is_dir():
        return {"state": "absent"}
    out: dict[str, Any] = {}
    status_file = work_dir / layout.STATUS
    if status_file.exists():
        out.update(state="finished", **json.loads(status_file.read_text()))
    elif _alive(work_dir / layout.PID):
        out["state"] = "running"
    elif (work_dir / layout.PID).exists():
        out["state"] = "dead"
    else:
        out["state"] = "uploaded"
    progress = work_dir / layout.PROGRESS
    if progress.exists():
        try:
            out["progress"] = json.loads(progress.read_text())
        except json.JSONDecodeError:
            pass
    records = read_jsonl(work_dir / layout.RESULTS)
    out["results_count"] = len(records)
    out["results"] = records[since:]
    ready = {}
    for meta in sorted((work_dir / layout.READY).glob("out_*.json")):
        try:
            ready[meta.stem + ".zip"] = json.loads(meta.read_text())
        except json.JSONDecodeError:
            continue
    out["ready"] = ready
    parts = work_dir / layout.PARTS
    out["parts"] = sorted(p.name for p in parts.glob("part_*.zip")) if parts.is_dir() else []
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    since = int(argv[1]) if len(argv) > 1 else 0
    print(json.dumps(status(Path(argv[0]), since), sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
