"""Results as values: what a job and each of its items ended as.

Statuses of a job (:class:`JobStatus`):

- ``PENDING``: submitted, not started.
- ``RUNNING``: its steps are under way.
- ``COMPLETED``: every item succeeded (or was skipped because its output was already there, intact).
- ``PARTIAL``: the job ran to its end but some items failed; the others' outputs are delivered.
- ``FAILED``: the job itself failed (no item could run: bad parameters, runtime unreachable, timeout...).
- ``CANCELLED``: the user stopped it; finished items were kept.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import JobCancelledError, JobError, JobTimeoutError


class JobStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


class ItemStatus(str, enum.Enum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # already done in an earlier run, outputs checked intact
    CANCELLED = "cancelled"


@dataclass
class ItemResult:
    """One input of a batch: where it came from, what became of it, and how long each step took."""

    input_path: str
    status: ItemStatus = ItemStatus.PENDING
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    item_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (ItemStatus.DONE, ItemStatus.SKIPPED)

    @property
    def output_path(self) -> str | None:
        return self.outputs[0] if self.outputs else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


@dataclass
class JobResult:
    """The outcome of one job: overall status, the output folder, per-item results and the run's log."""

    success: bool
    output_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    status: JobStatus = JobStatus.PENDING
    job_id: str | None = None
    items: list[ItemResult] = field(default_factory=list)
    log_path: str | None = None  # the executed notebook of the run
    remote_log: str = ""  # tail of the runtime's stderr/log, for failed jobs
    timings: dict[str, float] = field(default_factory=dict)
    report_path: str | None = None  # the job's report.html (cgpu_kit.report), None when none could be made

    @property
    def done(self) -> list[ItemResult]:
        return [i for i in self.items if i.status is ItemStatus.DONE]

    @property
    def failed(self) -> list[ItemResult]:
        return [i for i in self.items if i.status is ItemStatus.FAILED]

    @property
    def skipped(self) -> list[ItemResult]:
        return [i for i in self.items if i.status is ItemStatus.SKIPPED]

    def summary(self) -> str:
        """One line, as the CLI and the panel print it."""
        parts = [f"{len(self.done)} done", f"{len(self.failed)} failed", f"{len(self.skipped)} skipped"]
        cancelled = [i for i in self.items if i.status is ItemStatus.CANCELLED]
        if cancelled:
            parts.append(f"{len(cancelled)} cancelled")
        text = f"job {self.job_id}: {self.status.value}: " + ", ".join(parts)
        if self.error:
            text += f" ({self.error})"
        if self.tools:
            text += "; used " + ", ".join(self.tools)
        runtimes = self.metadata.get("runtimes")
        if runtimes:  # a batch spread over several runtimes
            text += "; by runtime: " + ", ".join(f"{name} {n}" for name, n in runtimes.items())
            dropped = self.metadata.get("dropped") or {}
            if dropped:
                text += "; dropped: " + "; ".join(f"{name} ({why})" for name, why in dropped.items())
        return text

    @property
    def tools(self) -> list[str]:
        """The tools the items name in their ``tool`` metadata (the ffmpeg build of a stabilization), once
        each: which build made an output changes how it looks, so the summary says it."""
        return list(dict.fromkeys(i.metadata["tool"] for i in self.items if i.metadata.get("tool")))

    def raise_for_status(self) -> JobResult:
        """Raise a :class:`JobError` unless every item succeeded; return self otherwise."""
        if self.status is JobStatus.COMPLETED:
            return self
        cls = {JobStatus.CANCELLED: JobCancelledError}.get(self.status, JobError)
        if self.error and "timeout" in self.error.lower():
            cls = JobTimeoutError
        reasons = "; ".join(f"{Path(i.input_path).name}: {i.error}" for i in self.failed)
        raise cls(self.summary() + (f": {reasons}" if reasons else ""), result=self)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["items"] = [i.to_dict() for i in self.items]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobResult:
        """The result as :meth:`to_dict` wrote it (a finished job's ``result.json``)."""
        data = dict(data)
        data["status"] = JobStatus(data.get("status", "pending"))
        data["items"] = [ItemResult(**dict(i, status=ItemStatus(i.get("status", "pending")))) for i in data.get("items", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def merge_results(job_id: str, results: list[JobResult]) -> JobResult:
    """One result of the part-jobs of one spread batch, picked up together."""
    items = [i for r in results for i in r.items]
    failed = [r for r in results if not r.success]
    status = JobStatus.COMPLETED if not failed else (
        JobStatus.FAILED if not any(i.ok for i in items) else JobStatus.PARTIAL)
    return JobResult(success=not failed, output_path=results[0].output_path, status=status, job_id=job_id, items=items,
                     error="; ".join(r.error for r in failed if r.error) or None,
                     metadata={"parts": [r.job_id for r in results]})
