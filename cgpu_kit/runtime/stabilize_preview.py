"""What the report shows of a stabilized clip, made from the frames the two passes decode anyway.

The report (cgpu_kit/report_sections.py) puts each clip's contact sheet, input above output, and its camera
motion before and after side by side. Made afterwards on the local machine, that is two more decodes per clip
and, on the local runtime, a quarter of a batch's CPU time. So each pass's filter graph is split: vidstabdetect's
input frames and vidstabtransform's output frames (as they go to the encoder) also go, small and grey, to a
scratch file, and four of them to one contact sheet; the motion is then measured here, by the same phase
correlation (cgpu_kit/motion.py), and travels with the item's result (``metadata["preview"]``: a few kB).

None of it may cost the clip: a pass whose taps fail runs again without them, and the report then makes its
pictures itself, as it does for a result that carries none.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..motion import from_frames, grey_filter, grey_size, pair_step, read_grey
from ..report_media import strip_filter

log = logging.getLogger("cgpu_kit.runtime")


@dataclass(frozen=True)
class Tap:
    """The grey frames and the contact sheet one pass also writes, and how to read them."""

    grey: Path
    sheet: Path
    width: int  # the clip's own width, for shifts in its pixels
    w: int
    h: int
    every: int
    fps: float
    duration: float

    def branches(self, label: str) -> str:
        """Filter graph branches from ``[label]``: the grey frames to ``[grey]``, the sheet to ``[sheet]``."""
        return (f"[{label}]split=2[tg][ts];[tg]{grey_filter(self.w, self.h, self.every)}[grey];"
                f"[ts]{strip_filter(self.duration)}[sheet]")

    def outputs(self, threads: list[str] = ()) -> list[str]:
        """ffmpeg's output arguments writing them (after the pass's own output); ``threads``: each output's
        thread option, where the pass has one (stabilize.thread_options)."""
        return ["-map", "[grey]", *threads, "-f", "rawvideo", "file:" + str(self.grey),
                "-map", "[sheet]", *threads, "-frames:v", "1", "-q:v", "4", "-c:v", "mjpeg", "-f", "image2", "-update",
                "1", "file:" + str(self.sheet)]

    def measured(self) -> dict[str, Any]:
        """The clip's sheet (a JPEG, base64) and its camera motion, from what the pass wrote."""
        motion = from_frames(read_grey(self.grey, self.w, self.h), width=self.width, fps=self.fps, every=self.every)
        sheet = self.sheet.read_bytes()
        if not sheet or not motion.shifts:
            raise ValueError("the pass wrote no frames to measure")
        return {"sheet": base64.b64encode(sheet).decode("ascii"), "times": motion.times, "shifts": motion.shifts}

    def discard(self) -> None:
        self.grey.unlink(missing_ok=True)
        self.sheet.unlink(missing_ok=True)


def taps(probe: dict[str, Any], scratch: Any) -> tuple[Tap, Tap] | None:
    """The taps of the detect pass (the input) and of the transform pass (the output), or None where the probe
    does not say enough (size, rate, duration) to make them."""
    width, height = probe.get("width"), probe.get("height")
    fps, duration = probe.get("fps"), probe.get("duration")
    if not (width and height and fps and duration and duration > 0):
        return None
    total = probe.get("frames") or int(round(fps * duration))
    every = pair_step(total)
    made = []
    for side, clip_w, clip_h in (("input", width, height), ("output", width // 2 * 2, height // 2 * 2)):
        w, h = grey_size(clip_w, clip_h)
        made.append(Tap(scratch(f"preview_{side}.grey"), scratch(f"preview_{side}.jpg"), clip_w, w, h, every,
                        float(fps), float(duration)))
    return made[0], made[1]


def collect(pair: tuple[Tap, Tap]) -> dict[str, Any] | None:
    """``metadata["preview"]`` of the item, or None (the report then makes it) when something is missing."""
    try:
        return {"input": pair[0].measured(), "output": pair[1].measured()}
    except Exception as exc:  # numpy missing, a pass that wrote nothing: only the report's shortcut is lost
        log.info("no preview from the passes (%s); the report makes its own", exc)
        return None
    finally:
        for tap in pair:
            tap.discard()
