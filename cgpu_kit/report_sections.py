"""The built-in job types' previews in the report: what a person looks at to judge each kind of output.

- stabilize: input frames above output frames, and the camera motion before and after, measured (by the
  runtime's two passes as they decode the clip, where they did: no decode here);
- upscale: the same region of the input (bicubic) and of the output, at the same size;
- transcribe: the subtitles as a transcript with timestamps (word confidences when the .json has them).

A new job type adds its own function here (or anywhere) with ``@register_section("name")``.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .media import MediaInfo, probe, quick_probe
from .motion import Motion
from .report import Preview, ReportContext, register_section
from .report_media import THUMB_HEIGHT, crop_pair, data_uri, img, shift_plot, strip, strip_filter
from .results import ItemResult
from .subtitles import Transcript, read_cues, timestamp

_LABEL = "font-size:12px;color:#57606a;margin:2px 0"
_BEFORE, _AFTER = "#cf222e", "#1a7f37"


def _existing(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is no longer there")
    return p


def _probed(item: ItemResult, source: Path) -> MediaInfo:
    """The input's probe, as the batch recorded it when it checked the input (one ffprobe, 0.15 s, saved per
    item); probed again when the record is missing or from another version."""
    media = item.metadata.get("media")
    if isinstance(media, dict):
        try:
            return MediaInfo(**media)
        except TypeError:
            pass
    return probe(source)


def _sheet_and_motion(path: Path, info: MediaInfo, sheet: Path) -> tuple[bytes, Any]:
    """A clip's contact sheet and its measured motion (or why it was not measured) from ONE decode where the clip
    is short (the sheet made beside the grey frames); separately otherwise or when the measure failed."""
    from .motion import SEEK_ABOVE_SECONDS, measure

    duration = info.duration or 0.0
    try:
        motion: Any = measure(path, info=info,
                              sheet=(strip_filter(duration), sheet) if duration <= SEEK_ABOVE_SECONDS else None)
    except Exception as exc:  # numpy missing, an undecodable frame: the sheet is still worth showing
        motion = exc
    picture = sheet.read_bytes() if sheet.is_file() and sheet.stat().st_size else strip(path, info=info)
    return picture, motion


def _from_passes(item: ItemResult, side: str) -> tuple[bytes | None, Motion] | None:
    """The sheet (once the report was first written only the motion is kept) and the motion of one side, as the
    runtime's passes made them (cgpu_kit/runtime/stabilize_preview.py); None where they made none."""
    try:
        made = item.metadata["preview"][side]
        times, shifts = [float(t) for t in made["times"]], [float(v) for v in made["shifts"]]
        sheet = base64.b64decode(made["sheet"], validate=True) if made.get("sheet") else None
    except (TypeError, KeyError, ValueError):
        return None
    return (sheet, Motion(times, shifts)) if shifts and len(times) == len(shifts) else None


def _side(item: ItemResult, side: str, path: Path, info: Callable[[], MediaInfo], folder: Path) -> tuple[bytes, Any]:
    """One side's contact sheet and motion: from the passes where they made them, else decoded here (once)."""
    made = _from_passes(item, side)
    if made is None:
        return _sheet_and_motion(path, info(), folder / f"{side}.jpg")
    sheet, motion = made
    return (sheet if sheet is not None else strip(path, info=info())), motion


@register_section("stabilize")
def stabilize_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """A contact sheet (input above output) and the frame-to-frame shift of both, plotted over time: as the
    runtime's passes measured them where they did, else decoded here."""
    source, output = _existing(item.input_path), _existing(item.outputs[0])
    with tempfile.TemporaryDirectory(prefix="cgpu-kit-sheet-") as folder:
        src_sheet, before = _side(item, "input", source, lambda: _probed(item, source), Path(folder))
        out_sheet, after = _side(item, "output", output, lambda: quick_probe(output), Path(folder))
    sheet = (f'<div style="{_LABEL}">input</div>'
             + img(data_uri(src_sheet), "input frames", style=f"height:{THUMB_HEIGHT}px")
             + f'<div style="{_LABEL}">stabilized</div>'
             + img(data_uri(out_sheet), "stabilized frames", style=f"height:{THUMB_HEIGHT}px"))
    figures: dict[str, float] = {}
    failed = before if isinstance(before, Exception) else after if isinstance(after, Exception) else None
    if failed is not None:
        motion = f'<div style="{_LABEL}">camera motion not measured: {html.escape(str(failed)[:200])}</div>'
    else:
        figures = {"shift_before": round(before.mean, 3), "shift_after": round(after.mean, 3)}
        ratio = f" ({before.mean / after.mean:.1f}&times; less)" if before.mean > after.mean > 0.05 else ""
        motion = (f'<div class="cgpu-kit-motion" style="margin-top:6px;font-size:13px">camera motion, mean '
                  f'frame-to-frame shift: <b style="color:{_BEFORE}">{before.mean:.2f} px</b> before, '
                  f'<b style="color:{_AFTER}">{after.mean:.2f} px</b> after{ratio}</div>'
                  + shift_plot([("input", _BEFORE, before.times, before.shifts),
                                ("stabilized", _AFTER, after.times, after.shifts)]))
    return Preview(f"<div>{sheet}{motion}</div>", figures)


@register_section("upscale")
def upscale_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """The centre of the input scaled up by bicubic beside the same region of the output, same size."""
    source, output = _existing(item.input_path), _existing(item.outputs[0])
    before, after, region = crop_pair(source, output)
    scale = ctx.result.metadata.get("params", {}).get("scale", "")
    cell = '<div style="display:inline-block;margin-right:6px">'
    body = (f'<div style="display:flex;gap:6px">'
            f'{cell}<div style="{_LABEL}">input, bicubic '
                f'x{html.escape(str(scale))}</div>{img(data_uri(before), "input crop, bicubic")}</div>'
            f'{cell}<div style="{_LABEL}">upscaled</div>{img(data_uri(after), "output crop")}</div></div>'
            f'<div style="{_LABEL}">{region["input_width"]}x{region["input_height"]} &rarr; '
            f'{region["output_width"]}x{region["output_height"]}; centre region {region["width"]}x{region["height"]} '
            f'at ({region["x"]}, {region["y"]})</div>')
    return Preview(body, {"region": region})


def _transcript(outputs: list[str]) -> tuple[list[tuple[float, float, str, list]], str]:
    """Lines (start, end, text, words) from the richest subtitle output: .json, then .srt/.vtt, then .txt."""
    by_suffix = {Path(o).suffix.lower(): Path(o) for o in outputs}
    if ".json" in by_suffix:
        data = json.loads(by_suffix[".json"].read_text(encoding="utf-8"))
        t = Transcript.from_dict(data)
        return [(s.start, s.end, s.text, s.words) for s in t.segments], by_suffix[".json"].name
    for suffix in (".srt", ".vtt"):
        if suffix in by_suffix:
            return [(c.start, c.end, c.text, []) for c in read_cues(by_suffix[suffix])], by_suffix[suffix].name
    if ".txt" in by_suffix:
        return [(0.0, 0.0, by_suffix[".txt"].read_text(encoding="utf-8"), [])], by_suffix[".txt"].name
    raise FileNotFoundError("no subtitle output (.json, .srt, .vtt or .txt) to read")


def _words(words: list) -> str:
    """Words shaded by confidence: the less sure the engine was, the more the word stands out."""
    out = []
    for w in words:
        p = w.probability
        if p is None:
            out.append(html.escape(w.word))
            continue
        style = "" if p >= 0.8 else f"background:rgba(255,140,0,{min(0.6, 1 - p):.2f});border-radius:2px"
        out.append(f'<span title="{p:.2f}" data-p="{p:.3f}" style="{style}">{html.escape(w.word)}</span>')
    return "".join(out)


@register_section("transcribe")
def transcribe_section(item: ItemResult, ctx: ReportContext) -> Preview:
    """The transcript, one line per cue with its start and end; word confidences shown when there."""
    lines, source = _transcript(item.outputs)
    rows = []
    for start, end, text, words in lines:
        when = f"{timestamp(start, '.')[:-2]} &ndash; {timestamp(end, '.')[:-2]}" if end else ""
        said = _words(words) if words else html.escape(text)
        rows.append(f'<div class="cgpu-kit-cue"><span style="color:#57606a;font:12px monospace;margin-right:8px">'
                    f"{when}</span>{said}</div>")
    has_p = any(w.probability is not None for _, _, _, ws in lines for w in ws)
    note = " (words shaded by how unsure the model was; hover for the confidence)" if has_p else ""
    body = (f'<div style="{_LABEL}">{len(lines)} cue(s), from {html.escape(source)}{note}</div>'
            f'<div style="max-height:16em;overflow:auto;max-width:40em;font-size:13px">'
            f'{"".join(rows) or "<i>no speech found</i>"}</div>')
    return Preview(body, {"cues": len(lines), "word_confidences": has_p})


from . import report_timelines  # noqa: E402,F401  (scenes, beats, encode, interpolate: time lines and what a file became)
