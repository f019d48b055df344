"""Shared fixtures: real generated media, a fresh job manager, and a local runtime under the test's tmp dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cgpu_kit.manager import CGPUJobManager
from cgpu_kit.samples import make_shaky_clip

sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))
from cgpu_harness import fake_cgpu  # noqa: E402,F401  (the stand-in cgpu, a fixture for every test module)


@pytest.fixture(autouse=True)
def fresh_manager(tmp_path_factory, monkeypatch):
    """Each test gets its own manager singleton and its own local runtime folder."""
    root = tmp_path_factory.mktemp("runtime")
    monkeypatch.setenv("CGPU_KIT_LOCAL_ROOT", str(root))
    monkeypatch.setenv("CGPU_KIT_SAMPLES", str(tmp_path_factory.mktemp("samples")))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))  # the jobs index, not the user's
    CGPUJobManager.reset()
    yield CGPUJobManager()
    CGPUJobManager.reset()


@pytest.fixture(scope="session")
def clip_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def shaky_clip(clip_cache):
    """A factory of small shaky clips (cached per session by their settings): ``shaky_clip(name, **opts)``."""
    made: dict[tuple, Path] = {}

    def make(name: str = "clip.mp4", **opts) -> Path:
        key = tuple(sorted(opts.items()))
        if key not in made:
            made[key] = make_shaky_clip(clip_cache / f"src_{len(made)}.mp4", **opts)
        return made[key]

    return make


def copy_as(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` (any name, however odd) and return ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(src.read_bytes())
    return dest


def named_clips(shaky_clip, folder: Path, names: list[str], **opts) -> list[Path]:
    """Different small shaky clips (``shaky_clip`` settings ``opts``) under the given (odd) names."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for n, name in enumerate(names):
        out.append(copy_as(shaky_clip(**opts, seed=n), folder / name))
    return out


def hidden_names(root: str) -> list[str]:
    """Files and folders under ``root`` whose names start with a dot (a stock Jupyter server refuses them)."""
    return [os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files if n.startswith(".")]


TESTS_DIR = Path(__file__).resolve().parent


def register_plugin(monkeypatch, folder: Path, dist: str, entry_points: dict[str, str]) -> None:
    """Install a job-type plugin as pip would declare it: a ``*.dist-info`` with ``entry_points.txt`` in
    ``folder``, put on ``sys.path`` here and on ``PYTHONPATH`` for the kernels and CLIs started from here."""
    info = folder / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text("[cgpu_kit.job_types]\n" + lines)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))


@pytest.fixture
def sleepy(monkeypatch, tmp_path_factory):
    """The test-only ``sleepy`` job type, registered through an entry point as a plugin; returns its class."""
    register_plugin(monkeypatch, tmp_path_factory.mktemp("plugins"), "cgpu_kit_sleepy", {"sleepy": "support.sleepy:SleepyJob"})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])))
    from support.sleepy import SleepyJob

    return SleepyJob


#: the reliability figures of the xdist workers (scripts/test.sh runs the suite on two), gathered as each ends
_WORKERS: dict = {"faults": {}, "hostile": []}


def _reliability() -> tuple[dict, list]:
    """This process's reliability figures: fault counts (test_reliability) and the hostile-input table (test_hostile)."""
    import sys

    faults = getattr(sys.modules.get("test_reliability"), "FAULTS", None) or {}
    table = getattr(sys.modules.get("test_hostile"), "HOSTILE_TABLE", None) or []
    return dict(faults), [list(row) for row in table]


def pytest_sessionfinish(session):
    """An xdist worker hands its reliability figures to the controller, which prints the summary."""
    import json

    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        faults, table = _reliability()
        output["reliability"] = json.dumps({"faults": faults, "hostile": table})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    import json

    sent = json.loads(getattr(node, "workeroutput", {}).get("reliability") or "{}")
    for key, count in (sent.get("faults") or {}).items():
        _WORKERS["faults"][key] = _WORKERS["faults"].get(key, 0) + count
    _WORKERS["hostile"].extend(sent.get("hostile") or [])


def pytest_terminal_summary(terminalreporter):
    """The reliability figures of this run: faults injected and survived, items lost and redone, and what each
    hostile input got (recorded in docs/reliability.md): this process's, or its xdist workers'."""
    import json

    faults, table = _reliability()
    for key, count in _WORKERS["faults"].items():
        faults[key] = faults.get(key, 0) + count
    table += _WORKERS["hostile"]
    if not faults and not table:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability")
    if faults:
        lost = faults.get("faults injected", 0) - faults.get("faults survived", 0)
        write(f"faults injected: {faults.get('faults injected', 0)}, survived: {faults.get('faults survived', 0)}, "
              f"runs with items lost: {lost}, items redone: {faults.get('items redone', 0)}")
    for label, name, outcome in table:
        write(f"  {label:40} {name:28} {outcome[:110]}")
    artifacts = TESTS_DIR.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "reliability.json").write_text(json.dumps({"faults": faults, "hostile": table}, indent=1))
