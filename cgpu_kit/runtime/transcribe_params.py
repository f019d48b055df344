"""The parameters of the transcribe job type: shared by its job (local side) and its processor (runtime side).

A leaf module (it imports only params, subtitles and exceptions), so the runtime resolves a template's
parameters without importing the local side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import ParameterError
from ..params import Param, ParamSet
from ..subtitles import FORMATS

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
