"""The scenes, beats, interpolate and encode templates run by hand with their defaults: each processor makes its
own tiny sample and processes it (what `papermill templates/NAME.ipynb out.ipynb` does, without the kernel)."""

from __future__ import annotations

import pytest

from cgpu_kit.runtime import run_template

PROCESSORS = {
    "scenes": "cgpu_kit.runtime.scenes:ScenesProcessor",
    "beats": "cgpu_kit.runtime.beats:BeatsProcessor",
    "interpolate": "cgpu_kit.runtime.interpolate:InterpolateProcessor",
    "encode": "cgpu_kit.runtime.encode:EncodeProcessor",
}


@pytest.mark.parametrize("job_type", sorted(PROCESSORS))
def test_when_a_template_runs_without_a_work_dir_then_its_sample_batch_is_processed(job_type):
    table = run_template(PROCESSORS[job_type], "", {}, 300.0)

    assert len(table) >= 1 and all(r["status"] == "done" and r["outputs"] for r in table), table
