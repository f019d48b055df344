"""cgpu_kit: GPU media jobs (Whisper, Real-ESRGAN, vidstab) on whole batches, on Colab through cgpu or locally.

The names below load on first use, so ``import cgpu_kit`` (and every runtime-side module, such as the
status command polled during a batch) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "api", "chain": "api", "stabilize": "api", "transcribe": "api", "upscale": "api",
    "CgpuAuthError": "exceptions", "CgpuKitError": "exceptions", "InputError": "exceptions",
    "JobError": "exceptions", "MissingDependencyError": "exceptions", "ParameterError": "exceptions",
    "TransportError": "exceptions",
    "CGPUJob": "jobs.base", "StabilizeJob": "jobs.stabilize", "CGPUJobManager": "manager",
    "ItemResult": "results", "ItemStatus": "results", "JobResult": "results", "JobStatus": "results",
}

__all__ = sorted([*_EXPORTS, "TranscribeJob", "UpscaleJob"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in ("TranscribeJob", "UpscaleJob"):
        from .jobs import job_class

        value = job_class(name[: -len("Job")].lower())
    else:
        raise AttributeError(f"module 'cgpu_kit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
