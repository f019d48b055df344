"""Where things live in a job's work folder on the runtime; shared by the runtime and the local side."""

from __future__ import annotations

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
PARTS = "parts"
INPUTS = "in"
OUTPUTS = "out"
READY = "ready"


def part_name(index: int) -> str:
    return f"part_{index:04d}.zip"


def ready_name(index: int) -> str:
    return f"out_{index:04d}.zip"


def join(work_dir: str, *names: str) -> str:
    return str(PurePosixPath(work_dir, *names))
