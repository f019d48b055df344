"""The template's kernel process, spawned before the driver imports jupyter_client (a quarter of a second), so
that its boot (a second or more: IPython's imports) starts that much earlier and overlaps those imports;
kernel.start then adopts it (adopt.py) once it has checked that jupyter_client would have run the very same
command, or drops it and starts one as before.

Only the standard library and ``jupyter_core.paths`` are imported here, and the kernel is launched as
jupyter_client's LocalProvisioner launches one: the command of the kernel spec jupyter_client would pick, a
connection file written first (free ports on localhost, a random key), the same environment, working folder,
process session and closed stdin.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import Template

log = logging.getLogger("cgpu_kit.runtime")

#: jupyter_client's name for the kernel of its own Python, whose spec it makes up when no kernel.json names it
NATIVE = "python3"
_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


@dataclass
class Prespawned:
    """A kernel launched ahead of jupyter_client: what it was launched with, for adopt.py to check."""

    kernel_name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    connection_file: str
    process: subprocess.Popen


def kernel_dirs() -> list[str]:
    """Where jupyter_client looks for kernel specs, in its order: ``jupyter_path("kernels")``, then IPython's
    legacy folder (named here: left to its default, jupyter_client imports IPython, half a second, to learn it)."""
    from jupyter_core.paths import jupyter_path

    ipython = os.path.join(os.path.expanduser(os.environ.get("IPYTHONDIR") or "~/.ipython"), "kernels")
    return [*jupyter_path("kernels"), ipython]


def has_provisioners() -> bool:
    """Whether the jupyter_client that would be imported has kernel provisioners (7.0 and later; Colab has long
    pinned 6.x): looked up without importing it, in a fraction of a millisecond where importlib.metadata's
    version lookup costs 30 ms (its own imports), all of it before the kernel's launch."""
    import importlib.util

    found = importlib.util.find_spec("jupyter_client")
    where = found.submodule_search_locations if found else None
    return bool(where) and any(os.path.isfile(os.path.join(d, "provisioning", "__init__.py")) for d in where)


def spec_of(kernel_name: str) -> tuple[dict, str] | None:
    """The kernel spec jupyter_client would pick for ``kernel_name`` and its folder: the first ``kernel.json``
    of that name in :func:`kernel_dirs`, else, for python3, ipykernel's spec for this Python; None for a spec
    this module does not launch itself (another provisioner), which jupyter_client then starts as before."""
    name = kernel_name.lower()
    for folder in kernel_dirs():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            path = os.path.join(folder, entry)
            if entry.lower() == name and os.path.isfile(os.path.join(path, "kernel.json")):
                with open(os.path.join(path, "kernel.json"), encoding="utf-8") as f:
                    spec = json.load(f)
                provisioner = (spec.get("metadata") or {}).get("kernel_provisioner") or {}
                if provisioner.get("provisioner_name", "local-provisioner") != "local-provisioner":
                    return None
                return spec, path
    if name == NATIVE:
        return {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}, ""
    return None


def spawn(work_dir: Path, kernel_name: str) -> Prespawned | None:
    """Launch the kernel for ``kernel_name`` now, or None (no such spec here, an old jupyter_client, Windows,
    any failure): kernel.start then starts it as before. Never raises."""
    if sys.platform == "win32":  # jupyter_client launches kernels otherwise there (interrupt events)
        return None
    kernel_name = NATIVE if kernel_name == "python" else kernel_name  # as jupyter_client's KernelManager renames it
    connection_file = None
    try:
        found = spec_of(kernel_name) if has_provisioners() else None
        if found is None:
            return None
        spec, resource_dir = found
        # an ipykernel binds free ports itself where the file says 0, and writes them back: no other process can
        # take one between its pick and the bind, as happens to ports picked here (a kernel that then hangs)
        own_ports = any("ipykernel" in os.path.basename(str(a)) for a in spec["argv"])
        connection_file = _write_connection_file(kernel_name, work_dir, pick_ports=not own_ports)
        ns = {"connection_file": os.path.realpath(connection_file), "prefix": sys.prefix,
              "resource_dir": resource_dir, "cwd": str(work_dir)}
        argv = [os.path.expanduser(re.sub(r"\{([A-Za-z0-9_]+)\}", lambda m: ns.get(m.group(1), m.group()), a))
                for a in spec["argv"]]
        if argv and argv[0] in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}:
            argv[0] = sys.executable
        env = os.environ.copy()
        env.update({k: Template(v).safe_substitute(env) for k, v in (spec.get("env") or {}).items()})
        if str(spec.get("language", "")).lower().startswith("python"):
            env.pop("PYTHONEXECUTABLE", None)
        env["JPY_PARENT_PID"] = str(os.getpid())
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=str(work_dir), env=env, start_new_session=True)
        process.stdin.close()  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - only a head start: jupyter_client starts the kernel as before
        log.info("kernel not launched ahead (%s)", exc)
        if connection_file:
            Path(connection_file).unlink(missing_ok=True)
        return None
    return Prespawned(kernel_name, argv, env, str(work_dir), connection_file, process)


def discard(pre: Prespawned) -> None:
    """Kill the kernel and its process group, reap it and remove its connection file."""
    if pre.process.poll() is None:  # not reaped yet: its pid (and group) cannot be another process's
        try:
            os.killpg(pre.process.pid, signal.SIGKILL)  # its own session: the kernel leads its group
        except OSError:
            pre.process.kill()
        pre.process.wait()
    Path(pre.connection_file).unlink(missing_ok=True)


def bound(pre: Prespawned, timeout: float) -> None:
    """Wait until the kernel is running with ports in its connection file (launched with ports 0 (:func:`spawn`),
    it writes back those it bound); raises RuntimeError where it exited or took longer than ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if pre.process.poll() is not None:
            raise RuntimeError(f"the kernel launched ahead exited (code {pre.process.returncode})")
        try:
            with open(pre.connection_file, encoding="utf-8") as f:
                info = json.load(f)
            if all(int(info.get(port) or 0) > 0 for port in _PORTS):
                return
        except (OSError, ValueError):  # not there yet, or being written
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the kernel launched ahead did not bind its ports within {timeout:g} s")
        time.sleep(0.02)


def _write_connection_file(kernel_name: str, folder: Path, pick_ports: bool = True) -> str:
    """A connection file as jupyter_client's KernelManager writes one (mode 0600): free tcp ports on localhost
    (0s where not ``pick_ports``: the kernel binds its own), a random key, hmac-sha256, and no CurveZMQ keys
    (transport encryption stays off). It is written in the batch's work folder, so that a driver killed before
    it could remove it leaves it there, to go with the folder, rather than in a temporary folder for good."""
    ports = _free_ports(len(_PORTS)) if pick_ports else [0] * len(_PORTS)
    info = {**dict(zip(_PORTS, ports)), "ip": "127.0.0.1", "key": str(uuid.uuid4()), "transport": "tcp",
            "signature_scheme": "hmac-sha256", "kernel_name": kernel_name}
    fd, path = tempfile.mkstemp(suffix=".json", prefix="kernel-", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2)
    return path


def _free_ports(count: int) -> list[int]:
    """``count`` distinct tcp ports free on localhost now (free until another process binds one)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
