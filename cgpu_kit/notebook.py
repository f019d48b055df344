"""What notebooks show of a batch, without ipywidgets: input expansion, results as HTML, and the one call that
``notebooks/batch.ipynb`` makes (:func:`run_batch`). The panel (:mod:`cgpu_kit.widgets`) builds on these.
"""


from __future__ import annotations

import glob
import html
import logging
import os
import tempfile
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .exceptions import InputError
from .jobs.base import CGPUJob
from .manager import CGPUJobManager
from .registry import available, job_class
from .results import ItemResult, ItemStatus, JobResult
from .samples import sample_inputs

log = logging.getLogger(__name__)

#: what a folder given as input contributes: the media files directly inside it (not outputs' state, not notes)
MEDIA_SUFFIXES = frozenset(
    ".mp4 .mov .mkv .avi .webm .m4v .mpg .mpeg .ts .flv .wmv .3gp "
    ".wav .mp3 .m4a .aac .flac .ogg .opus .wma "
    ".png .jpg .jpeg .webp .bmp .tif .tiff .gif".split()
)

#: an IntSlider for int parameters whose range is at most this wide; a text box (checked on Run) otherwise
SLIDER_SPAN = 100


# -- inputs -----------------------------------------------------------------------------------------------


def expand_inputs(spec: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None) -> list[Path]:
    """The files that ``spec`` names, in a stable order, each once.

    ``spec`` is a file, a folder (its media files, not recursive), a glob (``clips/*.mp4``, ``**`` allowed),
    or a list of these. A name that exists is taken as it is, so names with ``[``, ``*`` or ``?`` in them
    are not read as patterns. A pattern that matches nothing contributes nothing; the caller says so.
    """
    if spec is None:
        return []
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    found: list[Path] = []
    seen: set[Path] = set()
    for one in specs:
        text = os.fspath(one)
        if isinstance(one, str) and not text.strip():
            continue
        for path in _expand_one(text):
            key = path.absolute()
            if key not in seen:
                seen.add(key)
                found.append(path)
    return found


def _expand_one(text: str) -> list[Path]:
    path = Path(text).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.suffix.lower() in MEDIA_SUFFIXES)
    if path.exists():
        return [path]
    matches = glob.glob(os.path.expanduser(text), recursive=True)
    return sorted(Path(m) for m in matches if Path(m).is_file())


def available_job_types() -> dict[str, type[CGPUJob]]:
    """Job types whose module imports here; a broken or unfinished one is left out, not fatal."""
    return available()


# -- results as HTML ---------------------------------------------------------------------------------------


def _link(path: str | os.PathLike[str], text: str | None = None) -> str:
    """A link the notebook's page can follow when ``path`` is under the kernel's folder; the path otherwise.

    Jupyter serves files relative to the notebook, and the kernel's working folder is the notebook's, so a
    relative link opens the file in Lab; a file elsewhere cannot be linked and is shown by its full path.
    """
    p = Path(os.fspath(path))
    full = html.escape(str(p), quote=True)
    try:
        rel = p.absolute().relative_to(Path.cwd().absolute())
    except ValueError:
        return f'<span title="{full}">{html.escape(text if text is not None else str(p))}</span>'
    label = html.escape(text if text is not None else rel.as_posix())
    href = html.escape(urllib.parse.quote(rel.as_posix()), quote=True)
    return f'<a href="{href}" target="_blank" title="{full}" style="color:#0969da;text-decoration:underline">{label}</a>'


_STATUS_COLOURS = {
    ItemStatus.DONE: "#1a7f37", ItemStatus.SKIPPED: "#57606a", ItemStatus.FAILED: "#cf222e",
    ItemStatus.CANCELLED: "#9a6700", ItemStatus.PENDING: "#57606a",
}


def items_html(items: Sequence[ItemResult], log_path: str | None = None) -> str:
    """The results table: item, status, outputs (linked), error, seconds; and the executed notebook's link."""
    rows = []
    for item in items:
        colour = _STATUS_COLOURS.get(item.status, "inherit")
        outputs = "<br>".join(_link(o, Path(o).name) for o in item.outputs)
        seconds = item.timings.get("total")
        error = item.error or item.metadata.get("skipped", "")
        rows.append(
            "<tr>"
            f'<td title="{html.escape(item.input_path, quote=True)}">{html.escape(Path(item.input_path).name)}</td>'
            f'<td class="cgpu-kit-status" style="color:{colour};font-weight:600">{item.status.value}</td>'
            f"<td>{outputs}</td>"
            f'<td style="white-space:pre-wrap;max-width:40em">{html.escape(error or "")}</td>'
            f'<td style="text-align:right">{"" if seconds is None else f"{seconds:.1f}"}</td>'
            "</tr>"
        )
    head = "".join(f'<th style="text-align:left;padding-right:1em">{h}</th>'
                   for h in ("item", "status", "output", "error", "seconds"))
    table = f'<table class="cgpu-kit-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    if log_path:
        table += f'<div class="cgpu-kit-log">log (executed notebook): {_link(log_path)}</div>'
    return table


class ResultView:
    """A :class:`JobResult` shown as its summary and results table in a notebook (and as text elsewhere)."""

    def __init__(self, result: JobResult) -> None:
        self.result = result

    def _repr_html_(self) -> str:
        return f"<p><b>{html.escape(self.result.summary())}</b></p>" + items_html(self.result.items, self.result.log_path)


class ReportView(ResultView):
    """A :class:`JobResult`'s report in a notebook: the link to ``report.html`` and its item previews inline."""

    def _repr_html_(self) -> str:
        from .report import previews_html

        path = self.result.report_path
        if not path:
            return "<p>no report was made for this job (see the log)</p>"
        return f"<div>report: {_link(path)}</div>{previews_html(path)}"

    def __repr__(self) -> str:
        lines = [self.result.summary()]
        for item in self.result.items:
            seconds = item.timings.get("total")
            lines.append(f"  {item.status.value:9} {Path(item.input_path).name!r} "
                         f"{', '.join(Path(o).name for o in item.outputs)}"
                         f"{'' if seconds is None else f' ({seconds:.1f}s)'}{'  ' + item.error if item.error else ''}")
        if self.result.log_path:
            lines.append(f"  log (executed notebook): {self.result.log_path}")
        return "\n".join(lines)


# -- the batch notebook ------------------------------------------------------------------------------------


def run_batch(job: str, inputs: Any, out: str | os.PathLike[str] = "", *, backend: str = "local",
              runtimes: Any = None, params: dict[str, Any] | None = None, timeout: float = 0,
              item_timeout: float = 0, workers: int = 0, force: bool = False, overwrite: bool = False) -> JobResult:
    """One batch as ``notebooks/batch.ipynb`` runs it: expand the inputs, run the job, return its result.

    Empty ``inputs`` take the job type's generated samples; an empty ``out`` a new temporary folder. Zero
    timeouts mean the job type's own. ``runtimes`` (specs, see :mod:`cgpu_kit.runtimes`) spread the batch
    over several runtimes; empty means ``backend`` alone. Item failures come back in the result (call ``raise_for_status()``
    to turn them into an error); bad parameters and inputs that match nothing raise right away.
    """
    paths = expand_inputs(inputs) if _given(inputs) else sample_inputs(job)
    if not paths:
        raise InputError(f"no input files match {inputs!r}; give a file, a folder or a glob such as 'clips/*.mp4'")
    out_dir = Path(os.fspath(out)) if os.fspath(out) else Path(tempfile.mkdtemp(prefix=f"cgpu_kit_{job}_"))
    the_job = job_class(job)(
        paths, out_dir, backend=backend, runtimes=runtimes or None, params=params or {}, timeout=timeout or None,
        item_timeout=item_timeout or None, workers=workers, force=force, overwrite=overwrite,
    )
    the_job.on_item = _log_item
    where = ", ".join(str(getattr(r, "text", r)) for r in ([runtimes] if isinstance(runtimes, str) else runtimes or [backend]))
    log.info("%s: %d input(s) -> %s (%s)", job, len(paths), the_job.out_dir, where)
    return CGPUJobManager().run(the_job)


def _given(inputs: Any) -> bool:
    if isinstance(inputs, (str, os.PathLike)):
        return bool(os.fspath(inputs).strip())
    return bool(inputs)


def _log_item(job: CGPUJob, item: ItemResult) -> None:
    seconds = item.timings.get("total")
    log.info("%s %s%s%s", item.status.value, Path(item.input_path).name,
             "" if seconds is None else f" ({seconds:.1f}s)", f": {item.error}" if item.error else "")
