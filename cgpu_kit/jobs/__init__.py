"""Job types: WHAT to do with a batch."""

from __future__ import annotations

import importlib

from .base import CGPUJob

#: job type -> "module:Class"
JOB_TYPES: dict[str, str] = {
    "stabilize": "cgpu_kit.jobs.stabilize:StabilizeJob",
    "transcribe": "cgpu_kit.jobs.transcribe:TranscribeJob",
    "upscale": "cgpu_kit.jobs.upscale:UpscaleJob",
    "scenes": "cgpu_kit.jobs.scenes:ScenesJob",
    "beats": "cgpu_kit.jobs.beats:BeatsJob",
    "interpolate": "cgpu_kit.jobs.interpolate:InterpolateJob",
    "encode": "cgpu_kit.jobs.encode:EncodeJob",
}


def job_class(job_type: str) -> type[CGPUJob]:
    from ..exceptions import ParameterError

    try:
        module, _, name = JOB_TYPES[job_type].partition(":")
    except KeyError:
        raise ParameterError(f"unknown job type {job_type!r}; known: {', '.join(JOB_TYPES)}", name="job") from None
    return getattr(importlib.import_module(module), name)


__all__ = ["CGPUJob", "JOB_TYPES", "job_class"]
