"""What a report costs: the motion measure against full-resolution phase correlation on every frame, and the
whole stabilize preview (contact sheets + motion of input and output) per item.

``python bench/bench_report.py [--width 1280 --height 720 --frames 250 --rounds 2]`` writes its section of
bench/RESULTS.md. The "output" of the preview timing is a second generated clip with less jitter (its cost is
the same as a stabilized clip's: same size and length), so no stabilization run is needed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _results import write_section  # noqa: E402
from media_checks import mean_shift  # noqa: E402

from cgpu_kit.motion import measure  # noqa: E402
from cgpu_kit.report import write_report  # noqa: E402
from cgpu_kit.results import ItemResult, ItemStatus, JobResult, JobStatus  # noqa: E402
from cgpu_kit.samples import make_shaky_clip  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        size = dict(width=args.width, height=args.height, frames=args.frames)
        shaky = make_shaky_clip(work / "shaky.mp4", jitter=16, **size)
        calm = make_shaky_clip(work / "calm.mp4", jitter=2, **size)
        full, sampled, page = [], [], []
        for _ in range(args.rounds):
            t, full_mean = timed(lambda: mean_shift(shaky))
            full.append(t)
            t, motion = timed(lambda: measure(shaky))
            sampled.append(t)
            item = ItemResult(str(shaky), ItemStatus.DONE, [str(calm)])
            result = JobResult(True, str(work), {"job_type": "stabilize", "params": {}}, status=JobStatus.COMPLETED,
                               job_id="bench", items=[item])
            t, path = timed(lambda result=result: write_report(result, work))
            page.append(t)
        f, s, p = (statistics.median(x) for x in (full, sampled, page))
        load = os.getloadavg()[0]
        md = f"""## Report: the cost of a stabilize preview (`bench/bench_report.py`)

One clip of {args.width}x{args.height}, {args.frames} frames, {platform.machine()} with {os.cpu_count()} cores;
median of {args.rounds} rounds, both sides in the same run (load average {load:.1f} at the end).

| measure | time (s) | mean shift (px) |
|---|---:|---:|
| full-resolution phase correlation on every frame (tests/media_checks.py) | {f:.2f} | {full_mean:.2f} |
| `cgpu_kit.motion.measure` (frames downscaled to 256 wide, at most 150 pairs) | {s:.2f} | {motion.mean:.2f} |
| the whole preview of one item: 2 contact sheets + motion of input and output, page written | {p:.2f} | |

**measure / full = {s / f:.2f}**; the report page of one item is {path.stat().st_size / 1e3:.0f} kB.
"""
        write_section("report", md)
        print(md)


if __name__ == "__main__":
    main()
