"""TranscribeJob: Whisper subtitles for a batch of audio and video files, the model loaded once per batch.

Two engines: ``faster-whisper`` (CTranslate2; the default, several times faster than the reference at the
same accuracy, no torch) and ``openai-whisper`` (the reference ``whisper`` command, for those who want
exactly its output). Each item gives ``<name>.srt`` and, on request, ``.vtt``, ``.json`` and ``.txt``.

Everything that can be checked here is checked before anything runs: the parameters, the model (a name
Whisper knows, a Hugging Face repository, or a local folder that exists), whether the engine can use it,
and whether each input has an audio track.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from .. import __version__
from ..exceptions import InputError, ParameterError
from ..media import MediaInfo
from ..params import Param, ParamSet
from ..requirements import Requirements
from ..subtitles import FORMATS
from ..util import write_json
from .base import CGPUJob

ENGINES = ("faster-whisper", "openai-whisper")

#: model names of the reference implementation (openai-whisper 20250625)
OPENAI_MODELS = (
    "tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium",
    "large-v1", "large-v2", "large-v3", "large", "large-v3-turbo", "turbo",
)
#: model names faster-whisper 1.2 resolves to its CTranslate2 conversions on the Hugging Face Hub
FASTER_MODELS = OPENAI_MODELS + (
    "distil-large-v2", "distil-medium.en", "distil-small.en", "distil-large-v3", "distil-large-v3.5",
)

#: Whisper's languages (code -> name), as the reference implementation lists them
LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese",
    "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
_LANGUAGE_CODES = {name: code for code, name in LANGUAGES.items()}

COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16", "float16", "bfloat16", "float32",
)
log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class CheckedParam(Param):
    """A parameter whose value is checked (and may be normalized) by a function beyond type and bounds."""

    check: Callable[[Any], Any] | None = None
    bounds: str = ""

    def describe_bounds(self) -> str:
        return self.bounds or super().describe_bounds()

    def coerce(self, value: Any) -> Any:
        value = super().coerce(value)
        return self.check(value) if self.check is not None else value


def _check_language(value: str) -> str:
    v = value.strip().lower()
    if v in ("", "auto", "detect", "none"):
        return "auto"
    if v in LANGUAGES:
        return v
    if v in _LANGUAGE_CODES:
        return _LANGUAGE_CODES[v]
    raise ParameterError(
        f"parameter 'language' must be 'auto' (detect it) or a Whisper language such as en, de, fr, es, ja "
        f"(a code or its English name), got {value!r}; the codes: {', '.join(sorted(LANGUAGES))}",
        name="language",
    )


def _check_formats(value: list[Any]) -> list[str]:
    formats = [str(v).strip().lower().lstrip(".") for v in value]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ParameterError(
            f"parameter 'format' must be one or more of {', '.join(FORMATS)} (comma-separated on the command line), "
            f"got {', '.join(map(repr, bad)) if bad else 'nothing'}", name="format",
        )
    return list(dict.fromkeys(formats))


def _check_model(value: str) -> str:
    if not value.strip():
        raise ParameterError("parameter 'model' must be a Whisper model name (tiny, base, small, medium, large-v3...) "
                             "or a local model folder, got ''", name="model")
    return value.strip()


TRANSCRIBE_PARAMS = ParamSet([
    CheckedParam(
        "model", "small",
        "Whisper model: a name (tiny, base, small, medium, large-v3, turbo; .en for English-only), a Hugging Face "
        "repository of a CTranslate2 conversion, or a local model folder (faster-whisper) / .pt file (openai-whisper)",
        check=_check_model, bounds="a model name or a local folder",
    ),
    CheckedParam("language", "auto", "language spoken: a code (en, de, fr...) or auto to detect it",
                 check=_check_language, bounds="auto or a Whisper language code"),
    Param("task", "transcribe", "transcribe in the spoken language, or translate into English", choices=("transcribe", "translate")),
    CheckedParam("format", ["srt"], "subtitle files to write per input", type=list, check=_check_formats,
                 bounds="any of " + ", ".join(FORMATS)),
    Param("engine", "faster-whisper", "faster-whisper (CTranslate2, the fast default) or openai-whisper (the reference whisper command)",
          choices=ENGINES),
    Param("word_timestamps", False, "time every word (in the .json output)"),
    Param("beam_size", 5, "beam search width: larger is slower and a little more accurate", min=1, max=20),
    Param("vad_filter", True, "skip non-speech with the Silero voice detector first (faster-whisper; keeps silence from "
          "being 'heard' as words)"),
    Param("initial_prompt", "", "text to prime the first window with: names, spelling, style"),
    Param("device", "auto", "where the model runs: auto (the GPU when there is one), cuda or cpu", choices=("auto", "cuda", "cpu")),
    Param("compute_type", "auto", "numeric type of the model (faster-whisper): auto picks the fastest the device supports",
          choices=COMPUTE_TYPES),
])


def looks_like_path(model: str) -> bool:
    """Whether ``model`` is meant as a file or folder rather than a name or a Hugging Face repository."""
    return (
        model.startswith(("/", ".", "~")) or os.sep in model and not _REPO_ID.match(model)
        or model.endswith(".pt") or Path(model).expanduser().exists()
    )


def english_only(model: str) -> bool:
    return model.endswith(".en")


def engine_version(engine: str) -> str:
    """The engine package's version here, or ``?`` where it is not installed (it is on the runtime)."""
    from importlib import metadata

    try:
        return metadata.version(engine)
    except metadata.PackageNotFoundError:
        return "?"


def model_fingerprint(path: Path) -> str:
    """A cheap identity of a local model: its config and the size of its weights (not a full hash)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for f in files:
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix in (".json", ".txt") and f.stat().st_size < 4 << 20:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


class TranscribeJob(CGPUJob):
    """Transcribe audio and video files with Whisper into subtitles; the model is loaded once per batch."""

    job_type: ClassVar[str] = "transcribe"
    template_name: ClassVar[str] = "transcribe.ipynb"
    params_spec: ClassVar[ParamSet] = TRANSCRIBE_PARAMS
    accepts: ClassVar[frozenset[str]] = frozenset({"audio"})
    default_timeout: ClassVar[float] = 600.0
    default_item_timeout: ClassVar[float] = 300.0
    #: subtitles are text: a few kB per minute (.json with words the most); a tenth of the audio is ample
    output_size_factor: ClassVar[float] = 0.1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = check_params(self.params)
        self._model_on_runtime: str | None = None
        self._tool_version: str | None = None

    # -- what the runtime needs ---------------------------------------------------------------------------

    def get_requirements(self) -> Requirements:
        if self.params["engine"] == "openai-whisper":
            return Requirements(pip=("openai-whisper",), apt=("ffmpeg",), modules=("whisper",), programs=("whisper",),
                                extra="openai-whisper")
        return Requirements(pip=("faster-whisper>=1.0",), apt=("ffmpeg",), modules=("faster_whisper",), extra="whisper")

    @property
    def local_model(self) -> Path | None:
        """The model folder (or .pt file) on this machine, when the model was given as one."""
        model = self.params["model"]
        return Path(model) if looks_like_path(model) else None

    def tool_version(self) -> str:
        """cgpu_kit, the engine's version and the model (a local one by its fingerprint) key the outputs."""
        if self._tool_version is None:
            engine = self.params["engine"]
            local = self.local_model
            model = f"{local.name}@{model_fingerprint(local)}" if local is not None else self.params["model"]
            self._tool_version = f"{__version__}+{engine}=={engine_version(engine)}+model={model}"
        return self._tool_version

    # -- inputs -------------------------------------------------------------------------------------------

    def check_media(self, path: Path, info: MediaInfo) -> None:
        if info.is_image:
            raise InputError(f"{path}: is a still image; transcription needs audio or a video with sound", path=str(path))
        if not info.has_audio:
            raise InputError(f"{path}: has no audio track, so there is nothing to transcribe", path=str(path))
        super().check_media(path, info)

    #: subtitles may go beside their clips (``-o`` the clips' own folder); earlier outputs are still left out
    outputs_beside_inputs = True

    def _is_own_output(self, path: Path, stem: str) -> bool:
        """Outputs sit next to their inputs happily: only a same-named subtitle file would be overwritten."""
        suffixes = {"." + f for f in self.params["format"]}
        return path.parent.resolve() == self.out_dir.resolve() and path.stem == stem and path.suffix.lower() in suffixes

    # -- timeouts: sized to the audio ------------------------------------------------------------------------

    def _durations(self) -> list[float]:
        return [float(i.probe.get("duration") or 60.0) for i in self.batch_items.values()]

    def sized_timeout(self) -> float:
        # 10 minutes by default; long batches get 1.5 s per second of audio on top of 5 minutes for set-up
        return max(self.default_timeout, 300.0 + 1.5 * sum(self._durations()))

    @property
    def item_timeout(self) -> float:
        if self._item_timeout:
            return float(self._item_timeout)
        return max(self.default_item_timeout, 120.0 + 2.0 * max(self._durations(), default=0.0))

    # -- a local model travels with the batch -----------------------------------------------------------------

    def upload(self, transport) -> None:
        """Send a local model folder along when the runtime is another machine (once per job)."""
        local = self.local_model
        remote = self.remote(transport)
        send = local is not None and transport.name != "local"
        self._model_on_runtime = None
        if send:
            self._model_on_runtime = remote.path("model/" + local.name) if local.is_file() else remote.path("model")
        super().upload(transport)  # writes job.json, which names the model where it will be
        if send:
            started = time.monotonic()
            files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
            for f in files:
                rel = "model/" + (f.name if local.is_file() else f.relative_to(local).as_posix())
                sent = remote.upload(f, rel, timeout=self.transfer_timeout(f.stat().st_size))
                log.info("%s model file %s (%.1f MB)", "uploaded" if sent else "already on the runtime:", rel, f.stat().st_size / 1e6)
            self.timings["upload"] = round(self.timings.get("upload", 0) + time.monotonic() - started, 3)

    def job_file(self, chunk_seconds: float) -> Path:
        path = super().job_file(chunk_seconds)
        if self._model_on_runtime:
            data = json.loads(path.read_text())
            data["params"]["model"] = self._model_on_runtime
            write_json(path, data)
        return path


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """Checks across parameters, and a model path made absolute (the runtime runs in another folder)."""
    params = dict(params)
    model, engine = params["model"], params["engine"]
    if looks_like_path(model):
        path = Path(model).expanduser().absolute()
        if engine == "faster-whisper":
            if path.exists() and not path.is_dir():
                raise ParameterError(
                    f"model {path} is a file, not a model folder; give the folder of a CTranslate2 Whisper model "
                    f"(with model.bin), or a model name: {', '.join(FASTER_MODELS)}", name="model",
                )
            if not path.is_dir():
                raise ParameterError(
                    f"model folder {path} does not exist; give a CTranslate2 Whisper model folder (with model.bin), "
                    f"or a model name: {', '.join(FASTER_MODELS)}", name="model",
                )
            if not (path / "model.bin").is_file():
                raise ParameterError(
                    f"model folder {path} has no model.bin, so it is not a CTranslate2 Whisper model; convert one with "
                    "ct2-transformers-converter, or give the folder of one (e.g. from Systran/faster-whisper-small)", name="model",
                )
        elif not path.is_file():
            raise ParameterError(
                f"model {path} is not a file; the openai-whisper engine takes a model name or a .pt checkpoint "
                "(CTranslate2 folders are for --engine faster-whisper)", name="model",
            )
        params["model"] = str(path)
    elif engine == "openai-whisper" and model not in OPENAI_MODELS:
        raise ParameterError(
            f"model {model!r} is not one the openai-whisper engine knows: {', '.join(OPENAI_MODELS)}, or a .pt file"
            + (" (Hugging Face repositories and distil models are for --engine faster-whisper)" if "/" in model or model.startswith("distil") else ""),
            name="model",
        )
    elif engine == "faster-whisper" and model not in FASTER_MODELS and not _REPO_ID.match(model):
        raise ParameterError(
            f"model {model!r} is neither a Whisper model name ({', '.join(FASTER_MODELS)}), a Hugging Face repository "
            "(owner/name), nor an existing folder", name="model",
        )
    if english_only(model) and params["language"] not in ("auto", "en"):
        raise ParameterError(
            f"model {model!r} understands English only, but language is {params['language']!r}; use a multilingual "
            f"model ({model[:-3]})", name="language",
        )
    if english_only(model) and params["task"] == "translate":
        raise ParameterError(
            f"task 'translate' turns speech into English, which an English-only model ({model!r}) cannot do from "
            f"another language; use a multilingual model ({model[:-3]})", name="task",
        )
    return params


__all__ = ["TRANSCRIBE_PARAMS", "TranscribeJob", "check_params"]
