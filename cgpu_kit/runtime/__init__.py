"""What runs ON the runtime: the templates call :func:`run_template`, which runs the item loop.

Nothing here imports heavy packages at import time; each job type's processor imports its own. Even the item
loop is imported only when a template runs: the driver (``python -m cgpu_kit.runtime.driver``) imports this
package first and launches the notebook kernel a few tens of milliseconds sooner for it. This package
imports only leaf modules of cgpu_kit (params, batch, util, media, subtitles, exceptions...), never job
types, the manager, transports or the surfaces (tests/test_architecture.py pins it): a runtime loads no more
of the local side than it needs.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import layout

if TYPE_CHECKING:
    from .processor import Processor


def run_template(processor: str, work_dir: str, params: dict[str, Any], item_timeout: float, workers: int = 0):
    """Run a batch from a template's parameters and return a table of its items (a pandas-free list).

    The processor is the one the job file (``job.json``, written by the local side) names; ``processor``
    (a ``"module:Class"`` string) is used only without one: with an empty ``work_dir`` (the template run by
    hand with its defaults), a tiny sample batch of that processor is made in a temporary folder first, so a
    template can be tried and debugged on any machine.
    """
    from .loop import run_batch
    from .processor import load_processor

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    job: dict[str, Any] = {}
    if work_dir and (Path(work_dir) / layout.JOB_FILE).exists():
        job = json.loads((Path(work_dir) / layout.JOB_FILE).read_text())
    target = job.get("processor") or processor
    processor_cls = load_processor(target)
    job_type = job.get("job_type") or getattr(processor_cls, "job_type", None) or target.rpartition(":")[2]
    if processor_cls.params_spec is not None:
        params = processor_cls.params_spec.resolve(params, job_type=job_type)
    if not work_dir:
        work_dir = make_sample_work_dir(processor_cls, job_type, params)
    chunking = {k: job[k] for k in ("chunk_seconds", "chunk_bytes") if k in job}
    records = run_batch(target, work_dir, params, item_timeout, workers, job_type=job_type, **chunking)
    return ResultsTable(records)


def make_sample_work_dir(processor_cls: type[Processor], job_type: str, params: dict[str, Any]) -> str:
    """A temporary work folder holding one part of the processor's sample inputs."""
    from ..batch import BatchItem, member_name, pack_part
    from ..util import file_sha256

    work_dir = Path(tempfile.mkdtemp(prefix=f"cgpu_kit_{job_type}_sample_"))
    samples = processor_cls.make_samples(work_dir / "samples")
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


def __getattr__(name: str) -> Any:
    """``run_batch``, imported when first asked for (see the module's docstring)."""
    if name == "run_batch":
        from .loop import run_batch

        return run_batch
    raise AttributeError(name)


__all__ = ["run_batch", "run_template", "ResultsTable"]
