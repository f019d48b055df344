"""Whisper on the runtime: the model is loaded once per batch, then each item is heard and written out.

Per item: the first audio track is taken out as 16 kHz mono (video or audio, any container), the
engine transcribes it, and the subtitle files are written from one normalized transcript, so they agree.

Engines:

- ``faster-whisper``: the model is loaded in ``__init__`` and reused; the item's timeout is checked between
  segments. The audio is decoded in this process by faster-whisper's own ``decode_audio`` (PyAV), as a plain
  faster-whisper loop does: no ffmpeg process and no WAV file per item. The model is found offline first (a
  local folder as is; a name in the Hugging Face cache or in a package that ships it), and downloaded only
  where the runtime can (Colab can; ``HF_HUB_OFFLINE`` forbids).
- ``openai-whisper``: the reference ``whisper`` command, run once per item, its files renamed to ours.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..exceptions import MissingDependencyError, ParameterError
from ..media import find_ffmpeg, quick_ffmpeg
from ..subtitles import Segment, Transcript, Word, write
from .context import ItemContext, ItemError
from .processor import Processor
from .transcribe_params import TRANSCRIBE_PARAMS
from .whisper_models import resolve_model

log = logging.getLogger("cgpu_kit.runtime")

SAMPLE_TEXT = "Subtitles for a whole batch. The model is loaded once and reused for every file."


# -- audio ----------------------------------------------------------------------------------------------------


def extract_command(ffmpeg: str, src: Path, dest: Path) -> list[str]:
    """ffmpeg taking the first audio track of ``src`` as the 16 kHz mono 16-bit WAV Whisper works on."""
    return [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", "file:" + str(src),
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", "file:" + str(dest),
    ]


def extract_audio(ctx: ItemContext, ffmpeg: str) -> Path:
    if not ctx.item.probe.get("has_audio", True):
        raise ItemError("has no audio track, so there is nothing to transcribe")
    wav = ctx.scratch("audio.wav")
    ctx.run(extract_command(ffmpeg, ctx.item.path, wav), step="extract")
    if not wav.is_file() or wav.stat().st_size <= 44:
        raise ItemError("ffmpeg found no audio samples in it; is the audio track empty?")
    return wav


def decode_in_process(ctx: ItemContext) -> Any:
    """The first audio track of the item as 16 kHz mono float samples, decoded here by faster-whisper's PyAV
    reader; an undecodable or silent track is the item's error, as with :func:`extract_audio`."""
    if not ctx.item.probe.get("has_audio", True):
        raise ItemError("has no audio track, so there is nothing to transcribe")
    from faster_whisper.audio import decode_audio

    started = time.monotonic()
    try:
        samples = decode_audio(str(ctx.item.path), sampling_rate=16000)
    except Exception as exc:  # PyAV raises its own errors (InvalidDataError, ...) for damaged audio
        raise ItemError(f"its audio could not be decoded ({type(exc).__name__}: {str(exc)[:200]}); re-export it") from None
    ctx.timings["extract"] = round(time.monotonic() - started, 3)
    if len(samples) == 0:
        raise ItemError("no audio samples could be decoded from it; is the audio track empty?")
    return samples


# -- engines --------------------------------------------------------------------------------------------------


#: models loaded ahead by a standby driver (:meth:`TranscribeProcessor.warm`), taken by the batch's engine
_LOADED: dict[tuple[Any, ...], Any] = {}

#: items transcribed side by side at most on a CPU (each by a replica of the model: more copies in memory)
CPU_REPLICAS = 2


def cpu_plan(device: str, cores: int | None = None) -> tuple[int, int]:
    """How the model runs here: (replicas, CPU threads each; 0 is CTranslate2's default).

    On a CPU, items go side by side, one per replica: beam search leaves cores idle between its steps, so on
    2 cores a bare loop transcribing two short clips at a time, one thread each, did 10 in 7.6 s where one at a
    time on both cores took 9.2 s (bench/RESULTS.md). A GPU (``cuda``, or ``auto`` where CTranslate2 sees
    CUDA) keeps one."""
    if device == "cuda" or (device == "auto" and _cuda_devices() > 0):
        return 1, 0
    if not cores:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    replicas = max(1, min(CPU_REPLICAS, cores))
    return replicas, max(1, cores // replicas)


def _cuda_devices() -> int:
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # no CTranslate2 CUDA support at all: the CPU
        return 0


def _model_key(path: str, params: dict[str, Any]) -> tuple[Any, ...]:
    return (path, params["device"], params["compute_type"], *cpu_plan(params["device"]))


def _load(path: str, params: dict[str, Any]) -> Any:
    from faster_whisper import WhisperModel

    replicas, threads = cpu_plan(params["device"])
    return WhisperModel(path, device=params["device"], compute_type=params["compute_type"], cpu_threads=threads,
                        num_workers=replicas)


class FasterWhisperEngine:
    """CTranslate2 Whisper, loaded once and used for every item."""

    name = "faster-whisper"

    def __init__(self, params: dict[str, Any]) -> None:
        try:
            import faster_whisper  # noqa: F401 - loaded by _load
        except ImportError:
            raise MissingDependencyError(
                "the faster-whisper engine needs the faster_whisper package: pip install 'cgpu-kit[whisper]'"
            ) from None
        self.params = params
        self.model_info = resolve_model(params["model"])
        started = time.monotonic()
        self.replicas, self.cpu_threads = cpu_plan(params["device"])
        self.model = _LOADED.pop(_model_key(self.model_info.path, params), None)
        self.loaded_ahead = self.model is not None
        if self.model is not None:
            self.load_seconds = 0.0
            log.info("Whisper model %s from %s: loaded ahead, while the batch was being sent", params["model"],
                     self.model_info.source)
            return
        try:
            self.model = _load(self.model_info.path, params)
        except (RuntimeError, ValueError) as exc:
            raise ParameterError(load_advice(params["device"], params["compute_type"], exc), name="device") from None
        self.load_seconds = round(time.monotonic() - started, 3)
        log.info("loaded Whisper model %s from %s in %.1fs", params["model"], self.model_info.source, self.load_seconds)

    @staticmethod
    def load_ahead(params: dict[str, Any]) -> None:
        """Load the model :meth:`__init__` would, into :data:`_LOADED`, if it is here already (never downloads)."""
        path = resolve_model(params["model"], download=False).path
        _LOADED[_model_key(path, params)] = _load(path, params)

    #: the engine decodes the audio in this process (see :func:`decode_in_process`)
    decodes = True

    def transcribe(self, ctx: ItemContext, audio: Any) -> Transcript:
        p = self.params
        started = time.monotonic()
        segments, info = self.model.transcribe(
            str(audio) if isinstance(audio, Path) else audio, language=None if p["language"] == "auto" else p["language"], task=p["task"],
            beam_size=p["beam_size"], word_timestamps=p["word_timestamps"], vad_filter=p["vad_filter"],
            initial_prompt=p["initial_prompt"] or None,
        )
        heard = []
        for seg in segments:  # a generator: the work happens as it is consumed
            ctx.check()
            words = [Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in (seg.words or [])]
            heard.append(Segment(float(seg.start), float(seg.end), seg.text, words))
        ctx.timings["transcribe"] = round(time.monotonic() - started, 3)
        return Transcript(heard, info.language, float(info.duration), info.language_probability, p["task"], self.name, p["model"])

    def run(self, ctx: ItemContext, audio: Any) -> list[Path]:
        transcript = self.transcribe(ctx, audio).normalized()
        ctx.metadata.update(
            language=transcript.language, language_probability=round(float(transcript.language_probability or 0), 4),
            duration=transcript.duration, segments=len(transcript.segments),
        )
        return [write(transcript, fmt, ctx.output("." + fmt)) for fmt in self.params["format"]]

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.params["model"], "model_source": self.model_info.source,
                "model_path": self.model_info.path, "model_load_seconds": self.load_seconds,
                "model_loaded_ahead": self.loaded_ahead, "side_by_side": self.replicas,
                "device": getattr(self.model.model, "device", self.params["device"])}


class OpenAIWhisperEngine:
    """The reference ``whisper`` command, run per item (it loads its model each time, as it always does)."""

    name = "openai-whisper"
    #: our formats -> whisper's --output_format values
    FORMATS = {"srt": "srt", "vtt": "vtt", "json": "json", "txt": "txt"}

    def __init__(self, params: dict[str, Any], *, program: str | None = None) -> None:
        self.params = params
        self.program = program or shutil.which("whisper")
        if self.program is None:
            raise MissingDependencyError(
                "the openai-whisper engine needs the `whisper` command, which is not installed here: "
                "pip install 'cgpu-kit[openai-whisper]' (it brings torch), or use --engine faster-whisper"
            )

    def command(self, audio: Path, out_dir: Path) -> list[str]:
        """The whisper command line for one item (``--opt=value``, so no value is taken for an option)."""
        p = self.params
        formats = p["format"]
        argv = [
            self.program, str(audio), f"--model={p['model']}", f"--output_dir={out_dir}",
            f"--output_format={formats[0] if len(formats) == 1 else 'all'}",
            f"--task={p['task']}", f"--beam_size={p['beam_size']}",
            f"--word_timestamps={p['word_timestamps']}", "--verbose=False",
        ]
        if p["language"] != "auto":
            argv.append(f"--language={p['language']}")
        if p["initial_prompt"]:
            argv.append(f"--initial_prompt={p['initial_prompt']}")
        if p["device"] != "auto":
            argv.append(f"--device={p['device']}")
        if p["device"] == "cpu" or p["compute_type"] == "float32":
            argv.append("--fp16=False")
        return argv

    def run(self, ctx: ItemContext, audio: Path) -> list[Path]:
        out_dir = ctx.scratch("whisper")
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        stdout = ctx.run(self.command(audio, out_dir), step="whisper")
        ctx.timings["transcribe"] = round(time.monotonic() - started, 3)
        outputs = []
        for fmt in self.params["format"]:
            made = out_dir / f"{audio.stem}.{self.FORMATS[fmt]}"
            if not made.is_file():  # whisper prints "Skipping ..." and exits 0 when an item fails
                tail = " ".join((stdout.strip().splitlines() or ["no output"])[-3:])
                raise ItemError(f"whisper wrote no .{fmt}: {tail}")
            dest = ctx.output("." + fmt)
            shutil.move(str(made), dest)
            if dest.stat().st_size == 0:  # silence: an empty but valid file (see subtitles)
                dest.write_text("WEBVTT\n\n" if fmt == "vtt" else "\n", encoding="utf-8")
            outputs.append(dest)
        return outputs

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.params["model"], "program": self.program}


ENGINES = {"faster-whisper": FasterWhisperEngine, "openai-whisper": OpenAIWhisperEngine}


def load_advice(device: str, compute_type: str, exc: Exception) -> str:
    """What to do when the model cannot be loaded with the device and compute type asked for."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "cuda" in text.lower() or device == "cuda":
        return (f"the model cannot run on the GPU here (device {device!r}: {text}); this runtime has no usable "
                "CUDA GPU: use --device cpu (or auto), or run on a GPU runtime with --backend cgpu")
    if compute_type not in ("auto", "default"):
        return (f"compute type {compute_type!r} is not supported on this device ({text}); use --compute-type auto "
                "(or int8 / float32 on a CPU; float16 needs a GPU)")
    return f"the Whisper model could not be loaded on device {device!r} ({text})"


class TranscribeProcessor(Processor):
    """One engine (one loaded model) for the whole batch; items one at a time on a GPU, side by side on a CPU
    (one per replica of the model: :func:`cpu_plan`)."""

    params_spec = TRANSCRIBE_PARAMS
    max_workers = 1

    def __init__(self, params: dict[str, Any]) -> None:
        super().__init__(params)
        self.ffmpeg = quick_ffmpeg()
        self.engine = ENGINES[params["engine"]](params)
        self.max_workers = getattr(self.engine, "replicas", 1)
        self.metadata = self.engine.describe()
        if params["engine"] == "openai-whisper" and params["vad_filter"]:
            self.metadata["vad_filter"] = "not supported by openai-whisper; ignored"

    @classmethod
    def warm(cls, params: dict[str, Any]) -> None:
        if params.get("engine") == "faster-whisper":
            FasterWhisperEngine.load_ahead(params)

    def process(self, ctx: ItemContext) -> list[Path]:
        ctx.metadata.update(self.metadata)
        if getattr(self.engine, "decodes", False):
            return self.engine.run(ctx, decode_in_process(ctx))
        audio = extract_audio(ctx, self.ffmpeg)
        try:
            return self.engine.run(ctx, audio)
        finally:
            audio.unlink(missing_ok=True)

    def close(self) -> None:
        self.engine = None  # frees the model (and its GPU memory) before the notebook's kernel ends

    @classmethod
    def make_samples(cls, dest: Path) -> list[Path]:
        return [make_speech(dest / "spoken sample.wav", SAMPLE_TEXT)]


def make_speech(dest: Path, text: str, *, speed: int = 120) -> Path:
    """A spoken sample: espeak-ng where installed, else ffmpeg's flite voice, else a plain tone."""
    import subprocess

    dest.parent.mkdir(parents=True, exist_ok=True)
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak:
        subprocess.run([espeak, "-s", str(speed), "-w", str(dest), "--", text], stdin=subprocess.DEVNULL,
                       capture_output=True, check=True, timeout=120)
        return dest
    ffmpeg = find_ffmpeg()
    base = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    safe = "".join(ch for ch in text if ch.isalnum() or ch in " .,")
    try:
        subprocess.run(base + ["-i", f"flite=text='{safe}'", "-ar", "16000", str(dest)], stdin=subprocess.DEVNULL,
                       capture_output=True, check=True, timeout=120)
    except subprocess.CalledProcessError:
        log.info("no speech synthesizer here (espeak-ng, ffmpeg flite): the sample is a tone")
        subprocess.run(base + ["-i", "sine=frequency=440:duration=3", "-ar", "16000", str(dest)],
                       stdin=subprocess.DEVNULL, capture_output=True, check=True, timeout=120)
    return dest
