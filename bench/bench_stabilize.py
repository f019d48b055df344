"""A batch of 20 short clips through `cgpu-kit stabilize` (local runtime) against a plain loop of the same two
ffmpeg commands per clip, side by side in one run. Writes its section of bench/RESULTS.md.

    python bench/bench_stabilize.py [--clips 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import write_section  # noqa: E402

from cgpu_kit.jobs.stabilize import STABILIZE_PARAMS
from cgpu_kit.media import find_vidstab_ffmpeg, probe
from cgpu_kit.runtime.stabilize import commands, output_suffix
from cgpu_kit.samples import make_shaky_clip


def plain_loop(clips: list[Path], out: Path) -> float:
    """What a user would write: for each clip, vidstabdetect then vidstabtransform, one after the other."""
    ffmpeg, params = find_vidstab_ffmpeg(), STABILIZE_PARAMS.defaults()
    started = time.perf_counter()
    for clip in clips:
        work = out / clip.stem
        work.mkdir(parents=True)
        dest = out / (clip.stem + output_suffix(clip.name))
        for argv in commands(ffmpeg, clip, dest, params, probe(clip).to_dict()):
            subprocess.run(argv, cwd=work, check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return time.perf_counter() - started


def batch(clips: list[Path], out: Path) -> float:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "cgpu_kit", "stabilize", *map(str, clips), "-o", str(out), "-q"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the batch failed:\n{run.stderr}")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_stab_"))
    os.environ["CGPU_KIT_LOCAL_ROOT"] = str(work / "runtime")
    clips = [make_shaky_clip(work / "in" / f"clip {n:02d}.mp4", seed=n % 5, frames=50) for n in range(args.clips)]
    plain, batched = [], []
    for r in range(args.rounds):
        plain.append(plain_loop(clips, work / f"plain{r}"))
        batched.append(batch(clips, work / f"batch{r}"))
    p, b = statistics.median(plain), statistics.median(batched)
    info = probe(clips[0])
    table = (
        f"## Stabilization: batch vs plain ffmpeg loop (`bench/bench_stabilize.py`)\n\n"
        f"{args.clips} clips of {info.width}x{info.height}, {info.frames} frames each, default parameters "
        f"(preset medium), {platform.machine()} with {os.cpu_count()} cores, ffmpeg `{find_vidstab_ffmpeg()}`; "
        f"median of {args.rounds} rounds, run side by side in one run.\n\n"
        f"| run | wall time (s) | per clip (s) |\n|---|---:|---:|\n"
        f"| plain loop of the two ffmpeg commands | {p:.2f} | {p / args.clips:.3f} |\n"
        f"| `cgpu-kit stabilize` batch (local runtime, papermill, zips) | {b:.2f} | {b / args.clips:.3f} |\n\n"
        f"**batch / plain = {b / p:.2f}** (below 1 is faster; the batch runs clips side by side on the cores and "
        f"pays about 2 s of fixed cost for the notebook kernel and the zips).\n"
        f"Rounds: plain {', '.join(f'{x:.2f}' for x in plain)}; batch {', '.join(f'{x:.2f}' for x in batched)}.\n"
    )
    write_section("stabilize", table)
    print(table)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
