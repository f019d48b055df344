"""Finding ffmpeg and ffprobe, and probing media files.

The ffmpeg chosen for stabilization must have both vidstab filters; among those found (the one on PATH, the
static one that the PyPI package ``imageio-ffmpeg`` ships) it is the one linked with the newest vid.stab
library, because that is what decides how steady the output is: vid.stab 1.1.0 (Debian 12's ffmpeg 5.1,
Ubuntu 22.04's 4.4 on Colab) leaves 0.05 of the shake on our test clips, 1.4.0 (imageio-ffmpeg's ffmpeg 9)
0.0005 (bench/RESULTS.md, docs/stabilize.md). ``CGPU_KIT_FFMPEG`` names another one and always wins.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import banner
from .exceptions import InputError, MissingDependencyError
from .mediainfo import IMAGE_FORMATS, MediaInfo
from .util import cache_dir, write_json

log = logging.getLogger(__name__)

VIDSTAB_FILTERS = ("vidstabdetect", "vidstabtransform")


@functools.cache
def _filters_of(ffmpeg: str) -> frozenset[str]:
    try:
        out = subprocess.run(
            [ffmpeg, "-hide_banner", "-nostdin", "-filters"], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "->" in parts[2]:
            names.add(parts[1])
    return frozenset(names)


def _candidates() -> list[str]:
    found = []
    env = os.environ.get("CGPU_KIT_FFMPEG")
    if env:
        found.append(env)
    on_path = shutil.which("ffmpeg")
    if on_path:
        found.append(on_path)
    try:
        import imageio_ffmpeg

        found.append(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # not installed, or its binary is missing
        pass
    return list(dict.fromkeys(found))


@functools.cache
def find_ffmpeg(*, filters: tuple[str, ...] = ()) -> str:
    """The first ffmpeg that has every filter in ``filters``; a clear error when none has."""
    tried = []
    for exe in _candidates():
        if not filters:  # any ffmpeg will do: no ``-filters`` run (0.15 s for Debian's) to learn what it has
            return exe
        have = _filters_of(exe)
        if all(f in have for f in filters):
            return exe
        tried.append(exe)
    need = f" with the filters {', '.join(filters)}" if filters else ""
    looked = ", ".join(tried) if tried else "nothing (no ffmpeg on PATH, imageio-ffmpeg not installed)"
    raise MissingDependencyError(
        f"no ffmpeg{need} found; looked at {looked}. Install Debian's ffmpeg (apt-get install ffmpeg) "
        f"or pip install imageio-ffmpeg, or set CGPU_KIT_FFMPEG to an ffmpeg built with libvidstab."
    )


@dataclass(frozen=True)
class FfmpegBuild:
    """One ffmpeg executable, where it was found, and the versions that decide its vidstab's quality."""

    path: str
    source: str  # "CGPU_KIT_FFMPEG", "PATH" or "imageio-ffmpeg"
    version: str | None
    vidstab: tuple[int, ...] | None  # vid.stab's version as its filter reports it; None when it has no vidstab

    @property
    def vidstab_text(self) -> str:
        return ".".join(map(str, self.vidstab)) if self.vidstab else "none"

    def describe(self) -> str:
        """What a user reads in the summary: ``ffmpeg 9.0.2 with vid.stab 1.4.0 (imageio-ffmpeg)``."""
        return f"ffmpeg {self.version or '?'} with vid.stab {self.vidstab_text} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "source": self.source, "version": self.version, "vidstab": self.vidstab_text}


_FFMPEG_VERSION = re.compile(r"ffmpeg version (?:n)?(\S+)")
_VIDSTAB_VERSION = re.compile(r"vidstabdetect filter: init v(\d+(?:\.\d+)*)")


@functools.cache
def _versions_of(ffmpeg: str) -> tuple[str | None, tuple[int, ...] | None]:
    """ffmpeg's own version and vid.stab's, from the disk cache when this very binary (path, size, mtime) was
    probed before: the probe costs two ffmpeg starts per build (0.3 s a process for Debian's), and every
    batch, its runtime's kernel and each report would pay it again."""
    key = _binary_key(ffmpeg)
    cache = cache_dir("ffmpeg_versions.json")
    if key:
        try:
            hit = json.loads(cache.read_text()).get(key)
        except (OSError, ValueError):
            hit = None
        if isinstance(hit, list) and len(hit) == 2:
            return hit[0], tuple(hit[1]) if hit[1] is not None else None
    found = _probe_versions(ffmpeg)
    if key and found != (None, None):  # a failed probe (a binary that did not start) is not remembered
        try:
            known = json.loads(cache.read_text()) if cache.is_file() else {}
        except (OSError, ValueError):
            known = {}
        known[key] = [found[0], list(found[1]) if found[1] is not None else None]
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(cache, known)
        except OSError as exc:
            log.debug("could not cache the ffmpeg versions in %s: %s", cache, exc)
    return found


def _binary_key(ffmpeg: str) -> str | None:
    """``path|size|mtime`` of the binary ``ffmpeg`` runs, or None when it cannot be found."""
    exe = ffmpeg if os.sep in ffmpeg else shutil.which(ffmpeg)
    try:
        st = os.stat(exe) if exe else None
    except OSError:
        return None
    return f"{os.path.realpath(exe)}|{st.st_size}|{st.st_mtime_ns}" if st else None


def _probe_versions(ffmpeg: str) -> tuple[str | None, tuple[int, ...] | None]:
    """ffmpeg's own version (its banner), and vid.stab's, which its vidstabdetect logs at start: one run of the
    filter on a generated frame, about 0.1 s."""
    import tempfile

    version = vidstab = None
    has_vidstab = all(f in _filters_of(ffmpeg) for f in VIDSTAB_FILTERS)
    argv = [ffmpeg, "-nostdin", "-version"]
    if has_vidstab:
        argv = [ffmpeg, "-nostdin", "-loglevel", "verbose", "-f", "lavfi", "-i", "color=s=64x64:d=0.04",
                "-vf", "vidstabdetect=result=probe.trf", "-f", "null", "-"]
    try:
        with tempfile.TemporaryDirectory(prefix="cgpu_kit_vidstab_") as tmp:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, cwd=tmp)
    except (OSError, subprocess.SubprocessError):
        return None, None
    text = proc.stdout + proc.stderr
    if m := _FFMPEG_VERSION.search(text):
        version = m.group(1).split("-")[0] if m.group(1)[:1].isdigit() else m.group(1)
    if has_vidstab:
        m = _VIDSTAB_VERSION.search(text)
        # a build with the filters that does not say its version ranks below every known one
        vidstab = tuple(int(x) for x in m.group(1).split(".")) if m else (0,)
    return version, vidstab


def ffmpeg_build(path: str, source: str = "CGPU_KIT_FFMPEG") -> FfmpegBuild:
    version, vidstab = _versions_of(path)
    return FfmpegBuild(path=path, source=source, version=version, vidstab=vidstab)


def _sourced_candidates() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    on_path = shutil.which("ffmpeg")
    if on_path:
        found.append((on_path, "PATH"))
    try:
        import imageio_ffmpeg

        found.append((imageio_ffmpeg.get_ffmpeg_exe(), "imageio-ffmpeg"))
    except Exception:  # not installed, or its binary is missing
        pass
    return found


def vidstab_build() -> FfmpegBuild:
    """The ffmpeg that stabilization uses: ``CGPU_KIT_FFMPEG`` when set, else, among the builds with both
    vidstab filters, the one with the newest vid.stab (ties go to the one on PATH).

    Raises :class:`MissingDependencyError` saying what to install when no build has the filters.
    """
    env = os.environ.get("CGPU_KIT_FFMPEG")
    if env:
        build = ffmpeg_build(env, "CGPU_KIT_FFMPEG")
        if build.vidstab is not None:
            return build
        log.warning("CGPU_KIT_FFMPEG=%s has no vidstab filters; looking for another ffmpeg", env)
    builds = [ffmpeg_build(path, source) for path, source in _sourced_candidates()]
    usable = [b for b in builds if b.vidstab is not None]
    if usable:
        best = max(usable, key=lambda b: b.vidstab or ())  # max keeps the first of equals: PATH before imageio
        log.info("vidstab ffmpeg: %s at %s (candidates: %s)", best.describe(), best.path,
                 "; ".join(f"{b.describe()} at {b.path}" for b in builds))
        return best
    looked = ", ".join([env] * bool(env) + [b.path for b in builds]) or "nothing (no ffmpeg on PATH, imageio-ffmpeg not installed)"
    raise MissingDependencyError(
        f"no ffmpeg with the filters {', '.join(VIDSTAB_FILTERS)} found; looked at {looked}. Install Debian's "
        f"ffmpeg (apt-get install ffmpeg) or pip install imageio-ffmpeg, or set CGPU_KIT_FFMPEG to an ffmpeg "
        f"built with libvidstab."
    )


def find_vidstab_ffmpeg() -> str:
    """The path of :func:`vidstab_build`'s ffmpeg."""
    return vidstab_build().path


@functools.cache
def quick_ffmpeg() -> str:
    """The ffmpeg for many small decodes (report pictures, motion): ``CGPU_KIT_FFMPEG`` when set, else
    imageio-ffmpeg's static build when installed, which starts in 0.02 s where Debian's, linked against a
    hundred libraries, takes 0.15 s; else :func:`find_ffmpeg`'s."""
    if os.environ.get("CGPU_KIT_FFMPEG"):
        return find_ffmpeg()
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if exe and os.access(exe, os.X_OK):
            return exe
    except Exception:  # not installed, or its binary is missing
        pass
    return find_ffmpeg()


@functools.cache
def find_ffprobe() -> str | None:
    env = os.environ.get("CGPU_KIT_FFPROBE")
    if env:
        return env
    return shutil.which("ffprobe")


def _rate(text: str | None) -> float | None:
    if not text or text in ("0/0", "0"):
        return None
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den) if float(den) else None
    return float(text)


def probe(path: Path, *, timeout: float = 60) -> MediaInfo:
    """Probe ``path``; raise :class:`InputError` naming the file when it is not readable media."""
    ffprobe = find_ffprobe()
    if ffprobe is None:  # imageio-ffmpeg ships only ffmpeg
        return banner.read(find_ffmpeg(), path, timeout=timeout)
    try:
        proc = subprocess.run(
            [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", "--", "file:" + str(path)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffprobe did not finish within {timeout:.0f}s; is the file on a slow or broken disk?",
                         path=str(path)) from None
    if proc.returncode != 0:
        reason = banner.first_error_line(proc.stderr).replace(f"file:{path}: ", "") or "not a media file ffprobe can read"
        raise InputError(f"{path}: not readable media ({reason}); give a video or audio file", path=str(path))
    try:
        return _info_from_ffprobe(json.loads(proc.stdout or "{}"))
    except InputError as exc:
        raise InputError(f"{path}: {exc}; give a video or audio file", path=str(path)) from None


def _info_from_ffprobe(data: dict[str, Any]) -> MediaInfo:
    info = MediaInfo()
    fmt = data.get("format", {})
    info.format = fmt.get("format_name")
    if fmt.get("duration"):
        info.duration = float(fmt["duration"])
    for s in data.get("streams", []):
        kind = s.get("codec_type")
        if kind == "video" and not info.has_video:
            attached = s.get("disposition", {}).get("attached_pic", 0)
            if attached:
                continue
            info.has_video = True
            info.width, info.height = s.get("width"), s.get("height")
            info.video_codec = s.get("codec_name")
            info.fps = _rate(s.get("avg_frame_rate")) or _rate(s.get("r_frame_rate"))
            if s.get("nb_frames", "").isdigit():
                info.frames = int(s["nb_frames"])
            if info.duration is None and s.get("duration"):
                info.duration = float(s["duration"])
        elif kind == "audio" and not info.has_audio:
            info.has_audio = True
            info.audio_codec = s.get("codec_name")
    info.is_image = bool(info.format in IMAGE_FORMATS or (info.has_video and info.format and info.format.endswith("_pipe")))
    if info.is_image:
        info.duration = None
        info.frames = 1
    elif info.has_video and info.frames is None and info.fps and info.duration:
        info.frames = int(round(info.fps * info.duration))
    if not info.has_video and not info.has_audio:
        raise InputError("no audio or video stream")
    return info


#: probes made ahead by :func:`probe_ahead`, by (path, inode, size, mtime): taken once by :func:`quick_probe`
_AHEAD: dict[tuple[str, int, int, int], MediaInfo] = {}
_AHEAD_LOCK = threading.Lock()


def _stamp(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


def probe_ahead(paths: list[Path], *, timeout: float = 60) -> int:
    """Probe ``paths`` with one ffmpeg start for many (banner.read_many), for :func:`quick_probe` to take
    (20 clips: 0.1 s where one ffmpeg each takes 0.6 s of CPU); returns how many it could vouch for. A file
    changed since, or one it could not, is probed alone as ever."""
    found = banner.read_many(quick_ffmpeg(), paths, timeout=timeout)
    stamps = {path: _stamp(path) for path in found}
    with _AHEAD_LOCK:
        _AHEAD.update({stamp: found[path] for path, stamp in stamps.items() if stamp is not None})
    return len(found)


def forget_ahead(paths: list[Path]) -> None:
    """Drop what :func:`probe_ahead` made for ``paths`` and nobody took (changed files included)."""
    names = {str(p) for p in paths}
    with _AHEAD_LOCK:
        for key in [k for k in _AHEAD if k[0] in names]:
            del _AHEAD[key]


def quick_probe(path: Path, *, timeout: float = 60) -> MediaInfo:
    """:func:`probe` by :func:`quick_ffmpeg`'s banner, for a batch's inputs and for files this toolkit wrote: 0.04 s a
    file where Debian's ffprobe takes 0.13 s (its hundred libraries), in a process of its own all the same (a
    hostile file cannot take the batch down). The frame count is estimated from rate and duration. A probe
    made ahead (:func:`probe_ahead`) of the very same file is taken instead."""
    stamp = _stamp(path) if _AHEAD else None  # nothing made ahead (most calls): no stat
    with _AHEAD_LOCK:
        ahead = _AHEAD.pop(stamp, None) if stamp is not None else None
    return ahead if ahead is not None else banner.read(quick_ffmpeg(), path, timeout=timeout)
