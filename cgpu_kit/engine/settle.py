"""The end of a batch: every item gets its final status, the job its own, and the :class:`JobResult` is
written (``result.json``) with the job's report."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..results import ItemResult, ItemStatus, JobResult, JobStatus
from ..util import write_json
from .delivery import find_item

if TYPE_CHECKING:
    from ..jobs.base import CGPUJob

log = logging.getLogger("cgpu_kit.jobs.base")


def finish(job: CGPUJob, error: str | None = None) -> JobResult:
    """Settle every item's status and the job's, and return the :class:`JobResult`."""
    if error and not job.error:
        job.error = error
    # an interrupt after every item finished cancels nothing: the job completed
    cancelled = job.cancel_event.is_set() and any(
        i.status in (ItemStatus.PENDING, ItemStatus.CANCELLED) for i in job.items)
    for result in job.items:
        if result.status is ItemStatus.PENDING:
            if cancelled:
                result.status, result.error = ItemStatus.CANCELLED, "cancelled before it finished"
            else:
                result.status = ItemStatus.FAILED
                result.error = f"{result.input_path}: not processed: {job.error or 'the runtime returned no result for it'}"
        elif result.status is ItemStatus.CANCELLED and not cancelled:
            result.status = ItemStatus.FAILED
            result.error = f"{result.input_path}: stopped: {job.error or 'the batch was stopped'}"
    for result in job.items:
        dup = result.metadata.get("duplicate_of")
        if dup:
            original = find_item(job, dup)
            if original is not None:
                result.outputs = list(original.outputs)
    failed = [i for i in job.items if i.status is ItemStatus.FAILED]
    ok = [i for i in job.items if i.ok]
    if cancelled:
        job.status = JobStatus.CANCELLED
    elif job.error and not ok:
        job.status = JobStatus.FAILED
    elif failed and not ok:
        job.status = JobStatus.FAILED
    elif failed or job.error:
        job.status = JobStatus.PARTIAL
    else:
        job.status = JobStatus.COMPLETED
    kept = [i for i in job.items if i.metadata.get("kept_files")]
    if kept and job.status is JobStatus.COMPLETED:
        job.status = JobStatus.PARTIAL
        job.error = job.error or (
            f"{len(kept)} item(s) skipped to keep files cgpu-kit did not write; see the summary")
    if job.status is JobStatus.FAILED and not job.error:
        job.error = "every item failed"
    from ..report import write_report_safely

    job.report_path = write_report_safely(job.result(), job.out_dir)
    for item in job.items:  # the pictures the runtime made for the report are in it now: the summary and --json
        for side in (item.metadata.get("preview") or {}).values():  # keep the small figures, not the pictures
            if isinstance(side, dict):
                side.pop("sheet", None)
    write_summary(job)
    return job.result()


def preview_early(job: CGPUJob, item: ItemResult) -> None:
    """Start the report's preview of ``item``, just delivered, in the background (see :mod:`cgpu_kit.report`)."""
    from ..report import MAX_PREVIEWS
    from ..report import preview_early as start

    n = int(item.item_id[1:]) if item.item_id[1:].isdigit() else -1
    index = n if 0 <= n < len(job.items) and job.items[n] is item else next(
        (k for k, other in enumerate(job.items) if other is item), -1)
    if 0 <= index < MAX_PREVIEWS:
        start(job.job_id, item, index, job.result(), job.out_dir)


def result(job: CGPUJob) -> JobResult:
    return JobResult(
        success=job.status is JobStatus.COMPLETED,
        output_path=str(job.out_dir),
        metadata={"job_type": job.job_type, "params": dict(job.params), "backend": getattr(job.backend, "name", job.backend),
                  "remote_work_dir": job.remote_work_dir, "left_out": list(job.left_out)},
        error=job.error, status=job.status, job_id=job.job_id, items=list(job.items),
        log_path=str(job.log_path) if job.log_path else None, remote_log=job.remote_log,
        timings=dict(job.timings), report_path=str(job.report_path) if job.report_path else None,
    )


def write_summary(job: CGPUJob) -> None:
    try:
        write_json(job.state_dir / "result.json", job.result().to_dict())
    except OSError as exc:
        log.warning("could not write the job summary: %s", exc)
