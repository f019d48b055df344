"""The functions people call first: one batch in, one :class:`JobResult` out."""

from __future__ import annotations

import os
from typing import Any, Iterable

from .exceptions import ParameterError
from .jobs import job_class
from .manager import CGPUJobManager
from .results import JobResult


def run(job_type: str, paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str], out_dir: str | os.PathLike[str],
        *, backend: str = "local", **options: Any) -> JobResult:
    """Run one batch of ``job_type`` through the process's manager and return its result.

    Wrong arguments raise :class:`ParameterError` (an empty list of inputs too, as the CLI refuses it) before
    anything runs; whatever happens, the output folder's lock is released when this returns or raises.
    """
    job = job_class(job_type)(paths, out_dir, backend=backend, **options)
    if not job.inputs:
        raise ParameterError(f"no inputs: give {job_type} at least one file", name="inputs")
    try:
        return CGPUJobManager().run(job)
    finally:
        job.release_all()


def stabilize(paths, out_dir, *, backend: str = "local", **params: Any) -> JobResult:
    """Stabilize clips with two-pass vidstab; outputs are written to ``out_dir`` under the clips' names.

    ``params``: the vidstab and x264 parameters of :data:`cgpu_kit.jobs.stabilize.STABILIZE_PARAMS`, and
    the batch options of :class:`cgpu_kit.CGPUJob` (``timeout``, ``item_timeout``, ``workers``, ``force``...).
    """
    return run("stabilize", paths, out_dir, backend=backend, **params)


def transcribe(paths, out_dir, *, backend: str = "local", **params: Any) -> JobResult:
    """Transcribe audio or video files with Whisper into subtitles (.srt, and .vtt/.json/.txt on request)."""
    return run("transcribe", paths, out_dir, backend=backend, **params)


def upscale(paths, out_dir, *, backend: str = "local", **params: Any) -> JobResult:
    """Upscale images and videos with Real-ESRGAN (x2, x3 or x4)."""
    return run("upscale", paths, out_dir, backend=backend, **params)
