"""WHICH runtimes a batch may use: ``--runtime SPEC`` (repeatable), ``runtimes=[...]`` in Python.

A SPEC names one runtime, optionally followed by ``@REMOTE_ROOT`` (where job folders go on it):

- ``local`` or ``local:DIR``: this machine, in its default work folder or in DIR;
- ``cgpu`` or ``cgpu:CONFIG_DIR``: the Colab runtime of cgpu's default account, or of the account whose cgpu
  config and login live in CONFIG_DIR (cgpu reads ``CGPU_CONFIG_DIR``), so two accounts are two runtimes;
- ``colab`` or ``colab:SESSION``: a runtime of Google's colab CLI;
- ``dask`` or ``dask:ADDRESS``: the workers of a Dask cluster (``dask:local:N``: N worker processes here), a
  :class:`Runner` with as many slots as the cluster has (GPU) workers (cgpu_kit/cluster.py).

Kinds are a table (:data:`KINDS`): a transport registered in :mod:`cgpu_kit.transports` is a kind, and a kind
may instead open a :class:`Runner` (an object that runs whole part-jobs itself, e.g. a Dask cluster).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .exceptions import ParameterError
from .transports import TRANSPORTS, get_transport
from .transports.base import Transport

if TYPE_CHECKING:
    from .clock import Pacing
    from .jobs.base import CGPUJob


@runtime_checkable
class Runner(Protocol):
    """A runtime that runs part-jobs itself instead of through a :class:`Transport` and the manager's steps."""

    key: str
    name: str
    #: how many parts it can run at once (one worker thread of the pool each)
    slots: int

    def run_job(self, job: CGPUJob, *, pacing: Pacing) -> None:
        """Run every pending item of the prepared ``job`` and deliver it (as upload + run_remote + download)."""

    def close(self) -> None:
        """Release what it holds."""


#: what a runtime is once opened: a transport driven by the manager, or a runner that runs part-jobs itself
Runtime = Transport | Runner

#: kind -> what its ``:ARG`` means (for messages); transports' kinds are in cgpu_kit.transports.TRANSPORTS
KINDS: dict[str, str] = {
    "local": "local or local:DIR (this machine; DIR: its work folder)",
    "cgpu": "cgpu or cgpu:CONFIG_DIR (a Colab account; CONFIG_DIR: its cgpu config folder)",
    "colab": "colab or colab:SESSION (a runtime of Google's colab CLI)",
}
#: kinds whose runtime is a :class:`Runner`: kind -> factory(spec) -> Runner
RUNNERS: dict[str, Callable[[RuntimeSpec], Runner]] = {}


def register_runner(kind: str, form: str, factory: Callable[[RuntimeSpec], Runner]) -> None:
    """Add a kind whose runtimes are :class:`Runner` objects (``form`` is shown in error messages)."""
    KINDS[kind] = form
    RUNNERS[kind] = factory


@dataclass(frozen=True)
class RuntimeSpec:
    """One parsed ``--runtime`` SPEC."""

    text: str
    kind: str
    arg: str = ""
    remote_root: str | None = None

    @property
    def backend(self) -> str:
        """The ``--backend`` name of this runtime (``cgpu:/path/to/account``)."""
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def _dask_runner(spec: RuntimeSpec) -> Runner:
    from .cluster import runtime_for  # distributed is imported only when a dask runtime is used

    return runtime_for(spec.backend)


register_runner("dask", "dask or dask:ADDRESS (a Dask cluster; dask:local:N starts N worker processes here)",
                _dask_runner)


def forms() -> str:
    return "; ".join(KINDS[k] for k in KINDS) + "; each optionally followed by @REMOTE_ROOT"


def parse_runtime(spec: str) -> RuntimeSpec:
    """Parse one SPEC; a bad one raises :class:`ParameterError` naming it and the accepted forms."""
    text = str(spec).strip()
    head, at, root = text.partition("@")
    kind, _, arg = head.partition(":")
    known = set(KINDS) | set(TRANSPORTS)
    if not text or kind not in known:
        raise ParameterError(f"runtime {spec!r}: unknown kind {kind!r}; use {forms()}", name="runtimes")
    if at and not root:
        raise ParameterError(f"runtime {spec!r}: nothing after '@'; write @REMOTE_ROOT or leave it out", name="runtimes")
    if ":" in head and not arg:
        raise ParameterError(f"runtime {spec!r}: nothing after '{kind}:'; use {KINDS.get(kind, kind)}", name="runtimes")
    if kind == "local":
        if arg and root:
            raise ParameterError(f"runtime {spec!r}: local:DIR is already its work folder; drop @{root}", name="runtimes")
        arg, root = "", os.path.abspath(os.path.expanduser(arg or root)) if (arg or root) else ""
    elif kind == "dask":
        if root:
            raise ParameterError(f"runtime {spec!r}: a Dask worker uses a folder of its own; drop @{root}", name="runtimes")
        from .cluster import scheduler_address

        scheduler_address(head)  # none given and none configured: refused now, naming the ways to give one
    elif kind == "cgpu" and arg:
        arg = os.path.abspath(os.path.expanduser(arg))
        if not os.path.isdir(arg):
            raise ParameterError(f"runtime {spec!r}: the cgpu config folder {arg} does not exist; create it and run "
                                 f"`CGPU_CONFIG_DIR={arg} cgpu status` once to log that account in", name="runtimes")
    return RuntimeSpec(text=text, kind=kind, arg=arg, remote_root=root or None)


def parse_runtimes(specs: Any) -> list[Any]:
    """A list of SPECs (a comma-free string, a list of strings, Transports or Runners), parsed and checked;
    the same runtime named twice is refused (it would only compete with itself)."""
    if specs is None:
        return []
    if isinstance(specs, (str, Transport)) or isinstance(specs, Runner):
        specs = [specs]
    out: list[Any] = []
    for s in specs:
        out.append(s if isinstance(s, (Transport, Runner, RuntimeSpec)) else parse_runtime(s))
    seen: set[str] = set()
    for s in out:
        label = runtime_label(s)
        if label in seen:
            raise ParameterError(f"runtime {label!r} is named twice; name each runtime once", name="runtimes")
        seen.add(label)
    return out


def runtime_label(runtime: Any) -> str:
    """How messages and ``metadata["runtime"]`` name a runtime: its SPEC as the user wrote it."""
    if isinstance(runtime, RuntimeSpec):
        return runtime.text
    return str(getattr(runtime, "spec", None) or getattr(runtime, "key", None) or getattr(runtime, "name", runtime))


def open_runtime(spec: RuntimeSpec | Runtime) -> Runtime:
    """The Transport (or Runner) of one runtime; nothing is contacted yet."""
    if not isinstance(spec, RuntimeSpec):
        return spec
    if spec.kind in RUNNERS:
        return RUNNERS[spec.kind](spec)
    return get_transport(spec.backend, remote_root=spec.remote_root)
