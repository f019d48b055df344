"""Pictures for the report, made locally from the files already here: ffmpeg frames as small JPEGs, and SVG.

Everything comes back as a ``data:`` URI or inline markup, so the report is one file that opens anywhere with
no network and no folder of images beside it. ffmpeg does the decoding, scaling, cropping and tiling (it is
the one tool every job type already needs), so the pictures need no imaging library.
"""

from __future__ import annotations

import base64
import html
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .exceptions import InputError
from .media import MediaInfo, probe, quick_ffmpeg
from .motion import SEEK_ABOVE_SECONDS

#: thumbnails are this tall; a contact sheet row holds ``FRAMES`` of them
THUMB_HEIGHT = 90
FRAMES = 4


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _jpeg(path: Path, filters: str, *, seek: float | None = None, timeout: float = 60) -> bytes:
    """One JPEG that ffmpeg makes from ``path`` through ``filters`` (its first output frame)."""
    argv = [quick_ffmpeg(), "-nostdin", "-v", "error"]
    if seek:
        argv += ["-ss", f"{seek:.3f}"]
    argv += ["-i", "file:" + str(path), "-an", "-vf", filters, "-frames:v", "1", "-q:v", "4",
             "-f", "image2pipe", "-c:v", "mjpeg", "-"]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if proc.returncode != 0 or not proc.stdout:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no frame came out"]
        raise InputError(f"{path}: no picture could be made from it ({reason[0][:200]})", path=str(path))
    return proc.stdout


def strip_filter(duration: float, *, frames: int = FRAMES, height: int = THUMB_HEIGHT) -> str:
    """The filter chain that makes :func:`strip`'s picture of a clip of ``duration`` seconds decoded whole."""
    spread = f"fps={frames}/{duration:.3f}," if duration > 0 else ""
    return f"{spread}scale=-2:{height},tile={frames}x1"


def strip(path: Path, *, frames: int = FRAMES, height: int = THUMB_HEIGHT, info: MediaInfo | None = None,
          timeout: float = 60) -> bytes:
    """``frames`` frames spread evenly over a clip, side by side in one JPEG ``height`` pixels tall.

    A clip longer than ``SEEK_ABOVE_SECONDS`` is seeked to, frame by frame (one ffmpeg, an input per frame),
    so it is never decoded whole."""
    info = info or probe(path)
    duration = info.duration or 0.0
    if duration <= SEEK_ABOVE_SECONDS:  # decoded once (a seek decodes from the keyframe before it)
        return _jpeg(path, strip_filter(duration, frames=frames, height=height))
    argv = [quick_ffmpeg(), "-nostdin", "-v", "error"]
    for k in range(frames):
        argv += ["-ss", f"{duration * (k + 0.5) / frames:.3f}", "-i", "file:" + str(path)]
    # even sizes: mjpeg's yuvj420p wants them, and the rows of a sheet then line up
    graph = ";".join(f"[{k}:v]trim=end_frame=1,scale=-2:{height},setsar=1[f{k}]" for k in range(frames))
    graph += ";" + "".join(f"[f{k}]" for k in range(frames)) + f"hstack=inputs={frames}[out]"
    argv += ["-filter_complex", graph, "-map", "[out]", "-frames:v", "1", "-q:v", "4", "-f", "image2pipe", "-c:v", "mjpeg", "-"]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    if proc.returncode != 0 or not proc.stdout:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no frame came out"]
        raise InputError(f"{path}: no contact sheet could be made from it ({reason[0][:200]})", path=str(path))
    return proc.stdout


def middle_frame(path: Path, filters: str, info: MediaInfo | None = None) -> bytes:
    """A frame from the middle of a clip (or the picture itself), through ``filters``."""
    info = info or probe(path)
    seek = (info.duration or 0) / 2 if info.has_video and not info.is_image and (info.duration or 0) > 1 else None
    return _jpeg(path, filters, seek=seek)


def crop_pair(source: Path, output: Path, *, size: int = 256) -> tuple[bytes, bytes, dict[str, int]]:
    """The same region of ``source`` and ``output``, both shown ``size`` pixels wide: the source scaled up by
    bicubic, the output scaled to fit. The region is the centre of the picture, a quarter of its area."""
    src, out = probe(source), probe(output)
    if not (src.width and src.height and out.width and out.height):
        raise InputError(f"{source}: no picture size to crop by", path=str(source))
    cw, ch = max(8, src.width // 2), max(8, src.height // 2)
    x, y = (src.width - cw) // 2, (src.height - ch) // 2
    fx, fy = out.width / src.width, out.height / src.height
    show_h = max(2, round(size * ch / cw / 2) * 2)
    before = middle_frame(source, f"crop={cw}:{ch}:{x}:{y},scale={size}:{show_h}:flags=bicubic", src)
    after = middle_frame(output, f"crop={round(cw * fx)}:{round(ch * fy)}:{round(x * fx)}:{round(y * fy)},"
                                 f"scale={size}:{show_h}:flags=lanczos", out)
    region = {"x": x, "y": y, "width": cw, "height": ch, "input_width": src.width, "input_height": src.height,
              "output_width": out.width, "output_height": out.height}
    return before, after, region


def img(uri: str, alt: str, *, style: str = "") -> str:
    return f'<img src="{uri}" alt="{html.escape(alt, quote=True)}" style="display:block;max-width:100%;{style}">'


def _runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """``points`` cut wherever the time jumps by more than twice its smallest step."""
    steps = [b[0] - a[0] for a, b in zip(points, points[1:]) if b[0] > a[0]]
    gap = 2 * min(steps) if steps else float("inf")
    runs: list[list[tuple[float, float]]] = []
    for point in points:
        if runs and point[0] - runs[-1][-1][0] <= gap:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def shift_plot(series: Sequence[tuple[str, str, Sequence[float], Sequence[float]]], *, width: int = 360,
               height: int = 110) -> str:
    """An inline SVG of shift over time: one polyline per ``(label, colour, times, shifts)``, a shared scale."""
    pad_l, pad_b, pad_t = 34, 16, 6
    t_max = max((max(t) for _, _, t, _ in series if t), default=1.0) or 1.0
    s_max = max((max(s) for _, _, _, s in series if s), default=1.0) or 1.0
    s_max *= 1.1
    plot_w, plot_h = width - pad_l - 4, height - pad_b - pad_t
    parts = [f'<svg width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" style="font:10px sans-serif;background:#fff" class="cgpu-kit-shift-plot">',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" stroke="#888"/>',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{pad_l + plot_w}" y2="{pad_t + plot_h}" stroke="#888"/>',
             f'<text x="{pad_l - 3}" y="{pad_t + 8}" text-anchor="end">{s_max:.1f}</text>',
             f'<text x="{pad_l - 3}" y="{pad_t + plot_h}" text-anchor="end">0</text>',
             f'<text x="{pad_l - 3}" y="{pad_t + plot_h / 2 + 3:.0f}" text-anchor="end">px</text>',
             f'<text x="{pad_l + plot_w}" y="{height - 3}" text-anchor="end">{t_max:.1f} s</text>']
    for n, (label, colour, times, shifts) in enumerate(series):
        for run in _runs(list(zip(times, shifts))):  # a long clip is measured in runs: no line across the gaps
            points = " ".join(f"{pad_l + plot_w * t / t_max:.1f},{pad_t + plot_h * (1 - s / s_max):.1f}" for t, s in run)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.4" points="{points}"/>')
        parts.append(f'<text x="{pad_l + 6 + 120 * n}" y="{height - 3}" fill="{colour}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


__all__ = ["crop_pair", "data_uri", "img", "middle_frame", "shift_plot", "strip", "strip_filter"]
