"""The functions people call first: one batch in, one :class:`JobResult` out.

:func:`run` takes any job type of the registry (cgpu_kit/registry.py); each has a shortcut of its name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from .cluster import place_scheduler
from .exceptions import ParameterError
from .manager import CGPUJobManager
from .registry import job_class, job_types
from .results import JobResult


def run(job_type: str, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], out_dir: str | os.PathLike[str],
        *, backend: str = "local", scheduler: str | None = None, runtimes: Iterable[Any] | str | None = None,
        **options: Any) -> JobResult:
    """Run one batch of ``job_type`` through the process's manager and return its result.

    ``backend="dask"`` runs it on a Dask cluster: ``scheduler`` is its address (else ``DASK_SCHEDULER_ADDRESS``
    or Dask's ``scheduler-address`` setting; docs/dask.md). ``runtimes`` (``["cgpu", "cgpu:~/account2",
    "local"]``, see :mod:`cgpu_kit.runtimes`) spreads the batch over several runtimes; one runtime is the same
    as ``backend``.

    Wrong arguments raise :class:`ParameterError` (an empty list of inputs too, as the CLI refuses it) before
    anything runs; whatever happens, the output folder's lock is released when this returns or raises.
    """
    backend, runtimes = place_scheduler(backend, runtimes, scheduler)
    job = job_class(job_type)(paths, out_dir, backend=backend, runtimes=runtimes, **options)
    if not job.inputs:
        raise ParameterError(f"no inputs: give {job_type} at least one file", name="inputs")
    try:
        return CGPUJobManager().run(job)
    finally:
        job.release_all()


def shortcut(job_type: str) -> Callable[..., JobResult]:
    """``run`` with ``job_type`` filled in: ``cgpu_kit.api.NAME(paths, out_dir, **params)`` for every
    registered job type (plugins too, through this module's ``__getattr__``)."""

    def call(paths: Any, out_dir: str | os.PathLike[str], *, backend: str = "local",
             runtimes: Iterable[Any] | str | None = None, **params: Any) -> JobResult:
        return run(job_type, paths, out_dir, backend=backend, runtimes=runtimes, **params)

    call.__name__ = call.__qualname__ = job_type
    call.__doc__ = (f"Run a batch of {job_type} (see :func:`run`); ``params`` are the job type's parameters "
                    "and the batch options of :class:`cgpu_kit.CGPUJob` (``timeout``, ``workers``, ``force``...).")
    return call


#: the named shortcuts of the built-in job types (documented; plugins' come from ``__getattr__``)
stabilize = shortcut("stabilize")
stabilize.__doc__ = """Stabilize clips with two-pass vidstab; outputs are written to ``out_dir`` under the clips' names.

    ``params``: the vidstab and x264 parameters of :data:`cgpu_kit.jobs.stabilize.STABILIZE_PARAMS`, and
    the batch options of :class:`cgpu_kit.CGPUJob` (``timeout``, ``item_timeout``, ``workers``, ``force``...).
    """
transcribe = shortcut("transcribe")
transcribe.__doc__ = "Transcribe audio or video files with Whisper into subtitles (.srt, and .vtt/.json/.txt on request)."
upscale = shortcut("upscale")
upscale.__doc__ = "Upscale images and videos with Real-ESRGAN (x2, x3 or x4)."


def chain(steps: Iterable[str] | str, paths: Any, out_dir: str | os.PathLike[str], *, params: dict[str, dict[str, Any]] | None = None,
          keep_steps: bool = False, backend: str = "local", runtimes: Iterable[Any] | str | None = None,
          **options: Any) -> JobResult:
    """Run ``steps`` (job types, e.g. ``["stabilize", "upscale", "encode"]``) one after the other on each item, as
    one batch: ``params`` maps a step to its parameters; ``keep_steps`` also delivers the intermediate outputs."""
    steps = [s.strip() for s in steps.split(",")] if isinstance(steps, str) else list(steps)
    import json

    return run("chain", paths, out_dir, backend=backend, runtimes=runtimes, steps=steps,
               step_params=json.dumps(params or {}), keep_steps=keep_steps, **options)


def __getattr__(name: str) -> Callable[..., JobResult]:
    if not name.startswith("_") and name in job_types():
        return shortcut(name)
    raise AttributeError(f"module 'cgpu_kit.api' has no attribute {name!r}")
