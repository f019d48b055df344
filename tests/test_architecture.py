"""The architecture's promises, pinned: the runtime side looks only down; a job type defined outside cgpu_kit
(one entry point, no edit to cgpu_kit) runs through every surface: the CLI, the API, the panel and papermill."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import register_plugin

import cgpu_kit

ROOT = Path(cgpu_kit.__file__).resolve().parent.parent
RUNTIME = ROOT / "cgpu_kit" / "runtime"
#: what the runtime side must never load: the local machinery and the surfaces
FORBIDDEN = ("jobs", "manager", "transports", "cli", "widgets", "api", "engine", "registry", "compat", "testing",
             "remote", "report", "ledger")


def _imports(path: Path) -> list[str]:
    """Every cgpu_kit module ``path`` imports (at the top or inside a function), as ``cgpu_kit.x.y``."""
    package = "cgpu_kit.runtime"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("cgpu_kit")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("cgpu_kit"):
                found += [module] + [f"{module}.{a.name}" for a in node.names]
    return found


def test_when_any_runtime_module_is_read_then_it_imports_only_leaf_modules_never_the_local_side():
    modules = sorted(RUNTIME.glob("*.py"))
    assert len(modules) > 5
    bad = [(p.name, m) for p in modules for m in _imports(p)
           if (m.split(".") + [""])[1] in FORBIDDEN]
    assert not bad, f"the runtime imports the local side: {bad}"


def test_when_the_runtime_modules_are_loaded_then_no_local_side_module_comes_with_them():
    names = ", ".join(f"cgpu_kit.runtime.{p.stem}" for p in RUNTIME.glob("*.py") if p.stem != "__init__")
    code = (f"import sys, importlib\nfor n in '{names}'.split(', '): importlib.import_module(n)\n"
            "print(sorted(m for m in sys.modules if m.startswith('cgpu_kit')))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=ROOT).stdout.replace("'", '"'))
    assert [m for m in loaded if (m.split(".") + [""])[1] in FORBIDDEN] == [], loaded


PLUGIN = '''
"""A job type that lives outside cgpu_kit: each item is copied, and its size written beside it."""
from pathlib import Path
from typing import ClassVar

from cgpu_kit.jobs.base import CGPUJob
from cgpu_kit.params import Param, ParamSet
from cgpu_kit.requirements import Requirements
from cgpu_kit.runtime.processor import Processor

PARAMS = ParamSet([Param("unit", "bytes", "how the size is written", choices=("bytes", "kB"))])


class SizeJob(CGPUJob):
    """Copy each file and write its size."""

    job_type: ClassVar[str] = "sizer"
    processor: ClassVar[str] = "sizer_plugin:SizeProcessor"
    params_spec: ClassVar[ParamSet] = PARAMS
    accepts: ClassVar[frozenset] = frozenset({"image", "video", "audio"})

    def get_requirements(self) -> Requirements:
        return Requirements()


class SizeProcessor(Processor):
    params_spec = PARAMS

    def process(self, ctx):
        copy = ctx.output(Path(ctx.item.name).suffix)
        copy.write_bytes(ctx.item.path.read_bytes())
        size = ctx.item.path.stat().st_size
        text = f"{size} bytes" if self.params["unit"] == "bytes" else f"{size / 1000:.1f} kB"
        size_file = ctx.output(".size.txt")
        size_file.write_text(text)
        return [copy, size_file]
'''


@pytest.fixture
def sizer(tmp_path, monkeypatch):
    """The ``sizer`` plugin written under tmp_path and declared by an entry point; returns a small input."""
    plugins = tmp_path / "site"
    plugins.mkdir()
    (plugins / "sizer_plugin.py").write_text(textwrap.dedent(PLUGIN))
    register_plugin(monkeypatch, plugins, "sizer_plugin", {"sizer": "sizer_plugin:SizeJob"})
    from PIL import Image

    image = tmp_path / "in" / "a picture.png"
    image.parent.mkdir()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(image)
    return image


def _assert_sized(out: Path, image: Path, text: str | None = None) -> None:
    assert (out / image.name).read_bytes() == image.read_bytes()
    assert (out / (image.stem + ".size.txt")).read_text() == (text or f"{image.stat().st_size} bytes")


def test_when_a_plugin_registers_a_job_type_then_the_cli_lists_it_with_its_parameters_and_runs_it(sizer, tmp_path):
    cli = [sys.executable, "-m", "cgpu_kit"]
    helped = subprocess.run([*cli, "--help"], capture_output=True, text=True, check=True).stdout
    assert "sizer" in helped and "Copy each file and write its size." in helped
    assert "--unit {bytes,kB}" in subprocess.run([*cli, "sizer", "--help"], capture_output=True, text=True).stdout
    proc = subprocess.run([*cli, "sizer", str(sizer), "-o", str(tmp_path / "out"), "--unit", "kB", "-q"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_sized(tmp_path / "out", sizer, f"{sizer.stat().st_size / 1000:.1f} kB")


def test_when_a_plugin_registers_a_job_type_then_the_api_runs_it_by_name_and_by_its_shortcut(sizer, tmp_path):
    from cgpu_kit import api

    result = cgpu_kit.run("sizer", [sizer], tmp_path / "out")
    assert result.success, result.summary()
    _assert_sized(tmp_path / "out", sizer)
    result = api.sizer([sizer], tmp_path / "out2", unit="kB")
    assert result.success and result.metadata["job_type"] == "sizer"
    _assert_sized(tmp_path / "out2", sizer, f"{sizer.stat().st_size / 1000:.1f} kB")


def test_when_a_plugin_registers_a_job_type_then_the_panel_offers_it_and_runs_it(sizer, tmp_path):
    pytest.importorskip("ipywidgets")
    from cgpu_kit.widgets import ControlPanel

    panel = ControlPanel(job="sizer")
    assert "sizer" in panel.job_type.options and list(panel.param_widgets) == ["unit"]
    panel.inputs.value = str(sizer)
    panel.out.value = str(tmp_path / "out")
    panel.run_button.click()
    result = panel.wait(120)
    assert result is not None and result.success, panel.message.value
    _assert_sized(tmp_path / "out", sizer)


def test_when_a_plugin_registers_a_job_type_then_the_batch_notebook_runs_it_with_papermill(sizer, tmp_path):
    beside = Path(sys.executable).with_name("papermill")
    papermill = [str(beside)] if beside.exists() else [sys.executable, "-m", "papermill"]
    proc = subprocess.run(
        [*papermill, str(ROOT / "notebooks" / "batch.ipynb"), str(tmp_path / "run.ipynb"), "-p", "job", "sizer",
         "-p", "inputs", str(sizer), "-p", "out", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_sized(tmp_path / "out", sizer)
