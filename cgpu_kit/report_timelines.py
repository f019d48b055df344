"""Report previews of the job types whose output is a time line: what a person checks at a glance.

- scenes: each scene's thumbnail laid on a time line as wide as the scene, the cut times under it;
- beats: the beat grid (downbeats stronger) drawn over the audio's waveform, in inline SVG;
- encode: the encoder used and what the file became (size, codec, dimensions, bit rate);
- interpolate: a few input frames above the same moments of the output, and the frame rates.

Registered with :func:`~cgpu_kit.report.register_section` when :mod:`cgpu_kit.report_sections` loads.
"""

from __future__ import annotations

import array
import html
import json
import subprocess
from pathlib import Path

from .media import probe, quick_ffmpeg
from .report import Preview, ReportContext, register_section
from .report_media import _jpeg, data_uri, img, strip
from .results import ItemResult

_LABEL = "font-size:12px;color:#57606a;margin:2px 0"
WIDTH = 640
#: at most this many scenes get a picture on the time line (the rest are drawn as plain blocks)
MAX_THUMBS = 40


def _output(item: ItemResult, suffix: str) -> Path:
    for o in item.outputs:
        if o.endswith(suffix) and Path(o).is_file():
            return Path(o)
    raise FileNotFoundError(f"no {suffix} output is there any more")


@register_section("scenes")
def scenes_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """Thumbnails on a time line: one block per scene, as wide as the scene lasts, a red line at each cut."""
    data = json.loads(_output(item, ".scenes.json").read_text(encoding="utf-8"))
    scenes = data.get("scenes", [])
    total = max((s["end"] for s in scenes), default=0.0) or 1.0
    thumbs = {int(Path(o).stem.rsplit("scene-", 1)[1]): Path(o) for o in item.outputs
              if Path(o).suffix == ".jpg" and "scene-" in Path(o).stem and Path(o).is_file()}
    source = Path(item.input_path)
    blocks, ticks = [], []
    for n, s in enumerate(scenes, 1):
        left, width = WIDTH * s["start"] / total, max(1.0, WIDTH * (s["end"] - s["start"]) / total)
        picture = ""
        if n <= MAX_THUMBS:
            try:
                jpeg = thumbs[n].read_bytes() if n in thumbs else _jpeg(source, "scale=-2:54", seek=(s["start"] + s["end"]) / 2)
                picture = img(data_uri(jpeg), f"scene {n}", style="height:54px")
            except Exception:  # the input moved away: the block still shows where the scene is
                picture = ""
        blocks.append(f'<div title="scene {n}: {s["start"]:.2f}-{s["end"]:.2f} s" style="position:absolute;top:0;'
                      f'left:{left:.1f}px;width:{width:.1f}px;height:54px;overflow:hidden;background:#d0d7de;'
                      f'border-left:2px solid #cf222e">{picture}</div>')
        if n > 1:
            ticks.append(f'<span style="position:absolute;left:{left:.1f}px;top:56px;font:10px monospace;'
                         f'color:#cf222e">{s["start"]:.2f}</span>')
    body = (f'<div style="{_LABEL}">{len(scenes)} scene(s) over {total:.2f} s ({html.escape(str(data.get("detector", "")))} '
            f'detector); cut times in seconds</div>'
            f'<div class="cgpu-kit-scenes" style="position:relative;width:{WIDTH}px;height:72px">{"".join(blocks)}{"".join(ticks)}</div>')
    return Preview(body, {"scenes": len(scenes), "cuts": [s["start"] for s in scenes[1:]]})


def _envelope(path: Path, duration: float, columns: int) -> list[tuple[float, float]]:
    """(min, max) of the audio in each of ``columns`` slices, in [-1, 1]: decoded by ffmpeg at a low rate."""
    rate = 4000 if duration <= 300 else 500
    raw = subprocess.run([quick_ffmpeg(), "-nostdin", "-v", "error", "-i", "file:" + str(path), "-map", "0:a:0", "-ac", "1",
                          "-ar", str(rate), "-f", "s16le", "-c:a", "pcm_s16le", "-"],
                         stdin=subprocess.DEVNULL, capture_output=True, timeout=120).stdout
    samples = array.array("h")
    samples.frombytes(raw[: len(raw) // 2 * 2])
    if not samples:
        return []
    per = max(1, len(samples) // columns)
    return [(min(chunk) / 32768, max(chunk) / 32768)
            for chunk in (samples[i:i + per] for i in range(0, len(samples), per)) if chunk][:columns]


@register_section("beats")
def beats_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """The beat grid over the waveform: grey lines on the beats, red ones on the downbeats."""
    data = json.loads(_output(item, ".beats.json").read_text(encoding="utf-8"))
    duration = data.get("duration") or max(data.get("beats") or [1.0])
    height, mid = 80, 40
    try:
        envelope = _envelope(Path(item.input_path), duration, WIDTH)
    except Exception:  # the input moved away: the grid alone is still worth showing
        envelope = []
    wave = "".join(f'<line x1="{x}" x2="{x}" y1="{mid - hi * mid:.1f}" y2="{mid - lo * mid:.1f}" stroke="#8c959f"/>'
                   for x, (lo, hi) in enumerate(envelope))
    x = lambda t: WIDTH * t / duration  # noqa: E731
    downs = set(data.get("downbeats") or [])
    grid = "".join(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="0" y2="{height}" '
                   f'stroke="{"#cf222e" if t in downs else "#0969da"}" stroke-width="{2 if t in downs else 1}" '
                   f'stroke-opacity="0.8"/>' for t in data.get("beats", []))
    tempo = data.get("tempo")
    note = ("downbeats in red" if downs else "no downbeat stood out")
    body = (f'<div style="{_LABEL}">{tempo if tempo is not None else "?"} BPM, {len(data.get("beats", []))} beats over '
            f'{duration:.1f} s; {note}</div>'
            f'<svg class="cgpu-kit-beats" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
            f'xmlns="http://www.w3.org/2000/svg" style="background:#f6f8fa">{wave}{grid}</svg>')
    return Preview(body, {"tempo": tempo, "beats": len(data.get("beats", [])), "downbeats": len(downs)})


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


@register_section("encode")
def encode_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """What the delivery file is: encoder (NVENC or software), codec, size and bit rate beside the input's."""
    output, source = Path(item.outputs[0]), Path(item.input_path)
    out_info = probe(output)
    meta = item.metadata
    rows = [("encoder", f"{meta.get('encoder', '?')} ({'NVENC' if meta.get('hardware') else 'software'}), "
                        f"quality {meta.get('quality', '?')}, preset {meta.get('preset', '?')}"),
            ("output", f"{out_info.video_codec} {out_info.width}x{out_info.height}, {_mb(output.stat().st_size)}, "
                       f"{8 * output.stat().st_size / max(out_info.duration or 1, 1e-3) / 1000:.0f} kbit/s")]
    if source.is_file():
        src_info = probe(source)
        rows.append(("input", f"{src_info.video_codec} {src_info.width}x{src_info.height}, {_mb(source.stat().st_size)}"))
    table = "".join(f'<tr><td style="{_LABEL};padding-right:8px">{k}</td><td style="font-size:13px">{html.escape(v)}</td></tr>'
                    for k, v in rows)
    picture = img(data_uri(strip(output, info=out_info)), "output frames", style="height:90px")
    return Preview(f"<div><table>{table}</table>{picture}</div>", {"encoder": meta.get("encoder"), "bytes": output.stat().st_size})


@register_section("interpolate")
def interpolate_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """Frames of the input above the same moments of the output, and the frame rates."""
    output, source = Path(item.outputs[0]), Path(item.input_path)
    meta = item.metadata
    sheet = (f'<div style="{_LABEL}">input, {html.escape(str(meta.get("source_fps", "?")))} fps</div>'
             + img(data_uri(strip(source)), "input frames", style="height:90px")
             + f'<div style="{_LABEL}">interpolated, {html.escape(str(meta.get("fps", "?")))} fps</div>'
             + img(data_uri(strip(output)), "output frames", style="height:90px"))
    return Preview(f"<div>{sheet}</div>", {"fps": meta.get("fps")})
