"""What runs ON the runtime: the templates call :func:`run_template`, which runs the item loop.

Nothing here imports heavy packages at import time; each job type's processor imports its own.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from .loop import run_batch


def run_template(job_type: str, work_dir: str, params: dict[str, Any], item_timeout: float, workers: int = 0):
    """Run a batch from a template's parameters and return a table of its items (a pandas-free list).

    With an empty ``work_dir`` (the template run by hand with its defaults), a tiny sample batch is made in
    a temporary folder first, so a template can be tried and debugged on any machine.
    """
    from ..jobs import JOB_TYPES, job_class

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    if job_type in JOB_TYPES:
        params = job_class(job_type).params_spec.resolve(params, job_type=job_type)
    if not work_dir:
        work_dir = make_sample_work_dir(job_type, params)
    job_file = Path(work_dir) / "job.json"
    chunking = {}
    if job_file.exists():
        import json

        job = json.loads(job_file.read_text())
        chunking = {k: job[k] for k in ("chunk_seconds", "chunk_bytes") if k in job}
    records = run_batch(job_type, work_dir, params, item_timeout, workers, **chunking)
    return ResultsTable(records)


def make_sample_work_dir(job_type: str, params: dict[str, Any]) -> str:
    from ..batch import BatchItem, member_name, pack_part
    from ..util import file_sha256
    from . import layout
    from .processor import load_processor

    work_dir = Path(tempfile.mkdtemp(prefix=f"cgpu_kit_{job_type}_sample_"))
    samples = load_processor(job_type).make_samples(work_dir / "samples")
    items = [
        BatchItem(f"i{n:04d}", str(p), p.name, p.stat().st_size, file_sha256(p), member_name(f"i{n:04d}", p.name))
        for n, p in enumerate(samples)
    ]
    pack_part(items, work_dir / layout.PARTS / layout.part_name(0), {"job_type": job_type, "params": params})
    logging.getLogger("cgpu_kit.runtime").info("no work_dir given: running on %d sample item(s) in %s", len(items), work_dir)
    return str(work_dir)


class ResultsTable(list):
    """The item records, shown as an HTML table in the executed notebook."""

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            "<tr>" + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (r.get("item_id"), r.get("name"), r.get("status"), ", ".join(r.get("outputs", [])),
                          r.get("error") or "", r.get("timings", {}).get("total", ""))
            ) + "</tr>"
            for r in self
        )
        head = "".join(f"<th>{h}</th>" for h in ("item", "name", "status", "outputs", "error", "seconds"))
        return f"<table><tr>{head}</tr>{rows}</table>"

    def __repr__(self) -> str:
        lines = [f"{r.get('item_id')} {r.get('status'):9} {r.get('name')!r} {r.get('error') or ''}" for r in self]
        return "\n".join(lines) or "(no items)"

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self if r.get("status") == "failed"]


__all__ = ["run_batch", "run_template", "ResultsTable"]
