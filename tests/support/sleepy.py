"""A test-only job type whose items sleep: makes timeouts, cancellation and faults deterministic.

Registered as a plugin would be (the ``sleepy`` fixture puts an entry point of the group
``cgpu_kit.job_types`` on the path); it brings no template: the generic ``job.ipynb`` runs its processor.
"""

from __future__ import annotations

import math
import os
import struct
import time
import wave
from pathlib import Path
from typing import ClassVar

from cgpu_kit.jobs.base import CGPUJob
from cgpu_kit.params import Param, ParamSet
from cgpu_kit.requirements import Requirements
from cgpu_kit.runtime.context import ItemContext, ItemError
from cgpu_kit.runtime.processor import Processor


class SleepyJob(CGPUJob):
    """Each item sleeps ``seconds``, then copies its input; inputs named in ``fail_names`` fail."""

    job_type: ClassVar[str] = "sleepy"
    processor: ClassVar[str] = "support.sleepy:SleepProcessor"
    params_spec: ClassVar[ParamSet] = ParamSet([
        Param("seconds", 0.0, "how long each item sleeps", min=0.0, max=600.0),
        Param("fail_names", "", "comma-separated input names that fail"),
    ])
    accepts: ClassVar[frozenset[str]] = frozenset({"video", "audio", "image"})

    def get_requirements(self) -> Requirements:
        return Requirements()


class SleepProcessor(Processor):
    params_spec = SleepyJob.params_spec
    max_workers = 4

    def process(self, ctx: ItemContext) -> list[Path]:
        if ctx.item.name in self.params["fail_names"].split(","):
            raise ItemError("failed on purpose")
        end = time.monotonic() + float(self.params["seconds"])
        while time.monotonic() < end:
            ctx.check()
            time.sleep(0.02)
        out = ctx.output(".bin")
        out.write_bytes(ctx.item.path.read_bytes())
        counter = os.environ.get("SLEEPY_COUNTER")
        if counter:  # every item processed, in order, to prove nothing finished is redone
            with open(counter, "a") as f:
                f.write(ctx.item.name.replace("\n", "\\n") + "\n")
        ctx.metadata["slept"] = self.params["seconds"]
        ctx.metadata["pid"] = os.getpid()  # the kernel's: which kernel ran the template
        return [out]


def tones(folder: Path, n: int) -> list[Path]:
    """``n`` different tiny WAV files, the sleepy job's inputs (real audio: ffprobe validates them)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        path = folder / f"tone {k}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i * (k + 1) * 0.05))) for i in range(400)))
        out.append(path)
    return out
