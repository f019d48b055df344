"""Runs ON the runtime as the ``__main__.py`` of the shipped bundle: ``python3 bundle.zip MODE HOME ...``.

It uses the standard library only, because it runs before anything is installed, and it never imports
cgpu_kit (whose ``__init__`` needs tenacity). Modes:

- ``setup HOME BUNDLE_SHA SPEC``: unpack the bundle into ``HOME/lib`` (unless that version is there), see
  which requirements are missing (``SPEC``: base64 JSON of pip/apt/modules/programs); when none is, write
  the marker ``HOME/ready.json`` at once; otherwise start ``install`` detached (own session, no stdin,
  output to ``HOME/setup.log``) so that no connection has to stay open while pip and apt work.
- ``install HOME BUNDLE_SHA SPEC``: install what is missing, check again, write ``HOME/setup-KEY.json``
  (the outcome) and, on success, the marker.
- ``state HOME BUNDLE_SHA SPEC [WAIT]``: one JSON line: ``ready``, ``installing``, ``failed`` (with the log's
  tail) or ``dead`` (the installer vanished without an outcome); while installing, it first waits up to WAIT
  seconds for the outcome.

Nothing it writes has a hidden name (a name starting with ``.``): the runtime's own Jupyter server may refuse
such paths, and nothing that has to work may depend on them.

Every answer is one line ``CGPUKIT_SETUP {json}``: the local side looks for that prefix, so noise around it
does not matter.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

PREFIX = "CGPUKIT_SETUP "


def answer(state: str, **more: object) -> None:
    print(PREFIX + json.dumps(dict(state=state, **more), sort_keys=True), flush=True)


def spec_key(bundle_sha: str, spec: dict) -> str:
    blob = json.dumps([bundle_sha, {k: sorted(v) for k, v in sorted(spec.items()) if isinstance(v, list)}])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def unpack(home: Path, bundle_sha: str) -> Path:
    lib = home / "lib"
    stamp = lib / "bundle.sha256"
    if stamp.is_file() and stamp.read_text().strip() == bundle_sha:
        return lib
    fresh = home / f"lib.{os.getpid()}"
    shutil.rmtree(fresh, ignore_errors=True)
    with zipfile.ZipFile(home / "bundle.zip") as zf:
        for name in zf.namelist():
            if name != "__main__.py" and not name.startswith(("/", "..")) and ".." not in name.split("/"):
                zf.extract(name, fresh)
    (fresh / "bundle.sha256").write_text(bundle_sha)
    old = home / f"lib.old.{os.getpid()}"
    if lib.exists():
        os.replace(lib, old)
    os.replace(fresh, lib)
    shutil.rmtree(old, ignore_errors=True)
    return lib


def _dist_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[@(]", requirement.strip(), maxsplit=1)[0]


def _satisfied(requirement: str) -> bool:
    try:
        version = importlib.metadata.version(_dist_name(requirement))
    except importlib.metadata.PackageNotFoundError:
        return False
    try:  # a version range is checked when packaging is at hand; otherwise "installed" is taken as enough
        from packaging.requirements import Requirement

        return Requirement(requirement).specifier.contains(version, prereleases=True)
    except Exception:
        return True


def _apt_installed(package: str) -> bool:
    if shutil.which(package):
        return True
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError:
        return False
    return "install ok installed" in out.stdout


def missing(spec: dict, lib: Path) -> dict[str, list[str]]:
    importlib.invalidate_caches()
    if str(lib) not in sys.path:
        sys.path.insert(0, str(lib))
    return {
        "pip": [r for r in spec.get("pip", []) if not _satisfied(r)],
        "pip_no_deps": [r for r in spec.get("pip_no_deps", []) if not _satisfied(r)],
        "apt": [p for p in spec.get("apt", []) if not _apt_installed(p)],
        "modules": [m for m in spec.get("modules", []) if importlib.util.find_spec(m) is None],
        "programs": [p for p in spec.get("programs", []) if shutil.which(p) is None],
    }


def write_marker(home: Path, bundle_sha: str, spec: dict) -> None:
    marker = {"bundle": bundle_sha, "key": spec_key(bundle_sha, spec), "python": sys.executable, "time": time.time(),
              **{k: sorted(spec.get(k, [])) for k in ("pip", "apt", "modules", "programs", "pip_no_deps")}}
    tmp = home / "ready.json.tmp"
    tmp.write_text(json.dumps(marker, sort_keys=True))
    os.replace(tmp, home / "ready.json")


def install(home: Path, bundle_sha: str, spec: dict) -> int:
    key = spec_key(bundle_sha, spec)
    outcome = home / f"setup-{key}.json"
    lib = unpack(home, bundle_sha)
    todo = missing(spec, lib)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = []
    apt = sorted(set(todo["apt"]) | set(todo["programs"]) & set(spec.get("apt", [])))
    if apt:
        steps.append(["apt-get", "update", "-qq"])
        steps.append(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *apt])
    if todo["pip_no_deps"]:
        steps.append([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *spec.get("pip_options", []), *todo["pip_no_deps"]])
    if todo["pip"] or todo["modules"]:
        steps.append([sys.executable, "-m", "pip", "install", "-q", *spec.get("pip_options", []), *(todo["pip"] or spec.get("pip", []))])
    error = None
    for argv in steps:
        print("+ " + " ".join(argv), flush=True)
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, env=env).returncode
        if code != 0:
            error = f"{' '.join(argv[:4])} ... exited with {code}"
            break
    left = missing(spec, lib)
    if error is None and any(left.values()):
        error = "still missing after installing: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in left.items() if v)
    if error is None:
        write_marker(home, bundle_sha, spec)
    tmp = outcome.with_suffix(".tmp")
    tmp.write_text(json.dumps({"exit_code": 0 if error is None else 1, "error": error, "installed": todo}))
    os.replace(tmp, outcome)
    return 0 if error is None else 1


# _alive and _tail are cgpu_kit.runtime.status's and cgpu_kit.util's, written again: this file runs before
# cgpu_kit is unpacked and imports the standard library only
def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def state(home: Path, bundle_sha: str, spec: dict, wait: float = 0.0) -> None:
    """Answer the install's state; while it is installing, first wait up to ``wait`` seconds for it to end, so
    that a fresh runtime's long pip install costs a call per ``wait`` seconds, not one per poll interval."""
    key = spec_key(bundle_sha, spec)
    outcome = home / f"setup-{key}.json"
    until = time.monotonic() + wait
    while not outcome.is_file() and _alive(home / f"setup-{key}.pid") and time.monotonic() < until:
        time.sleep(0.5)
    if outcome.is_file():
        result = json.loads(outcome.read_text())
        if result["exit_code"] == 0:
            answer("ready", installed=result.get("installed"))
        else:
            answer("failed", error=result.get("error"), log=_tail(home / "setup.log"))
    elif _alive(home / f"setup-{key}.pid"):
        answer("installing", log=_tail(home / "setup.log", 3))
    else:
        answer("dead", log=_tail(home / "setup.log"))


def setup(home: Path, bundle_sha: str, spec: dict, encoded: str) -> None:
    lib = unpack(home, bundle_sha)
    todo = missing(spec, lib)
    if not any(todo.values()):
        write_marker(home, bundle_sha, spec)
        answer("ready", installed={})
        return
    key = spec_key(bundle_sha, spec)
    (home / f"setup-{key}.json").unlink(missing_ok=True)
    with open(home / "setup.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(home / "bundle.zip"), "install", str(home), bundle_sha, encoded],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(home),
        )
    (home / f"setup-{key}.pid").write_text(str(proc.pid))
    answer("installing", missing=todo)


def main(argv: list[str]) -> int:
    mode, home, bundle_sha, encoded = argv[0], Path(argv[1]), argv[2], argv[3]
    spec = json.loads(base64.b64decode(encoded))
    if mode == "setup":
        setup(home, bundle_sha, spec, encoded)
    elif mode == "install":
        return install(home, bundle_sha, spec)
    elif mode == "state":
        state(home, bundle_sha, spec, float(argv[4]) if len(argv) > 4 else 0.0)
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
