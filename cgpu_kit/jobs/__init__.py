"""Job types: WHAT to do with a batch. They are found through :mod:`cgpu_kit.registry` (its docstring says
how a job type registers)."""

from __future__ import annotations

from ..registry import BUILTIN as JOB_TYPES
from ..registry import job_class
from .base import CGPUJob

__all__ = ["CGPUJob", "JOB_TYPES", "job_class"]
