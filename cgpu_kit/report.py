"""A report per job: ``_cgpu_kit/job_<id>/report.html``, one page that shows what the batch did.

One row per item (status, timings, error) with a preview fitted to the job type, made locally from the
outputs already downloaded. The page is self-contained: pictures are ``data:`` URIs, plots inline SVG, no
script and no network, so it can be mailed, archived or opened from a Colab download.

Previews come from a registry by job type, filled the way papermill fills its engines::

    @register_section("scenes")
    def scenes_section(item: ItemResult, ctx: ReportContext) -> Preview: ...

A job type with no section gets :func:`generic_section` (its outputs listed). The previews of a batch start
in the background as its items are delivered (:func:`preview_early`), so that by the end of the batch most of
the page is made; those still missing are made side by side when the job settles. Building is failure-proof:
a preview that cannot be made says why in its cell, and :func:`write_report_safely` (what a job calls as it
settles) logs a warning instead of raising, so a report can never cost a batch.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import html
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import InputError
from .ledger import STATE_DIR
from .results import ItemResult, ItemStatus, JobResult, JobStatus
from .util import atomic_write_text

log = logging.getLogger(__name__)

REPORT = "report.html"
#: items past this many are listed without a preview, so a batch of thousands still reports in seconds
MAX_PREVIEWS = 40
#: previews made side by side (each mostly waits on an ffmpeg)
PREVIEW_WORKERS = max(1, os.cpu_count() or 1)


@dataclass
class Preview:
    """What a section makes for one item: markup (inline styles only: it is shown in notebooks too) and the
    figures it measured, which the page carries as data so that tools and tests can read them back."""

    html: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportContext:
    """What a section may need besides its item: the whole result (its parameters) and the output folder."""

    result: JobResult
    out_dir: Path


Section = Callable[[ItemResult, ReportContext], Preview]
SECTIONS: dict[str, Section] = {}


def register_section(job_type: str) -> Callable[[Section], Section]:
    """Decorator: ``fn`` makes the preview of each item of ``job_type`` jobs."""
    def register(fn: Section) -> Section:
        SECTIONS[job_type] = fn
        return fn
    return register


def generic_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """The fallback of job types without a section of their own: the outputs, by name."""
    names = [html.escape(Path(o).name) for o in item.outputs]
    return Preview("<br>".join(names))


def section_for(job_type: str | None) -> Section:
    from . import report_sections  # noqa: F401  (fills SECTIONS with the built-in job types' sections)

    return SECTIONS.get(job_type or "", generic_section)


# -- the page ----------------------------------------------------------------------------------------------

_COLOURS = {"done": "#1a7f37", "skipped": "#57606a", "failed": "#cf222e", "cancelled": "#9a6700", "pending": "#57606a"}
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2328}
h1{font-size:1.3em;margin:0 0 .3em} .meta{color:#57606a;margin-bottom:1em}
table.items{border-collapse:collapse;width:100%} .items th,.items td{border-bottom:1px solid #d0d7de;
padding:6px 8px;vertical-align:top;text-align:left} .items th{background:#f6f8fa}
.timings{color:#57606a;font-size:12px;white-space:nowrap} .err{color:#cf222e;white-space:pre-wrap;max-width:28em}
.items .cgpu-kit-preview-title{display:none}
"""
_START, _END = "<!--cgpu-kit-preview-->", "<!--/cgpu-kit-preview-->"


def _timings(item: ItemResult) -> str:
    steps = sorted(item.timings.items(), key=lambda kv: kv[0] != "total")  # the total first, then each step
    return "<br>".join(f"{html.escape(k)} {v:.2f} s" for k, v in steps if isinstance(v, (int, float)))


def _preview_cell(item: ItemResult, index: int, ctx: ReportContext, section: Section) -> tuple[str, dict[str, Any]]:
    if not item.ok or not item.outputs:
        return "", {}
    if index >= MAX_PREVIEWS:
        return f'<span style="color:#57606a">no preview past the first {MAX_PREVIEWS} items</span>', {}
    started = time.monotonic()
    try:
        preview = section(item, ctx)
    except Exception as exc:  # one item's preview must not cost the report
        log.warning("report: no preview for %s: %s", item.input_path, exc)
        preview = Preview(f'<span style="color:#9a6700">preview unavailable: {html.escape(str(exc)[:300])}</span>')
    log.debug("report: preview of %s in %.2fs", item.input_path, time.monotonic() - started)
    title = (f'<div class="cgpu-kit-preview-title" style="font-weight:600;margin:8px 0 4px">'
             f'{html.escape(Path(item.input_path).name)}</div>')
    figures = json.dumps(preview.figures)
    return (f'{_START}<div class="cgpu-kit-preview" data-figures="{html.escape(figures, quote=True)}">'
            f"{title}{preview.html}</div>{_END}", preview.figures)


Cell = tuple[str, dict[str, Any]]


class _Early:
    """Previews started while the batch runs, one item at a time as each is delivered, on one background
    thread: on a remote runtime this machine is idle meanwhile, so the report costs nothing at the end; locally
    it takes one core's spare time. :func:`render` takes what is ready and makes the rest itself."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: queue.SimpleQueue[tuple[cf.Future[Cell], tuple[Any, ...]]] = queue.SimpleQueue()
        self.worker: threading.Thread | None = None
        self.cells: dict[tuple[str, str], tuple[tuple[Any, ...], cf.Future[Cell]]] = {}

    def submit(self, job_id: str, item: ItemResult, index: int, ctx: ReportContext) -> None:
        if not item.ok or not item.outputs or index >= MAX_PREVIEWS:
            return
        key, stamp = (job_id, item.item_id), _stamp(item, index, ctx)
        section = section_for(ctx.result.metadata.get("job_type"))
        future: cf.Future[Cell] = cf.Future()
        with self.lock:
            self.cells[key] = (stamp, future)
            self.queue.put((future, (item, index, ctx, section)))
            if self.worker is None:
                # a daemon thread, not a ThreadPoolExecutor: the interpreter joins an executor's threads at exit,
                # and a Ctrl-C landing while one was being started left a thread that no one would ever stop
                self.worker = threading.Thread(target=self._work, name="cgpu-kit-early-preview", daemon=True)
                self.worker.start()

    def _work(self) -> None:
        while True:
            future, args = self.queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(_preview_cell(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the preview
                future.set_exception(exc)

    def take(self, job_id: str, item: ItemResult, index: int, ctx: ReportContext) -> cf.Future[Cell] | None:
        """The started preview of ``item``, if it was made from the same outputs, place and folder; a preview
        not started yet is cancelled (the caller makes it side by side with the others)."""
        with self.lock:
            found = self.cells.pop((job_id, item.item_id), None)
        if found is None or found[0] != _stamp(item, index, ctx) or found[1].cancel():
            return None
        return found[1]

    def forget(self, job_id: str) -> None:
        with self.lock:
            for key in [k for k in self.cells if k[0] == job_id]:
                self.cells.pop(key)[1].cancel()


def _stamp(item: ItemResult, index: int, ctx: ReportContext) -> tuple[Any, ...]:
    return (index, item.input_path, tuple(item.outputs), str(ctx.out_dir),
            json.dumps(ctx.result.metadata.get("params"), sort_keys=True, default=str))


_EARLY = _Early()


def preview_early(job_id: str, item: ItemResult, index: int, result: JobResult, out_dir: Path) -> None:
    """Start ``item``'s preview now, in the background (what delivery calls as each item arrives); never raises."""
    try:
        _EARLY.submit(job_id, item, index, ReportContext(result, Path(out_dir)))
    except Exception as exc:  # the report makes it at the end instead
        log.debug("report: no early preview for %s: %s", item.input_path, exc)


def _preview_cells(items: list[ItemResult], ctx: ReportContext, section: Section) -> list[Cell]:
    """Every item's preview cell: those started early as the batch delivered them, the rest made side by side
    (a preview mostly waits on ffmpeg, so one per core keeps the cores busy)."""
    job_id = str(ctx.result.job_id)
    early = [_EARLY.take(job_id, item, index, ctx) for index, item in enumerate(items)]
    _EARLY.forget(job_id)
    todo = [(index, item) for index, (item, ready) in enumerate(zip(items, early)) if ready is None]
    workers = max(1, min(PREVIEW_WORKERS, len(todo)))
    if workers == 1:
        made = [_preview_cell(item, index, ctx, section) for index, item in todo]
    else:
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="cgpu-kit-report") as pool:
            made = list(pool.map(lambda pair: _preview_cell(pair[1], pair[0], ctx, section), todo))
    fresh = iter(made)
    return [ready.result() if ready is not None else next(fresh) for ready in early]


def render(result: JobResult, out_dir: Path) -> str:
    """The report page of ``result`` as one HTML string."""
    job_type = result.metadata.get("job_type")
    section = section_for(job_type)
    ctx = ReportContext(result, out_dir)
    rows = []
    for item, (cell, _) in zip(result.items, _preview_cells(result.items, ctx, section)):
        status = item.status.value
        error = item.error or item.metadata.get("skipped", "") or ""
        rows.append(
            f'<tr class="item" data-status="{status}" data-input="{html.escape(item.input_path, quote=True)}">'
            f'<td title="{html.escape(item.input_path, quote=True)}">{html.escape(Path(item.input_path).name)}</td>'
            f'<td style="color:{_COLOURS.get(status, "inherit")};font-weight:600">{status}</td>'
            f'<td class="timings">{_timings(item)}</td><td class="err">{html.escape(error)}</td><td>{cell}</td></tr>'
        )
    params = ", ".join(f"{k}={v}" for k, v in (result.metadata.get("params") or {}).items())
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    log_line = f"<div>log: {html.escape(result.log_path)}</div>" if result.log_path else ""
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>cgpu_kit {html.escape(str(job_type))} job {html.escape(str(result.job_id))}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(result.summary())}</h1>"
        f'<div class="meta"><div>{html.escape(str(job_type))} on {html.escape(str(result.metadata.get("backend", "")))}'
        f", {html.escape(params)}</div><div>output folder: {html.escape(str(out_dir))}</div>{log_line}"
        f"<div>report made {when}</div></div>"
        '<table class="items"><thead><tr><th>item</th><th>status</th><th>timings</th><th>error</th>'
        f'<th>preview</th></tr></thead><tbody>{"".join(rows)}</tbody></table></body></html>\n'
    )


def write_report(result: JobResult, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write ``report.html`` into the job's state folder and return its path."""
    out = Path(os.fspath(out_dir or result.output_path or "."))
    dest = out / STATE_DIR / f"job_{result.job_id}" / REPORT
    started = time.monotonic()
    page = render(result, out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(dest, page)
    log.info("report of job %s in %.1fs: %s", result.job_id, time.monotonic() - started, dest)
    return dest


def write_report_safely(result: JobResult, out_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """:func:`write_report`, or None and a warning: a report that cannot be made never fails its job."""
    try:
        return write_report(result, out_dir)
    except Exception as exc:
        log.warning("job %s: no report could be made: %s", result.job_id, exc)
        return None


# -- reading back ------------------------------------------------------------------------------------------


def previews_html(report_path: str | os.PathLike[str] | None, limit: int = 12) -> str:
    """The item previews of a report, as a fragment to show in a notebook or the panel (empty if none)."""
    if not report_path:
        return ""
    try:
        page = Path(os.fspath(report_path)).read_text(encoding="utf-8")
    except OSError:
        return ""
    found = re.findall(re.escape(_START) + "(.*?)" + re.escape(_END), page, flags=re.S)
    more = (f'<div style="color:#57606a">and {len(found) - limit} more in the report</div>'
            if len(found) > limit else "")
    if not found:
        return ""
    return ('<div class="cgpu-kit-previews" style="display:flex;flex-wrap:wrap;gap:12px;margin-top:8px">'
            + "".join(found[:limit]) + more + "</div>")


def load_result(state_dir: Path) -> JobResult:
    """The :class:`JobResult` a job wrote as ``result.json`` in ``state_dir``."""
    path = state_dir / "result.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: no readable job result there ({exc}); is this a cgpu_kit output folder?",
                         path=str(path)) from None
    items = [ItemResult(**{**i, "status": ItemStatus(i.get("status", "pending"))}) for i in data.pop("items", [])]
    known = set(JobResult.__dataclass_fields__)
    data = {k: v for k, v in data.items() if k in known}
    return JobResult(**{**data, "status": JobStatus(data.get("status", "pending")), "items": items})


def rebuild(out_dir: str | os.PathLike[str], job_id: str | None = None) -> Path:
    """Make the report of job ``job_id`` in ``out_dir`` again (of its last finished job when None)."""
    out = Path(os.fspath(out_dir)).expanduser().absolute()
    if job_id:
        state = out / STATE_DIR / f"job_{job_id}"
    else:
        finished = sorted((out / STATE_DIR).glob("job_*/result.json"), key=lambda p: p.stat().st_mtime)
        if not finished:
            raise InputError(f"{out}: no finished cgpu_kit job there (no {STATE_DIR}/job_*/result.json); "
                             "give the output folder of a run", path=str(out))
        state = finished[-1].parent
    result = load_result(state)
    result.report_path = str(write_report(result, out))
    return Path(result.report_path)


__all__ = ["MAX_PREVIEWS", "REPORT", "Preview", "ReportContext", "SECTIONS", "generic_section", "load_result",
           "preview_early", "previews_html", "rebuild", "register_section", "render", "section_for", "write_report",
           "write_report_safely"]
