"""Camera motion of a clip, measured: frame-to-frame global shift in pixels by phase correlation.

A stabilized clip should shake less than its input; this is the number that says how much less, the same
measure the tests judge vidstab by. It needs numpy (imported when a measurement is made) and ffmpeg, which
decodes the frames small and grey: a shift is measured on a downscaled frame and reported in the clip's own
pixels. Long clips are sampled as runs of consecutive frames, seeked to, spread over the whole clip; the cost stays
bounded (``max_pairs`` FFTs of at most ``max_width`` pixels, a few seeks) whatever the clip's length.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import InputError, MissingDependencyError
from .media import MediaInfo, probe, quick_ffmpeg


def _np() -> Any:
    try:
        import numpy
    except ImportError:
        raise MissingDependencyError("measuring camera motion needs numpy: pip install numpy") from None
    return numpy


def phase_shift(a: Any, b: Any) -> float:
    """Length in pixels of the global translation between two grey frames, by phase correlation.

    The peak is refined to a fraction of a pixel (a parabola through it and its neighbours on each axis),
    so that frames measured downscaled still give shifts finer than one of their pixels.
    """
    window = _window(*a.shape)
    return _shift(_spectrum(a, window), _spectrum(b, window), *a.shape)


def _window(h: int, w: int) -> Any:
    np = _np()
    return np.outer(np.hanning(h), np.hanning(w))


def _spectrum(frame: Any, window: Any) -> Any:
    # real input: the half spectrum (rfft2) holds it all, for half the work of fft2
    return _np().fft.rfft2((frame - frame.mean()) * window)


def _shift(fa: Any, fb: Any, h: int, w: int) -> float:
    """:func:`phase_shift` from the two frames' spectra."""
    np = _np()
    cross = fa * np.conj(fb)
    corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-9), s=(h, w))
    py, px = np.unravel_index(np.argmax(corr), corr.shape)

    def refine(before: float, peak: float, after: float) -> float:
        denom = before - 2 * peak + after
        return 0.0 if denom == 0 else max(-0.5, min(0.5, 0.5 * (before - after) / denom))

    dy = py + refine(corr[(py - 1) % h, px], corr[py, px], corr[(py + 1) % h, px])
    dx = px + refine(corr[py, (px - 1) % w], corr[py, px], corr[py, (px + 1) % w])
    if dy > h / 2:
        dy -= h
    if dx > w / 2:
        dx -= w
    return float(math.hypot(dx, dy))


@dataclass
class Motion:
    """Shifts between consecutive frames of one clip: when (seconds) and how far (the clip's pixels)."""

    times: list[float] = field(default_factory=list)
    shifts: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.shifts) / len(self.shifts) if self.shifts else 0.0

    @property
    def peak(self) -> float:
        return max(self.shifts, default=0.0)


#: clips up to this long are decoded once, whole; a longer one is seeked to (a seek decodes from the keyframe
#: before it, so on a short clip, often one keyframe, seeks would decode it several times over)
SEEK_ABOVE_SECONDS = 60.0


def _gray(path: Path, w: int, h: int, *, seek: float | None = None, frames: int | None = None, every: int = 1,
          timeout: float = 120, sheet: tuple[str, Path] | None = None) -> Any:
    """Frames of ``path`` as float32 grey ``(n, h, w)``: all of them, ``frames`` from ``seek`` seconds, or (with
    ``every`` > 1) the pairs ``n, n+1`` of each ``every`` frames. With ``sheet`` (a filter chain, a JPEG path)
    the same decode also writes that one picture, so a report's contact sheet costs no second decode."""
    np = _np()
    argv = [quick_ffmpeg(), "-nostdin", "-v", "error"]
    if seek:
        argv += ["-ss", f"{seek:.3f}"]
    grey = grey_filter(w, h, every)
    argv += ["-i", "file:" + str(path), "-an"]
    if sheet:
        argv += ["-filter_complex", f"[0:v]split=2[g0][s0];[g0]{grey}[g];[s0]{sheet[0]}[s]", "-map", "[g]"]
    else:
        argv += ["-vf", grey]
    argv += ["-fps_mode", "passthrough"]
    if frames:
        argv += ["-frames:v", str(frames)]
    argv += ["-f", "rawvideo", "-"]
    if sheet:
        argv += ["-map", "[s]", "-frames:v", "1", "-q:v", "4", "-c:v", "mjpeg", "-f", "image2", "-update", "1",
                 "-y", "file:" + str(sheet[1])]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise InputError(f"{path}: ffmpeg could not decode its frames: {proc.stderr.decode(errors='replace').strip()[-300:]}",
                         path=str(path))
    n = len(proc.stdout) // (w * h)
    return np.frombuffer(proc.stdout, np.uint8)[: n * w * h].reshape(n, h, w).astype(np.float32)


def grey_size(width: int, height: int, max_width: int = 256) -> tuple[int, int]:
    """The size frames are measured at: at most ``max_width`` wide, even, the clip's aspect kept."""
    w = max(16, int(width / max(1.0, width / max_width)) // 2 * 2)
    return w, max(16, int(height * w / width) // 2 * 2)


def pair_step(total: int, max_pairs: int = 150) -> int:
    """1: every consecutive pair of a clip of ``total`` frames; k > 1: the pairs (n, n+1) of every k frames."""
    return 1 if total <= max_pairs + 1 else max(2, total // max_pairs)


def grey_filter(w: int, h: int, every: int = 1) -> str:
    """ffmpeg's filter chain giving the frames :func:`from_frames` measures (with ``every`` > 1, only the pairs)."""
    pick = f"select='lt(mod(n\\,{every})\\,2)'," if every > 1 else ""
    return f"{pick}scale={w}:{h}:flags=area,format=gray"


def from_frames(frames: Any, *, width: int, fps: float, every: int = 1, start: float = 0.0, crop: float = 0.5,
                motion: Motion | None = None) -> Motion:
    """The shifts of grey ``frames`` ``(n, h, w)`` (consecutive ones, or pairs with ``every`` > 1) of a clip
    ``width`` pixels wide, measured on a central crop (``crop`` of each side) and given in the clip's pixels."""
    motion = motion if motion is not None else Motion()
    _, h, w = frames.shape
    factor = width / w
    ch, cw = max(8, int(h * crop)), max(8, int(w * crop))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    centre = frames[:, y0:y0 + ch, x0:x0 + cw]
    window, spectra = _window(ch, cw), {}
    for i in range(0, len(centre) - 1, 2 if every > 1 else 1):
        frame_no = i // 2 * every if every > 1 else i
        motion.times.append(round(start + (frame_no + 1) / fps, 3))
        # each frame's spectrum taken once, though consecutive pairs share a frame: a third less work
        fa = spectra.pop(i, None)
        if fa is None:
            fa = _spectrum(centre[i], window)
        spectra[i + 1] = fb = _spectrum(centre[i + 1], window)
        motion.shifts.append(round(_shift(fa, fb, ch, cw) * factor, 3))
    return motion


def read_grey(path: Path, w: int, h: int) -> Any:
    """Raw grey frames ``w`` x ``h`` that ffmpeg wrote to ``path`` (``-f rawvideo``), as float32 ``(n, h, w)``."""
    np = _np()
    data = np.fromfile(path, np.uint8)
    n = len(data) // (w * h)
    return data[: n * w * h].reshape(n, h, w).astype(np.float32)


def measure(path: Path, *, max_pairs: int = 150, run: int = 16, max_width: int = 256, crop: float = 0.5,
            info: MediaInfo | None = None, sheet: tuple[str, Path] | None = None) -> Motion:
    """The camera motion of ``path``: phase correlation on a central crop (``crop`` of each side) of pairs of
    consecutive frames, ``max_pairs`` in all: every pair of a short clip, pairs spread over a clip up to
    :data:`SEEK_ABOVE_SECONDS` (decoded once), runs of ``run`` frames seeked to in a longer one (never decoded
    whole). ``sheet``: see :func:`_gray`; written where the clip is decoded in one pass (up to
    :data:`SEEK_ABOVE_SECONDS`), not where runs are seeked to (check that it exists)."""
    info = info or probe(path)
    if not info.has_video or not info.width or not info.height:
        raise InputError(f"{path}: no video stream to measure motion on", path=str(path))
    fps = info.fps or 25.0
    duration = info.duration or 0.0
    total = info.frames or int(duration * fps)
    w, h = grey_size(info.width, info.height, max_width)
    if duration <= 0 or duration <= SEEK_ABOVE_SECONDS:  # decoded once: every pair, or pairs spread over it
        every = 1 if duration <= 0 else pair_step(total, max_pairs)
        return from_frames(_gray(path, w, h, every=every, sheet=sheet), width=info.width, fps=fps, every=every,
                           crop=crop)
    count = max(1, max_pairs // (run - 1))
    span = max(0.0, duration - (run + 1) / fps)
    motion = Motion()
    for k in range(count):
        start = span * k / max(1, count - 1)
        from_frames(_gray(path, w, h, seek=start, frames=run), width=info.width, fps=fps, start=start, crop=crop,
                    motion=motion)
    return motion


__all__ = ["Motion", "from_frames", "grey_filter", "grey_size", "measure", "pair_step", "phase_shift", "read_grey"]
