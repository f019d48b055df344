"""The per-job-type half that runs on the runtime: load what is heavy once, then process one item at a time.

A processor is found by the ``"module:Class"`` string its job type names (``CGPUJob.processor``), which the
local side writes into the job file: the runtime never imports job types or their registry.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

from ..params import ParamSet
from .context import ItemContext


class Processor:
    """Base of the runtime side of a job type.

    ``__init__`` loads models and finds tools once per batch; ``process`` handles one item and returns the
    files it wrote (paths from ``ctx.output``); any exception fails that item alone.
    """

    #: the parameters it takes (the job type's ``params_spec``): a template run by hand gets their defaults
    params_spec: ClassVar[ParamSet | None] = None
    #: items processed side by side at most (tools that use every core on their own want 1)
    max_workers: int = 1

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params

    def process(self, ctx: ItemContext) -> list[Path]:
        raise NotImplementedError

    def close(self) -> None:
        """Release models and files; called once after the last item."""

    @classmethod
    def warm(cls, params: dict[str, Any]) -> None:
        """Load ahead what ``__init__`` would load with ``params`` (a model), into a cache ``__init__`` then takes
        from: a standby driver's kernel calls it before the batch arrives (cgpu_kit/runtime/driver.py). Never
        downloads; failing is harmless (``__init__`` loads as always)."""

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        """Tiny inputs for running the template by hand with its defaults."""
        raise NotImplementedError


def load_processor(target: str) -> type[Processor]:
    """The processor class a ``"module:Class"`` string names (written into the job file by the local side)."""
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"processor {target!r} is not a 'module:Class' string")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"processor {target!r} cannot be loaded on this runtime: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Processor)):
        raise ValueError(f"processor {target!r} is not a cgpu_kit.runtime.processor.Processor subclass")
    return cls
