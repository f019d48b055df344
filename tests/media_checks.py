"""Measurements the tests judge outputs by: decoded frames, motion by phase correlation, stream facts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np


def gray_frames(path: Path) -> np.ndarray:
    """All frames of ``path`` as float32 grayscale, shape (n, h, w)."""
    info = stream_info(path)
    w, h = info["width"], info["height"]
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        stdin=subprocess.DEVNULL, capture_output=True, check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w).astype(np.float32)


def phase_shift(a: np.ndarray, b: np.ndarray) -> float:
    """Length in pixels of the global translation between two frames, by phase correlation."""
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2((a - a.mean()) * window), np.fft.fft2((b - b.mean()) * window)
    cross = fa * np.conj(fb)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    if dy > a.shape[0] // 2:
        dy -= a.shape[0]
    if dx > a.shape[1] // 2:
        dx -= a.shape[1]
    return float(np.hypot(dx, dy))


def mean_shift(path: Path, crop: float = 0.5) -> float:
    """Mean frame-to-frame global shift on a central crop (``crop`` of each side)."""
    frames = gray_frames(path)
    n, h, w = frames.shape
    ch, cw = int(h * crop), int(w * crop)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    centre = frames[:, y0:y0 + ch, x0:x0 + cw]
    return float(np.mean([phase_shift(centre[i], centre[i + 1]) for i in range(n - 1)]))


def stream_info(path: Path) -> dict:
    """Facts of the first video stream (counted frames, rate) and whether there is audio, and the duration."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-print_format", "json", "-show_streams", "-show_format", f"file:{path}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    num, den = video["r_frame_rate"].split("/")
    return {
        "width": video["width"], "height": video["height"], "frames": int(video["nb_read_frames"]),
        "fps": float(num) / float(den), "duration": float(data["format"]["duration"]),
        "has_audio": any(s["codec_type"] == "audio" for s in data["streams"]),
        "pix_fmt": video.get("pix_fmt"), "codec": video["codec_name"],
    }
