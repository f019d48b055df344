"""Where things live in a job's work folder on the runtime; shared by the runtime and the local side."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

JOB_FILE = "job.json"
TEMPLATE = "template.ipynb"
EXECUTED = "executed.ipynb"
RUNTIME_LOG = "runtime.log"
RESULTS = "results.jsonl"
PROGRESS = "progress.json"
STATUS = "status.json"
PID = "pid"
#: a standby driver (kernel started, papermill imported) waiting for its batch; launching renames it to PID
STANDBY = "standby.pid"
CANCEL = "cancel"
#: the work folders of the parts handed to this batch's driver, to run in its kernel once it ends (handover.py),
#: written under a lock on NEXT_LOCK while NEXT_CLOSED (made by the driver as its part ends) is absent
NEXT = "next"
NEXT_LOCK = "next.lock"
NEXT_CLOSED = "next.closed"
PARTS = "parts"
INPUTS = "in"
OUTPUTS = "out"
READY = "ready"
#: where a finished batch's folder goes once a poll has sent all of it (next to the remote root's shipped
#: cgpu_kit, ``cgpu_kit_runtime``), removed by the runtime itself :func:`tidy_seconds` later
TRASH = ("cgpu_kit_runtime", "trash")


def tidy_seconds() -> float:
    """How long a tidied folder stays (a damaged inline copy can be fetched again meanwhile): 300 s, or
    ``CGPU_KIT_TIDY_SECONDS``."""
    try:
        return float(os.environ.get("CGPU_KIT_TIDY_SECONDS") or 300)
    except ValueError:
        return 300.0


def part_name(index: int) -> str:
    return f"part_{index:04d}.zip"


def ready_name(index: int) -> str:
    return f"out_{index:04d}.zip"


def join(work_dir: str, *names: str) -> str:
    return str(PurePosixPath(work_dir, *names))
