"""The notebook surfaces: an ipywidgets control panel, and the helpers that ``notebooks/batch.ipynb`` calls.

Both are thin: inputs are expanded here (a file, a folder, a glob), everything else is the library. The
panel's parameter controls are built from the chosen job type's :class:`~cgpu_kit.params.ParamSet`, so its
names, defaults and bounds are the CLI's; its job choice lists the registry's job types (plugins too). Its
Run button builds the job with ``job_class(type)(...)`` and hands it to the :class:`~cgpu_kit.CGPUJobManager`
in a background thread (the notebook stays usable) exactly as the CLI does (``prepare``, which picks up what
earlier runs left unfinished in the output folder, then ``run``), and
``job.on_item`` moves the progress bar and fills the results table as each item finishes.

ipywidgets is imported only when a panel is built (``pip install 'cgpu-kit[widgets]'``); ``import cgpu_kit``
never imports this module.

::

    from cgpu_kit.widgets import ControlPanel
    ControlPanel(inputs="clips/*.mp4", out="out")       # the last expression of a cell shows it
"""

from __future__ import annotations

import html
import logging
import threading
from pathlib import Path
from typing import Any

from .exceptions import CgpuKitError, InputError, MissingDependencyError
from .jobs.base import CGPUJob
from .manager import CGPUJobManager
from .notebook import (  # noqa: F401 - the names notebooks import from here too
    MEDIA_SUFFIXES,
    SLIDER_SPAN,
    ReportView,
    ResultView,
    _link,
    available_job_types,
    expand_inputs,
    items_html,
    run_batch,
)
from .params import Param
from .results import ItemStatus, JobResult, JobStatus
from .samples import sample_inputs
from .transports import TRANSPORTS

log = logging.getLogger(__name__)

# -- the panel ---------------------------------------------------------------------------------------------


def _widgets():
    try:
        import ipywidgets
    except ImportError:
        raise MissingDependencyError("the control panel needs ipywidgets: pip install 'cgpu-kit[widgets]'") from None
    return ipywidgets


def param_widget(p: Param, value: Any = None):
    """The control for one parameter: its default (or ``value``), its bounds, its help as tooltip."""
    w = _widgets()
    value = p.default if value is None else value
    common = dict(description=p.name, tooltip=p.help, style={"description_width": "9em"},
                  layout=w.Layout(width="24em"))
    if p.choices is not None and not p.nullable:
        control = w.Dropdown(options=list(p.choices), value=value, **common)
    elif p.type is bool:
        control = w.Checkbox(value=bool(value), indent=True, **common)
    elif p.type is int and p.min is not None and p.max is not None and p.max - p.min <= SLIDER_SPAN:
        control = w.IntSlider(value=value, min=int(p.min), max=int(p.max), continuous_update=False, **common)
    elif p.type is int and not p.nullable:
        control = w.IntText(value=value, **common)
    elif p.type is float and not p.nullable:
        control = w.FloatText(value=value, **common)
    else:
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        control = w.Text(value="" if value is None else str(value), placeholder="(none)" if p.nullable else "", **common)
    control.add_class(f"cgpu-kit-param-{p.name}")
    return control


def param_value(p: Param, control: Any) -> Any:
    """A control's value as the job wants it; an empty text box of an optional parameter means None."""
    value = control.value
    if isinstance(value, str) and p.nullable and not value.strip():
        return None
    return value


class ControlPanel:
    """A batch panel: inputs, job type and its parameters, backend, output folder, Run/Cancel, progress, results.

    Everything a user sees is a widget attribute, so tests (and other code) drive it the way a user does:
    set ``panel.inputs.value``, ``panel.param_widgets["preset"].value``, then ``panel.run_button.click()``;
    :meth:`wait` returns the :class:`JobResult` once the background run ends.
    """

    def __init__(self, inputs: str = "", out: str = "cgpu_out", job: str = "stabilize", backend: str = "local",
                 params: dict[str, Any] | None = None, runtimes: str = "", **job_options: Any) -> None:
        w = _widgets()
        self.job_types = available_job_types()
        if not self.job_types:
            raise MissingDependencyError("no job type of cgpu_kit can be imported here; reinstall cgpu-kit")
        requested = job
        if job not in self.job_types:
            job = next(iter(self.job_types))
        self.job_options = job_options
        self.job: CGPUJob | None = None
        self.result: JobResult | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

        wide = w.Layout(width="44em")
        label = {"description_width": "9em"}
        self.inputs = w.Text(value=inputs, description="inputs", placeholder="a file, a folder or a glob: clips/*.mp4",
                             tooltip="a file, a folder (its media files) or a glob such as clips/*.mp4",
                             continuous_update=True, style=label, layout=wide)
        self.files = w.HTML()
        self.job_type = w.Dropdown(options=list(self.job_types), value=job, description="job", style=label)
        self.backend = w.Dropdown(options=list(TRANSPORTS), value=backend, description="backend", style=label,
                                  tooltip="local: this machine; cgpu: a Colab runtime through the cgpu CLI")
        self.runtimes = w.Text(value=runtimes if isinstance(runtimes, str) else ", ".join(runtimes), description="runtimes",
                               placeholder="empty: the backend; or e.g. cgpu, cgpu:~/account2, local, dask:tcp://host:8786",
                               tooltip="runtimes to spread the batch over, separated by commas (--runtime SPEC)",
                               style=label, layout=wide)
        self.runtimes.add_class("cgpu-kit-runtimes")
        self.out = w.Text(value=str(out), description="output folder", placeholder="outputs take the inputs' names",
                          style=label, layout=wide)
        self.params_box = w.VBox()
        self.param_widgets: dict[str, Any] = {}
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.cancel_button = w.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="items", style=label,
                                      layout=w.Layout(width="36em"))
        self.progress_text = w.Label()
        self.message = w.HTML()
        self.table = w.HTML()
        self.previews = w.HTML()
        for widget, cls in ((self.inputs, "cgpu-kit-inputs"), (self.out, "cgpu-kit-out"), (self.files, "cgpu-kit-files"),
                            (self.message, "cgpu-kit-message"), (self.table, "cgpu-kit-results"), (self.previews,
                                "cgpu-kit-report-previews"),
                            (self.progress, "cgpu-kit-progress"), (self.job_type, "cgpu-kit-job")):
            widget.add_class(cls)

        self.inputs.observe(lambda _: self._list_files(), names="value")
        self.job_type.observe(lambda change: self._build_params(change["new"]), names="value")
        self.run_button.on_click(lambda _: self.run())
        self.cancel_button.on_click(lambda _: self.cancel())
        self._build_params(job, params or {})
        self._list_files()
        self.widget = w.VBox([
            w.HTML("<b>cgpu_kit</b>: run a batch of media jobs here or on a Colab GPU"),
            self.inputs, self.files, w.HBox([self.job_type, self.backend]), self.runtimes, self.out,
            self.params_box,
            w.HBox([self.run_button, self.cancel_button]),
            w.HBox([self.progress, self.progress_text]),
            self.message, self.table, self.previews,
        ], layout=w.Layout(padding="4px"))
        self.widget.add_class("cgpu-kit-panel")
        if requested != job:
            known = ", ".join(self.job_types)
            self._show_error(f"job type {requested!r} cannot be used here (unknown, or its module failed to import; "
                             f"see the log); usable: {known}")

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- what the controls show --------------------------------------------------------------------------

    def _build_params(self, job_type: str, values: dict[str, Any] | None = None) -> None:
        w = _widgets()
        values = values or {}
        self.param_widgets = {p.name: param_widget(p, values.get(p.name)) for p in self.job_types[job_type].params_spec}
        rows = [w.HBox([w.Box([control], layout=w.Layout(width="27em", flex="0 0 auto")),
                        w.HTML(f'<span style="color:#57606a">{html.escape(p.help)}</span>', layout=w.Layout(flex="1 1 auto"))])
                for p, control in zip(self.job_types[job_type].params_spec, self.param_widgets.values())]
        self.params_box.children = [w.HTML(f"<b>{html.escape(job_type)} parameters</b>"), *rows]

    def matching_files(self) -> list[Path]:
        return expand_inputs(self.inputs.value)

    def _list_files(self) -> None:
        if not self.inputs.value.strip():
            self.files.value = '<span style="color:#57606a">no inputs yet</span>'
            return
        try:
            files = self.matching_files()
        except OSError as exc:  # a name too long for the file system, an unreadable folder...
            reason = html.escape(exc.strerror or str(exc))
            self.files.value = f'<span style="color:#cf222e">{html.escape(self.inputs.value[:200])}: {reason}</span>'
            return
        if not files:
            self.files.value = f'<span style="color:#cf222e">no file matches {html.escape(self.inputs.value)}</span>'
            return
        shown = ", ".join(html.escape(p.name) for p in files[:12])
        more = f" and {len(files) - 12} more" if len(files) > 12 else ""
        plural = "file" if len(files) == 1 else "files"
        self.files.value = f"<span><b>{len(files)} {plural}</b>: {shown}{more}</span>"

    def params(self) -> dict[str, Any]:
        """The chosen job type's parameters as the controls hold them (checked when the job is built)."""
        spec = self.job_types[self.job_type.value].params_spec
        return {name: param_value(spec[name], control) for name, control in self.param_widgets.items()}

    def _show_error(self, text: str) -> None:
        shown = html.escape(text if len(text) < 3000 else text[:3000] + " [...]")
        self.message.value = f'<div style="color:#cf222e;white-space:pre-wrap"><b>error:</b> {shown}</div>'

    def _show_info(self, text: str) -> None:
        self.message.value = f"<div>{html.escape(text)}</div>"

    def _show_items(self, job: CGPUJob) -> None:
        items = list(job.items)
        finished = sum(1 for i in items if i.status is not ItemStatus.PENDING)
        self.progress.max = max(len(items), 1)
        self.progress.value = finished
        self.progress_text.value = f"{finished} / {len(items)}"
        self.table.value = items_html(items)

    # -- Run and Cancel -----------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> CGPUJob | None:
        """Build the job from the controls and start it in the background; a problem shows in the panel.

        Returns the started job, or None when nothing was started (the reason is in ``message``).
        """
        with self._lock:
            if self.running:
                self._show_error("a batch is already running; wait for it or cancel it")
                return None
            self.result = None
            self.table.value = ""
            self.previews.value = ""
            try:
                files = self.matching_files()
                if not files:
                    raise InputError(
                        f"no input files match {self.inputs.value!r}" if self.inputs.value.strip()
                        else "no inputs: give a file, a folder or a glob such as clips/*.mp4"
                    )
                if not self.out.value.strip():
                    raise InputError("no output folder: give one; outputs take the inputs' names")
                runtimes = [r.strip() for r in self.runtimes.value.split(",") if r.strip()] or None
                job = self.job_types[self.job_type.value](
                    files, self.out.value.strip(), backend=self.backend.value, params=self.params(), runtimes=runtimes,
                    **self.job_options
                )
            except (CgpuKitError, OSError, TypeError, ValueError) as exc:
                self._show_error(str(exc))
                return None
            job.on_item = lambda job, item: self._show_items(job)
            self.job = job
            self._set_running(True)
            self._show_info(f"{job.job_type}: {len(files)} input(s) -> {job.out_dir} on {self.where()}: preparing")
            self.progress.value, self.progress.max, self.progress_text.value = 0, len(files), f"0 / {len(files)}"
            self._thread = threading.Thread(target=self._work, args=(job,), name=f"cgpu-kit-panel-{job.job_id}", daemon=True)
            self._thread.start()
            return job

    def where(self) -> str:
        """The runtimes the batch runs on, as the panel names them."""
        return self.runtimes.value.strip() or self.backend.value

    def _work(self, job: CGPUJob) -> None:
        result: JobResult | None = None
        try:
            manager = CGPUJobManager()
            # as the CLI does: what earlier runs left unfinished in the folder is picked up first, then the
            # inputs are validated, so that skipped and invalid items show before the run
            manager.prepare(job)
            self._show_items(job)
            self._show_info(f"{job.job_type}: running {len(job.pending)} item(s) on {self.where()}")
            result = manager.run(job)
        except Exception as exc:  # shown in the panel: a thread's traceback would land in no cell
            log.exception("the panel's job failed")
            self._show_error(f"{type(exc).__name__}: {exc}" if not isinstance(exc, CgpuKitError) else str(exc))
        finally:
            self.result = result
            if result is not None:
                self._show_result(result)
            self._set_running(False)

    def _show_result(self, result: JobResult) -> None:
        self.progress.max = max(len(result.items), 1)
        self.progress.value = self.progress.max if result.status.finished else self.progress.value
        self.progress_text.value = f"{len([i for i in result.items if i.status is not ItemStatus.PENDING])} / {len(result.items)}"
        self.progress.bar_style = {JobStatus.COMPLETED: "success", JobStatus.CANCELLED: "warning"}.get(result.status, "danger")
        self.table.value = items_html(result.items, result.log_path)
        if result.report_path:
            from .report import previews_html

            self.table.value += f'<div class="cgpu-kit-report">report: {_link(result.report_path)}</div>'
            self.previews.value = previews_html(result.report_path)
        if result.status is JobStatus.COMPLETED:
            self._show_info(result.summary())
        else:
            self._show_error(result.summary())

    def _set_running(self, running: bool) -> None:
        self.run_button.disabled = running
        self.cancel_button.disabled = not running
        if running:
            self.progress.bar_style = "info"

    def cancel(self) -> None:
        """Stop the running batch after its running items; finished items are kept."""
        job = self.job
        if job is not None and self.running:
            job.cancel()
            self._show_info("cancelling: the running items finish, the rest are not started")

    def wait(self, timeout: float | None = None) -> JobResult | None:
        """Block until the background run ends (for scripts and tests); return its result."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.result


def control_panel(**kwargs: Any) -> ControlPanel:
    """Build a :class:`ControlPanel`; the arguments are its starting values."""
    return ControlPanel(**kwargs)


__all__ = ["ControlPanel", "ReportView", "ResultView", "available_job_types", "control_panel", "expand_inputs", "items_html",
           "param_widget", "run_batch", "sample_inputs"]
