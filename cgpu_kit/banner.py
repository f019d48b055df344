"""What ``ffmpeg -i`` prints about its inputs, read as a probe: the static ffmpeg starts in 0.02 s where
Debian's ffprobe loads a hundred libraries (0.13 s), and one ffmpeg reads many inputs in one start.

Only the banner's own lines are read, anchored at their indentation and at the input's exact name, so a file
name or a tag that looks like a stream line is not taken for one; cover art (an attached picture) is not a
video. :func:`read_many` is best effort: an input it cannot vouch for (a name with a newline or a quote, a
file ffmpeg fails to open, which stops it there, a group that times out) is left out, for :func:`read` to
probe alone, with its own error message and its own time limit.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .exceptions import InputError
from .mediainfo import IMAGE_FORMATS, MediaInfo

_DUR = re.compile(r"^  Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", re.M)
_SIZE = re.compile(r", (\d{1,5})x(\d{1,5})\b")
_FPS = re.compile(r", ([\d.]+)(k?) fps\b")
_OPEN_ERROR = re.compile(r"Error opening input: (.+)$", re.M)

#: inputs read by one ffmpeg at most (each holds a file open until the end)
GROUP_SIZE = 64


def _stream(index: int) -> re.Pattern[str]:
    return re.compile(rf"^  Stream #{index}:\d+\S*: (Video|Audio): (\w+)(.*)$", re.M)


def first_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _argv(ffmpeg: str, paths: Sequence[Path]) -> list[str]:
    return [ffmpeg, "-hide_banner", "-nostdin", *(a for p in paths for a in ("-i", "file:" + str(p)))]


def read(ffmpeg: str, path: Path, *, timeout: float) -> MediaInfo:
    """Probe ``path`` alone; :class:`InputError` naming it when it is not readable media."""
    try:
        proc = subprocess.run(_argv(ffmpeg, [path]), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffmpeg did not read it within {timeout:.0f}s; is the file on a slow or broken disk?",
                         path=str(path)) from None
    text = proc.stderr
    info = _parse(text, path, 0)
    if info is None:
        opening = _OPEN_ERROR.search(text)
        reason = opening.group(1).strip() if opening else first_error_line(text).replace(f"file:{path}: ", "")
        if not reason or "output file" in reason:
            reason = "no audio or video stream"
        raise InputError(f"{path}: not readable media ({reason}); give a video or audio file", path=str(path))
    return info


def read_many(ffmpeg: str, paths: Sequence[Path], *, timeout: float) -> dict[Path, MediaInfo]:
    """What one ffmpeg says of each of ``paths`` (up to :data:`GROUP_SIZE` at a time): the inputs it could
    vouch for, by path; the others are for :func:`read`. A group gets a few seconds, not ``timeout``: a file
    on a stalled disk then costs its own probe's time limit, not that and a whole group's."""
    found: dict[Path, MediaInfo] = {}
    plain = [p for p in dict.fromkeys(paths) if _groupable(p)]
    for start in range(0, len(plain), GROUP_SIZE):
        group = plain[start:start + GROUP_SIZE]
        try:
            proc = subprocess.run(_argv(ffmpeg, group), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=min(timeout, 5 + 0.25 * len(group)))
        except subprocess.TimeoutExpired:
            continue
        for index, path in enumerate(group):
            info = _parse(proc.stderr, path, index)
            if info is None:  # ffmpeg stopped at this input: it and those after are probed alone
                break
            found[path] = info
    return found


def _groupable(path: Path) -> bool:
    """A regular file whose name cannot be mistaken in the banner (ffmpeg prints names as they are)."""
    if any(c in str(path) for c in "\n\r'"):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.R_OK)
    except OSError:
        return False


def _parse(text: str, path: Path, index: int) -> MediaInfo | None:
    """Input ``index`` of the banner ``text``, named ``path``; None where the banner has no streams for it.
    Alone (index 0), a name printed otherwise than Python spells it (bytes that are not UTF-8) is read
    without the name's anchor, as the whole banner."""
    header = re.search(rf"^Input #{index}, ([\w,]+), from 'file:{re.escape(str(path))}':\n", text, re.M)
    if header is None and index == 0:
        header = re.search(r"^Input #0, ([\w,]+), from '", text, re.M)
    if header is None:
        return None
    end = text.find("\nInput #", header.end() - 1)  # what follows the name, up to the next input's header
    body = text[header.end():] if end < 0 else text[header.end():end + 1]
    info = MediaInfo(format=header.group(1))
    if m := _DUR.search(body):
        info.duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    for kind, codec, rest in _stream(index).findall(body):
        if kind == "Video" and not info.has_video and "(attached pic)" not in rest:
            info.has_video, info.video_codec = True, codec
            if size := _SIZE.search(rest):  # none: a damaged picture (the job says so), as ffprobe's 0x0
                info.width, info.height = int(size.group(1)), int(size.group(2))
            if f := _FPS.search(rest):
                info.fps = float(f.group(1)) * (1000 if f.group(2) else 1)
        elif kind == "Audio" and not info.has_audio:
            info.has_audio, info.audio_codec = True, codec
    if not (info.has_video or info.has_audio):
        return None
    info.is_image = bool(info.format in IMAGE_FORMATS or (info.has_video and (info.format or "").endswith("_pipe")))
    if info.is_image:
        info.duration, info.frames = None, 1
    elif info.has_video and info.fps and info.duration:
        info.frames = int(round(info.fps * info.duration))
    return info
