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
from pathlib import Path
from typing import Any, ClassVar

from .. import __version__
from ..exceptions import InputError, ParameterError
from ..media import MediaInfo
from ..params import ParamSet
from ..requirements import Requirements
from ..runtime.transcribe_params import (  # noqa: F401 - known by these names here too
    COMPUTE_TYPES,
    ENGINES,
    FASTER_MODELS,
    LANGUAGES,
    OPENAI_MODELS,
    TRANSCRIBE_PARAMS,
    CheckedParam,
)
from ..util import write_json
from .base import CGPUJob

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")




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
    summary: ClassVar[str] = "transcribe audio or video files with Whisper into subtitles (.srt, .vtt, .json, .txt)"
    template_name: ClassVar[str] = "transcribe.ipynb"
    processor: ClassVar[str] = "cgpu_kit.runtime.transcribe:TranscribeProcessor"
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

    def warm_modules(self) -> list[str]:
        """faster-whisper's import (CTranslate2, PyAV) is half a second: done before the batch arrives."""
        return super().warm_modules() + (["faster_whisper"] if self.params["engine"] == "faster-whisper" else [])

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
            + (" (Hugging Face repositories and distil models are for --engine "
                "faster-whisper)" if "/" in model or model.startswith("distil") else ""),
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
