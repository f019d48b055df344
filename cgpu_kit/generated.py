"""Small generated inputs whose right answer is known: shots joined by hard cuts, click tracks, a moving
pattern, a test card. The scenes, beats, interpolate and encode templates run on them by hand, ``--samples``
uses them, and the tests judge outputs against what was generated.
"""

from __future__ import annotations

import math
import struct
import subprocess
import wave
from pathlib import Path

from .media import find_ffmpeg

#: lavfi sources that look nothing alike (colour, texture, layout), one per shot
SHOT_SOURCES = ("testsrc2", "smptebars", "mandelbrot", "cellauto")


def _ffmpeg(args: list[str], dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    argv = [find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args, "file:" + str(dest)]
    subprocess.run(argv, stdin=subprocess.DEVNULL, check=True, capture_output=True)
    return dest


def make_cut_clip(dest: Path, *, shots: int = 4, frames_per_shot: int = 18, fps: int = 24,
                  width: int = 160, height: int = 120) -> Path:
    """Write ``shots`` distinct shots of ``frames_per_shot`` frames each, joined with hard cuts (H.264).

    The cuts are at frames ``k * frames_per_shot``; each shot moves a little, as real footage does.
    """
    size = f"s={width}x{height}:r={fps}"
    args: list[str] = []
    chains = []
    for n in range(shots):
        source = SHOT_SOURCES[n % len(SHOT_SOURCES)]
        args += ["-f", "lavfi", "-i", f"{source}={size}"]
        chains.append(f"[{n}:v]trim=end_frame={frames_per_shot},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[s{n}]")
    graph = ";".join(chains) + ";" + "".join(f"[s{n}]" for n in range(shots)) + f"concat=n={shots}:v=1:a=0[v]"
    args += ["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18",
             "-pix_fmt", "yuv420p", "-f", "mp4"]
    return _ffmpeg(args, dest)


def click_samples(bpm: float, seconds: float, *, rate: int = 22050, accent_every: int = 4, start: float = 0.25) -> list[float]:
    """A click track as samples in [-1, 1]: a 10 ms 1 kHz burst per beat from ``start``, every
    ``accent_every``-th one (the downbeat) louder and higher; ``accent_every=0``: all alike."""
    out = [0.0] * int(seconds * rate)
    period = 60.0 / bpm
    n, t = 0, start
    while t < seconds - 0.02:
        accent = accent_every and n % accent_every == 0
        freq, amp = (1500.0, 0.9) if accent else (1000.0, 0.45)
        first = int(t * rate)
        for i in range(int(0.01 * rate)):
            if first + i < len(out):
                out[first + i] = amp * math.sin(2 * math.pi * freq * i / rate) * (1 - i / (0.01 * rate))
        n += 1
        t = start + n * period
    return out


def click_times(bpm: float, seconds: float, *, start: float = 0.25) -> list[float]:
    """When the clicks of :func:`click_samples` start, in seconds."""
    period = 60.0 / bpm
    return [start + n * period for n in range(int((seconds - 0.02 - start) / period) + 1) if start + n * period < seconds - 0.02]


def make_click_track(dest: Path, bpm: float, *, seconds: float = 8.0, rate: int = 22050, accent_every: int = 4,
                     video: bool = False) -> Path:
    """A WAV click track at ``bpm``; with ``video``, an MP4 of a plain picture carrying it as AAC audio."""
    samples = click_samples(bpm, seconds, rate=rate, accent_every=accent_every)
    wav = dest if not video else dest.with_name(dest.name + ".wav")
    wav.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(s * 32767)) for s in samples))
    if not video:
        return dest
    try:
        return _ffmpeg(["-f", "lavfi", "-i", f"color=c=0x204060:s=160x120:r=12:d={seconds}", "-i", "file:" + str(wav),
                        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                        "-shortest", "-f", "mp4"], dest)
    finally:
        wav.unlink(missing_ok=True)


def make_moving_clip(dest: Path, *, fps: int = 12, seconds: float = 2.0, width: int = 160, height: int = 120,
                     speed: int = 4, audio: bool = True) -> Path:
    """A textured pattern scrolling ``speed`` pixels a frame to the left (with a tone as audio): what motion
    interpolation must place half-way."""
    frames = int(fps * seconds)
    video = (f"testsrc2=s={width + speed * frames + 8}x{height}:r={fps},"
             f"crop={width}:{height}:x='n*{speed}':y=0,format=yuv420p")
    args = ["-f", "lavfi", "-i", video]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k", "-shortest"]
    return _ffmpeg(args + ["-f", "mp4"], dest)


def make_test_card(dest: Path, *, fps: int = 24, seconds: float = 2.0, width: int = 160, height: int = 120,
                   audio: bool = True) -> Path:
    """A moving test card, near-lossless (x264 crf 4), with a tone: the master a delivery encode is judged against."""
    args = ["-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r={fps}:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "4", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "192k", "-shortest"]
    return _ffmpeg(args + ["-f", "mp4"], dest)
