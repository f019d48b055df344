"""The one registry of job types: every surface (CLI, API, panel, batch notebook) lists what it finds here.

How a job type registers (once, in one place)
----------------------------------------------
A job type is a :class:`~cgpu_kit.jobs.base.CGPUJob` subclass that says WHAT: ``job_type`` (its name),
``params_spec``, ``accepts``, ``get_requirements()``, ``summary`` (one line of help), ``processor`` (the
``"module:Class"`` of its runtime-side :class:`~cgpu_kit.runtime.processor.Processor`) and, optionally,
``template_name`` (default: the generic ``job.ipynb``).

* **Built into cgpu_kit**: add one line ``"name": "cgpu_kit.jobs.name:NameJob"`` to :data:`BUILTIN` below.
* **From a separate package** (no edit to cgpu_kit): declare an entry point in the group ``cgpu_kit.job_types``::

      # pyproject.toml of your package
      [project.entry-points."cgpu_kit.job_types"]
      sleepy = "my_package.jobs:SleepyJob"

  (the entry point's name is the job type's name; installed, or as a ``*.dist-info/entry_points.txt`` on
  ``sys.path``).

Nothing else is edited: ``cgpu-kit NAME`` (the CLI subcommand and its options from ``params_spec``),
``cgpu_kit.run("NAME", ...)`` and ``cgpu_kit.api.NAME(...)``, the panel's job choice and
``notebooks/batch.ipynb -p job NAME`` all come from :func:`job_types`. The runtime never imports job types:
the local side writes the processor's ``"module:Class"`` into the job file, and the runtime loads only that.
A built-in name wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata
from typing import TYPE_CHECKING

from .exceptions import ParameterError

if TYPE_CHECKING:
    from .jobs.base import CGPUJob

log = logging.getLogger(__name__)

#: the entry-point group a separate package adds job types through
ENTRY_POINT_GROUP = "cgpu_kit.job_types"

#: job type -> "module:Class" of the job types shipped with cgpu_kit
BUILTIN: dict[str, str] = {
    "stabilize": "cgpu_kit.jobs.stabilize:StabilizeJob",
    "transcribe": "cgpu_kit.jobs.transcribe:TranscribeJob",
    "upscale": "cgpu_kit.jobs.upscale:UpscaleJob",
    "scenes": "cgpu_kit.jobs.scenes:ScenesJob",
    "beats": "cgpu_kit.jobs.beats:BeatsJob",
    "interpolate": "cgpu_kit.jobs.interpolate:InterpolateJob",
    "encode": "cgpu_kit.jobs.encode:EncodeJob",
    "chain": "cgpu_kit.jobs.chain:ChainJob",
}


def job_types() -> dict[str, str]:
    """Every known job type -> its ``"module:Class"``: the built-in ones, then those of installed plugins.

    Read afresh on each call (a few milliseconds), so a plugin put on ``sys.path`` later is found too.
    """
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            log.debug("job type %s of %s ignored: the name is taken", ep.name, ep.value)
            continue
        found[ep.name] = ep.value
    return found


def load(target: str) -> object:
    """The object a ``"module:attribute"`` string names."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def job_class(job_type: str) -> type[CGPUJob]:
    """The class of ``job_type``; an unknown name raises :class:`ParameterError` listing the known ones."""
    known = job_types()
    try:
        target = known[job_type]
    except KeyError:
        raise ParameterError(f"unknown job type {job_type!r}; known: {', '.join(known)}", name="job") from None
    return load(target)  # type: ignore[return-value]


def available() -> dict[str, type[CGPUJob]]:
    """The job types whose classes import here (one whose module is broken is left out, with a warning)."""
    found = {}
    for name, target in job_types().items():  # one entry-point scan (0.05-0.1 s each), not one per type
        try:
            found[name] = load(target)
        except ImportError as exc:
            log.warning("job type %s cannot be loaded: %s", name, exc)
    return found


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "available", "job_class", "job_types", "load"]
