"""The per-job-type half that runs on the runtime: load what is heavy once, then process one item at a time."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from .context import ItemContext

#: job type -> "module:Class"; imported only when a batch of that type runs
PROCESSORS: dict[str, str] = {
    "stabilize": "cgpu_kit.runtime.stabilize:StabilizeProcessor",
    "transcribe": "cgpu_kit.runtime.transcribe:TranscribeProcessor",
    "upscale": "cgpu_kit.runtime.upscale:UpscaleProcessor",
    "scenes": "cgpu_kit.runtime.scenes:ScenesProcessor",
    "beats": "cgpu_kit.runtime.beats:BeatsProcessor",
    "interpolate": "cgpu_kit.runtime.interpolate:InterpolateProcessor",
    "encode": "cgpu_kit.runtime.encode:EncodeProcessor",
}


class Processor:
    """Base of the runtime side of a job type.

    ``__init__`` loads models and finds tools once per batch; ``process`` handles one item and returns the
    files it wrote (paths from ``ctx.output``); any exception fails that item alone.
    """

    #: items processed side by side at most (tools that use every core on their own want 1)
    max_workers: int = 1

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def process(self, ctx: ItemContext) -> list[Path]:
        raise NotImplementedError

    def close(self) -> None:
        """Release models and files; called once after the last item."""

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        """Tiny inputs for running the template by hand with its defaults."""
        raise NotImplementedError


def registry() -> dict[str, str]:
    """The processors known here: the built-in ones, and any named in ``CGPU_KIT_PROCESSORS``
    (``"name=module:Class,..."``), so plugins and tests can add job types the runtime side can load."""
    extra = {}
    for entry in filter(None, os.environ.get("CGPU_KIT_PROCESSORS", "").split(",")):
        name, _, target = entry.partition("=")
        extra[name.strip()] = target.strip()
    return {**PROCESSORS, **extra}


def load_processor(job_type: str) -> type[Processor]:
    known = registry()
    try:
        target = known[job_type]
    except KeyError:
        raise ValueError(f"unknown job type {job_type!r}; known: {', '.join(known)}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
