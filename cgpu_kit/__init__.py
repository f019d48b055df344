"""cgpu_kit: GPU media jobs (Whisper, Real-ESRGAN, vidstab) on whole batches, on Colab through cgpu or locally."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import run, stabilize, transcribe, upscale
from .exceptions import (
    CgpuAuthError, CgpuKitError, InputError, JobError, MissingDependencyError, ParameterError, TransportError,
)
from .jobs.base import CGPUJob
from .jobs.stabilize import StabilizeJob
from .manager import CGPUJobManager
from .results import ItemResult, ItemStatus, JobResult, JobStatus


def __getattr__(name: str):
    if name in ("TranscribeJob", "UpscaleJob"):
        from .jobs import job_class

        return job_class(name[: -len("Job")].lower())
    raise AttributeError(f"module 'cgpu_kit' has no attribute {name!r}")


__all__ = [
    "CGPUJob", "CGPUJobManager", "CgpuAuthError", "CgpuKitError", "InputError", "ItemResult", "ItemStatus",
    "JobError", "JobResult", "JobStatus", "MissingDependencyError", "ParameterError", "StabilizeJob",
    "TranscribeJob", "TransportError", "UpscaleJob", "run", "stabilize", "transcribe", "upscale",
]
