"""How much faster one batch ends when it is spread over several runtimes (cgpu_kit/pool.py) than on one.

Each runtime is a :class:`cgpu_kit.testing.MockTransport` (the local runtime's real driver and kernel in a
folder of its own) whose every call first waits ``--latency`` seconds, as a cgpu call to Colab does; the
items are the test-only ``sleepy`` job type (tests/support), each sleeping ``--seconds``, one at a time per
runtime (``workers=1``). Sleeping needs no CPU, so this runs on 2 cores. The same inputs run on 1 runtime
(the plain one-runtime path, as ``--backend``) and on 2 and 4 side by side, in one process, one after the
other; the speed-up is the one-runtime wall time over the several-runtime one.

    python bench/bench_runtimes.py [--items 24] [--seconds 1] [--latency 1] [--runtimes 1 2 4] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), str(HERE.parent / "tests"),
                                                         os.environ.get("PYTHONPATH")]))

from _results import write_section  # noqa: E402
from support.sleepy import SleepyJob  # noqa: E402

from cgpu_kit import CGPUJobManager  # noqa: E402
from cgpu_kit.results import JobStatus  # noqa: E402
from cgpu_kit.testing import MockTransport  # noqa: E402


def tones(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        path = folder / f"tone {k}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i * (k + 1) * 0.05))) for i in range(400)))
        out.append(path)
    return out


def one_run(inputs: list[Path], work: Path, runtimes: int, seconds: float, latency: float) -> tuple[float, dict, int]:
    CGPUJobManager.reset()
    transports = [MockTransport(lambda call: time.sleep(latency), remote_root=str(work / f"rt{runtimes}_{n}"))
                  for n in range(runtimes)]
    out = work / f"out{runtimes}"
    shutil.rmtree(out, ignore_errors=True)
    job = SleepyJob(inputs, out, seconds=seconds, workers=1, runtimes=transports)
    started = time.monotonic()
    result = CGPUJobManager().run(job)
    wall = time.monotonic() - started
    if result.status is not JobStatus.COMPLETED:
        raise SystemExit(f"{runtimes} runtime(s): {result.summary()}")
    calls = sum(len(t.calls) for t in transports)
    by_runtime = result.metadata.get("runtimes") or {transports[0].key: len(result.items)}
    names = {t.key: f"runtime {n + 1}" for n, t in enumerate(transports)}
    return wall, {names[k]: v for k, v in by_runtime.items()}, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=1.0, help="each item sleeps this long")
    ap.add_argument("--latency", type=float, default=1.0, help="each transport call waits this long first")
    ap.add_argument("--runtimes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_runtimes_"))
    try:
        inputs = tones(work / "in", args.items)
        rows = []
        for n in args.runtimes:
            wall, by_runtime, calls = one_run(inputs, work, n, args.seconds, args.latency)
            rows.append((n, wall, by_runtime, calls))
            print(f"{n} runtime(s): {wall:.1f}s, {calls} calls, items by runtime {by_runtime}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next(wall for n, wall, _, _ in rows if n == 1)
    lines = [
        "## Several runtimes at once (`bench/bench_runtimes.py`)",
        "",
        f"`python bench/bench_runtimes.py --items {args.items} --seconds {args.seconds:g} --latency {args.latency:g}` "
        f"on {platform.machine()} with {os.cpu_count()} cores (shared with other work: load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).",
        "",
        f"{args.items} items of {args.seconds:g} s each (sleepy, one at a time per runtime), every transport call "
        f"{args.latency:g} s late; each runtime a MockTransport with the local runtime's real driver and kernel. "
        "1 runtime is the plain one-runtime path; several are the pool (parts of about 1/(2*runtimes) of the batch, "
        "shrinking toward the end).",
        "",
        "| runtimes | wall (s) | speed-up vs 1 runtime | transport calls | items by runtime |",
        "|---:|---:|---:|---:|---|",
    ]
    for n, wall, by_runtime, calls in rows:
        spread = ", ".join(f"{v}" for v in by_runtime.values())
        lines.append(f"| {n} | {wall:.1f} | {base / wall:.2f}x | {calls} | {spread} |")
    lines += [
        "",
        "Goal (issue 13): >= 1.8x at 2 runtimes, >= 3.2x at 4. What a part costs besides its items decides it: each "
        "part-job uploads, starts the runtime's kernel and driver, polls and fetches its logs (about 15-25 calls, "
        "and a papermill kernel start that takes 10-25 s on a loaded 2-core machine, 4 at once when 4 runtimes "
        "start). The one-runtime path pays that once; the pool pays it once per part, and parts of 1-s items "
        "cannot hide it. The pool sizes parts no smaller than that measured overhead is worth "
        "(cgpu_kit/pool.py, part_size); where the speed-up stays under the goal, that overhead is why. Fewer calls per part "
        "(the transports' work) and a runtime "
        "whose kernel starts elsewhere than on this machine's 2 cores (a real Colab runtime) are what move it.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("runtimes", text)


if __name__ == "__main__":
    main()
