"""The control panel driven as a user drives it: set widget values, click Run and Cancel, read what it shows.

Jobs are real stabilize jobs on the local runtime (tiny generated clips, preset ultrafast).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import copy_as

from cgpu_kit import ItemStatus, JobStatus

pytest.importorskip("ipywidgets")

from cgpu_kit.widgets import ControlPanel, available_job_types, expand_inputs  # noqa: E402

TINY = dict(width=160, height=120, frames=30, jitter=8)


def _panel(**kwargs) -> ControlPanel:
    panel = ControlPanel(**kwargs)
    panel.param_widgets["preset"].value = "ultrafast"
    return panel


def test_when_cgpu_kit_is_imported_then_neither_the_panel_nor_ipywidgets_is():
    code = "import sys, cgpu_kit; print('ipywidgets' in sys.modules, 'cgpu_kit.widgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_when_a_job_type_is_chosen_then_only_its_parameters_show_with_their_defaults_and_bounds():
    panel = ControlPanel()
    types = available_job_types()
    assert "stabilize" in types and list(panel.job_type.options) == list(types)
    for job_type, cls in types.items():
        panel.job_type.value = job_type
        assert list(panel.param_widgets) == cls.params_spec.names()
        for p in cls.params_spec:
            control = panel.param_widgets[p.name]
            default = ",".join(map(str, p.default)) if isinstance(p.default, (list, tuple)) else p.default
            assert control.value == ("" if default is None else default), p.name
            if p.choices is not None and not p.nullable:
                assert tuple(control.options) == tuple(p.choices)
            if hasattr(control, "max"):
                assert (control.min, control.max) == (p.min, p.max)
        # the controls at their defaults make the same job as no parameters at all
        assert cls.params_spec.resolve(panel.params(), job_type=job_type) == cls.params_spec.resolve({}, job_type=job_type)
    panel.job_type.value = "stabilize"
    assert panel.param_widgets["crf"].max == 51 and panel.param_widgets["preset"].value == "medium"
    assert "cannot be used here" in ControlPanel(job="no-such-job").message.value


def test_when_inputs_are_typed_then_the_matching_files_are_listed_and_counted(tmp_path, shaky_clip):
    clip = shaky_clip(**TINY)
    folder = tmp_path / "my clips"
    odd = copy_as(clip, folder / "take [1] $(x).mp4")
    copy_as(clip, folder / "-b.mp4")
    (folder / "notes.txt").write_text("not media")
    (folder / ".hidden.mp4").write_bytes(b"")
    panel = ControlPanel()

    panel.inputs.value = str(folder)
    assert "2 files" in panel.files.value and "notes.txt" not in panel.files.value
    assert [p.name for p in panel.matching_files()] == ["-b.mp4", "take [1] $(x).mp4"]

    panel.inputs.value = str(odd)  # brackets in an existing name are not a pattern
    assert "1 file" in panel.files.value and panel.matching_files() == [odd]

    panel.inputs.value = str(tmp_path / "*" / "*.mp4")
    assert "2 files" in panel.files.value

    panel.inputs.value = str(tmp_path / "nothing" / "*.mp4")
    assert "no file matches" in panel.files.value
    panel.inputs.value = "x" * 5000  # too long a name for the file system: said in the panel, not raised
    assert "too long" in panel.files.value
    panel.run_button.click()
    assert "too long" in panel.message.value and panel.job is None
    assert expand_inputs([str(odd), str(folder)]) == [odd, folder / "-b.mp4"]


def test_when_run_is_clicked_then_progress_moves_as_items_finish_and_the_table_shows_them(tmp_path, shaky_clip):
    folder = tmp_path / "in"
    copy_as(shaky_clip(**TINY), folder / "it's a clip.mp4")
    (folder / "broken.mp4").write_text("not a video")
    panel = _panel()
    moves = []
    panel.progress.observe(lambda c: moves.append((c["new"], panel.result is None)), names="value")

    panel.inputs.value = str(folder)
    panel.out.value = str(tmp_path / "out")
    panel.run_button.click()
    assert panel.run_button.disabled and not panel.cancel_button.disabled
    result = panel.wait(120)

    assert result is not None and result.status is JobStatus.PARTIAL
    done = next(i for i in result.items if i.status is ItemStatus.DONE)
    assert Path(done.outputs[0]) == tmp_path / "out" / "it's a clip.mp4" and Path(done.outputs[0]).stat().st_size > 0
    table = panel.table.value
    assert "it&#x27;s a clip.mp4</td>" in table and ">done<" in table and ">failed<" in table
    assert "broken.mp4" in table and "not readable media" in table
    assert "executed.ipynb" in table and Path(result.log_path).is_file()
    assert "report.html" in table and Path(result.report_path).is_file()
    previews = panel.previews.value  # the report's pictures, under the table: the clip's, not the broken file's
    assert previews.count('class="cgpu-kit-preview"') == 1 and "it&#x27;s a clip.mp4" in previews
    assert previews.count("data:image/jpeg;base64,") == 2 and "cgpu-kit-shift-plot" in previews
    assert "1 done, 1 failed" in panel.message.value
    assert (panel.progress.value, panel.progress.max, panel.progress_text.value) == (2, 2, "2 / 2")
    # broken.mp4 counts as finished once validated; the clip moves the bar to 2 as it is delivered, not at the end
    assert (1, True) in moves and (2, True) in moves, moves
    assert not panel.run_button.disabled and panel.cancel_button.disabled


def test_when_a_parameter_is_out_of_bounds_then_the_panel_says_so_and_runs_nothing(tmp_path, shaky_clip):
    panel = _panel(inputs=str(shaky_clip(**TINY)), out=str(tmp_path / "out"))
    panel.param_widgets["zoom"].value = 500.0
    panel.run_button.click()
    assert "zoom" in panel.message.value and "between -100.0 and 100.0" in panel.message.value
    assert panel.job is None and not panel.running and not (tmp_path / "out").exists()


def test_when_no_input_matches_then_the_panel_says_so(tmp_path):
    panel = _panel(inputs=str(tmp_path / "*.mp4"), out=str(tmp_path / "out"))
    panel.run_button.click()
    assert "no input files match" in panel.message.value and panel.job is None


def test_when_the_backend_cannot_be_used_then_the_error_shows_in_the_panel(tmp_path, shaky_clip):
    panel = _panel(inputs=str(shaky_clip(**TINY)), out=str(tmp_path / "out"), backend="local")
    panel.backend.options = [*panel.backend.options, "nowhere"]
    panel.backend.value = "nowhere"
    panel.run_button.click()
    result = panel.wait(60)
    assert result is not None and result.status is JobStatus.FAILED
    assert "unknown backend &#x27;nowhere&#x27;" in panel.message.value and "error" in panel.message.value
    assert not panel.run_button.disabled


def test_when_cancel_is_clicked_then_the_batch_stops_and_finished_items_are_kept(tmp_path, shaky_clip):
    folder = tmp_path / "in"
    for n in range(5):
        copy_as(shaky_clip(seed=n, **TINY), folder / f"clip {n}.mp4")
    panel = _panel(inputs=str(folder), out=str(tmp_path / "out"), workers=1)
    first_done = threading.Event()

    def cancel_after_first(change):
        if change["new"] >= 1 and panel.running and not first_done.is_set():
            first_done.set()
            panel.cancel_button.click()

    panel.progress.observe(cancel_after_first, names="value")
    panel.run_button.click()
    result = panel.wait(120)

    assert first_done.is_set() and result is not None and result.status is JobStatus.CANCELLED
    statuses = [i.status for i in result.items]
    assert set(statuses) <= {ItemStatus.DONE, ItemStatus.CANCELLED}
    assert statuses.count(ItemStatus.DONE) >= 1 and statuses.count(ItemStatus.CANCELLED) >= 1
    for item in result.items:
        assert all(Path(o).is_file() for o in item.outputs) and bool(item.outputs) == (item.status is ItemStatus.DONE)
    assert "cancelled" in panel.message.value and ">cancelled<" in panel.table.value
    assert not panel.run_button.disabled and panel.cancel_button.disabled


def test_when_an_earlier_run_left_its_batch_unfinished_then_the_panel_picks_it_up_as_the_cli_does(
    sleepy, shaky_clip, tmp_path, monkeypatch, caplog,
):
    from cgpu_kit import CGPUJobManager
    from cgpu_kit.remote import RemoteBatch

    class Crash(BaseException):
        """The process dies here."""

    clips = [copy_as(shaky_clip(**TINY), tmp_path / "in" / f"clip {k}.mp4") for k in range(2)]
    earlier = sleepy(clips, tmp_path / "out", seconds=0.1, workers=1)
    launch = RemoteBatch.launch

    def launch_then_die(self, **kw):
        launch(self, **kw)
        raise Crash()

    with monkeypatch.context() as patch:
        patch.setattr(RemoteBatch, "launch", launch_then_die)
        with pytest.raises(Crash):
            CGPUJobManager().run(earlier)
    CGPUJobManager.reset()

    panel = ControlPanel(job="sleepy")
    panel.param_widgets["seconds"].value = 0.1  # the same parameters: the same items
    panel.inputs.value = str(tmp_path / "in")
    panel.out.value = str(tmp_path / "out")
    with caplog.at_level("WARNING", logger="cgpu_kit.manager"):
        panel.run_button.click()
        result = panel.wait(120)

    assert f"picking up job {earlier.job_id}" in caplog.text
    assert result is not None and result.success, panel.message.value
    # the earlier batch finished both on the runtime and was fetched: nothing is run again
    assert all(i.status is ItemStatus.SKIPPED and "already done" in i.metadata.get("skipped", "")
               for i in result.items), [(i.status, i.error) for i in result.items]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.bin")) == ["clip 0.bin", "clip 1.bin"]
