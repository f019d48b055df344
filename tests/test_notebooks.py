"""Notebooks and templates as papermill sees them: one parameters cell, parameters the library really passes,
help for each, and ``notebooks/batch.ipynb`` run through the real papermill command line.

(The all-succeeded run of ``batch.ipynb`` is nbmake's: ``pytest --nbmake notebooks`` runs it with its defaults.)
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from conftest import copy_as

from cgpu_kit.jobs.stabilize import StabilizeJob
from cgpu_kit.runtime import layout

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted((ROOT / "templates").glob("*.ipynb"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TINY = dict(width=160, height=120, frames=30, jitter=8)


def papermill_cli() -> list[str]:
    beside = Path(sys.executable).with_name("papermill")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "papermill"]


def parameters_cells(path: Path) -> list[nbformat.NotebookNode]:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


def declared(path: Path) -> dict[str, dict]:
    return papermill.inspect_notebook(str(path))


def test_there_are_templates_and_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"batch.ipynb", "control_panel.ipynb"}
    assert "stabilize.ipynb" in {p.name for p in TEMPLATES}


@pytest.mark.parametrize("path", TEMPLATES + NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_notebook_and_template_has_exactly_one_parameters_cell(path):
    cells = parameters_cells(path)
    assert len(cells) == 1 and cells[0].cell_type == "code", f"{path.name}: {len(cells)} parameters cells"


@pytest.fixture(scope="module")
def driver_parameters(tmp_path_factory) -> set[str]:
    """The names the real driver injects: it runs a notebook that declares nothing and we read what it got."""
    work = tmp_path_factory.mktemp("driver work")
    job_file = StabilizeJob([], work / "out", job_id="probe").job_file(chunk_seconds=0)
    shutil.copy(job_file, work / layout.JOB_FILE)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", metadata={"tags": ["parameters"]})])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / layout.TEMPLATE)
    subprocess.run([sys.executable, "-m", "cgpu_kit.runtime.driver", str(work)], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=120)
    assert json.loads((work / layout.STATUS).read_text())["exit_code"] == 0
    executed = nbformat.read(work / layout.EXECUTED, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    return {t.id for node in ast.parse(injected[0].source).body if isinstance(node, ast.Assign) for t in node.targets}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_parameter_a_template_declares_is_one_the_library_passes(path, driver_parameters):
    names = set(declared(path))
    assert {"work_dir", "params"} <= names, f"{path.name} cannot know its batch without work_dir and params"
    assert names <= driver_parameters, f"{path.name} declares {sorted(names - driver_parameters)}, never passed"


@pytest.mark.parametrize("path", TEMPLATES + NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_help_notebook_lists_every_parameter_with_its_meaning(path):
    from click.testing import CliRunner
    from papermill.cli import papermill as papermill_command  # the very command `papermill` runs, in-process

    run = CliRunner().invoke(papermill_command, ["--help-notebook", str(path)])
    assert run.exit_code == 0, run.output
    out = run.output
    params = declared(path)
    assert params
    for name, info in params.items():
        assert info["help"].strip(), f"{path.name}: parameter {name!r} has no help comment"
        assert f"  {name}:" in out and " ".join(info["help"].split()) in " ".join(out.split())


def run_batch_notebook(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, nbformat.NotebookNode]:
    executed = tmp_path / "run.ipynb"
    proc = subprocess.run(
        [*papermill_cli(), str(ROOT / "notebooks" / "batch.ipynb"), str(executed), *args],
        cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240,
    )
    return proc, nbformat.read(executed, as_version=4)


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts += [out.get("text", ""), out.get("evalue", ""), *map(str, out.get("data", {}).values())]
    return "\n".join(parts)


def test_when_an_input_is_broken_then_papermill_exits_non_zero_and_the_run_shows_which_and_why(tmp_path, shaky_clip):
    clips = tmp_path / "clips"
    copy_as(shaky_clip(**TINY), clips / "it's a $(clip).mp4")
    (clips / "broken.mp4").write_text("this is not a video")
    proc, nb = run_batch_notebook(
        tmp_path, "-p", "job", "stabilize", "-p", "inputs", "clips/*.mp4", "-p", "out", "out dir",
        "-y", "params: {preset: ultrafast}",
    )
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert (tmp_path / "out dir" / "it's a $(clip).mp4").stat().st_size > 0  # the good clip was not held back
    error = next(o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error")
    assert error["ename"] == "JobError" and "broken.mp4" in error["evalue"] and "1 failed" in error["evalue"]
    text = outputs_text(nb)
    assert "not readable media" in text and ">failed<" in text and ">done<" in text  # the results table



def test_when_the_batch_notebook_is_given_two_runtimes_then_papermill_spreads_the_batch_over_both(tmp_path, shaky_clip):
    clips = tmp_path / "clips"
    for n in range(4):
        copy_as(shaky_clip(**TINY), clips / f"take {n}.mp4")
    second = tmp_path / "second runtime"
    proc, nb = run_batch_notebook(
        tmp_path, "-p", "job", "stabilize", "-p", "inputs", "clips/*.mp4", "-p", "out", "out",
        "-y", f"{{params: {{preset: ultrafast}}, runtimes: [local, 'local:{second}'], workers: 1}}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [f"take {n}.mp4" for n in range(4)]
    summary = json.loads(next((tmp_path / "out" / "_cgpu_kit").glob("job_*/result.json")).read_text())
    done_by = summary["metadata"]["runtimes"]
    assert set(done_by) == {"local", f"local:{second}"} and sum(done_by.values()) == 4
    assert all(n > 0 for n in done_by.values())  # the first parts went to both at once
