"""ChainJob: several job types one after the other on each item (stabilize -> upscale -> encode), as one batch:
one upload, every step on the runtime, one download of the final outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from ..exceptions import ParameterError
from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.chain import CHAIN_PARAMS
from .base import CGPUJob

#: job types whose outputs are not media, so they can only end a chain
LAST_ONLY = {"scenes", "beats", "transcribe"}


class ChainJob(CGPUJob):
    """Run job types one after the other on each item (--steps stabilize,upscale,encode, or as the first argument),
    each step's parameters in --step-params '{"upscale": {"scale": 2}}'; --keep-steps also delivers the
    intermediate outputs. A failed step fails its item with the step named."""

    job_type: ClassVar[str] = "chain"
    summary: ClassVar[str] = "run several job types one after the other on each item: one upload, one download"
    processor: ClassVar[str] = "cgpu_kit.runtime.chain:ChainProcessor"
    params_spec: ClassVar[ParamSet] = CHAIN_PARAMS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..registry import job_class

        steps = [s for s in self.params["steps"] if s]
        if not steps:
            raise ParameterError("a chain needs steps: e.g. steps=['stabilize', 'encode'] (--steps stabilize,encode)", name="steps")
        if "chain" in steps:
            raise ParameterError("a chain cannot contain a chain", name="steps")
        early = [s for s in steps[:-1] if s in LAST_ONLY]
        if early:
            raise ParameterError(f"{', '.join(early)} make(s) no media for a next step: put it last in the chain", name="steps")
        try:
            given = json.loads(self.params["step_params"] or "{}")
        except json.JSONDecodeError as exc:
            raise ParameterError(f"step_params must be JSON such as '{{\"upscale\": {{\"scale\": 2}}}}': {exc}",
                                 name="step_params") from None
        if not isinstance(given, dict) or set(given) - set(steps):
            raise ParameterError(f"step_params must map steps of the chain ({', '.join(steps)}) to their parameters, "
                                 f"got {given!r}", name="step_params")
        self.step_classes = [job_class(s) for s in steps]
        resolved = {s: cls.params_spec.resolve(given.get(s, {}), job_type=s) for s, cls in zip(steps, self.step_classes)}
        self.resolved_steps = resolved
        self.params = {**self.params, "steps": steps, "step_params": json.dumps(resolved, sort_keys=True),
                       "processors": [cls.processor for cls in self.step_classes]}
        self.accepts = self.step_classes[0].accepts  # type: ignore[misc]  (what the first step takes)
        self.outputs_beside_inputs = False  # type: ignore[misc]

    def _step(self, index: int) -> CGPUJob:
        """A bare step job (no folder, no lock) that can answer what its type needs for these parameters."""
        cls = self.step_classes[index]
        step = cls.__new__(cls)
        step.params = self.resolved_steps[self.params["steps"][index]]
        step.batch_items, step.items, step.max_pixels = self.batch_items, self.items, self.max_pixels
        step._item_timeout = None
        step._timeout = None
        return step

    def get_requirements(self) -> Requirements:
        needs = Requirements()
        for n in range(len(self.step_classes)):
            needs = needs | self._step(n).get_requirements()
        return needs

    def check_media(self, path: Path, info) -> None:
        self.step_classes[0].check_media(self._step(0), path, info)

    def sized_timeout(self) -> float:
        return sum(self._step(n).sized_timeout() for n in range(len(self.step_classes)))

    @property
    def item_timeout(self) -> float:
        if self._item_timeout:
            return float(self._item_timeout)
        return sum(self._step(n).item_timeout for n in range(len(self.step_classes)))
