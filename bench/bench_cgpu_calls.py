"""How many ``cgpu`` calls, and how long, a batch costs through the cgpu transport, against one job per clip.

Runs real stabilization batches (tiny 160x120 clips, 30 frames, preset ultrafast) through the stand-in
``cgpu`` of the tests (``tests/fakes/cgpu``), whose every call waits ``--latency`` seconds first, as a real
call does while it refreshes the login, finds the runtime and opens a terminal. The stand-in's "runtime" is
this machine, so processing time is this machine's; what the figures show is how the number of calls, and
so the wall time, grows with the batch.

- batch: one job for N clips, on a fresh runtime (set-up included).
- one job per clip: N single-clip jobs through one manager (the first one sets the runtime up). Measured
  in full for N <= --full-per-clip; above, the first job and a sample of later jobs are measured and the
  rest extrapolated from the sample's mean (the table says which).

The table goes to the "cgpu-calls" section of bench/RESULTS.md. The same batches through the REAL cgpu
client, beside this stand-in, and ``cgpu copy``'s memory: ``bench/bench_cgpu_real.py`` (section "cgpu-real").

    python bench/bench_cgpu_calls.py [--sizes 1 10 50] [--latency 2] [--sample 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fakes"))

import cgpu_fake  # noqa: E402

from bench._results import write_section  # noqa: E402
from cgpu_kit.jobs.stabilize import StabilizeJob  # noqa: E402
from cgpu_kit.manager import CGPUJobManager  # noqa: E402
from cgpu_kit.results import JobStatus  # noqa: E402
from cgpu_kit.samples import make_shaky_clip  # noqa: E402


def classify(call: dict) -> str:
    text = call["text"]
    if call["cmd"] == "copy":
        return "upload (copy)"
    if "cgpu_kit.runtime.status" in text:
        return "poll"
    if ".landed" in text:  # verifies and unpacks the zips, then launches (a later batch's also checks first)
        return "launch"
    if "df -Pk" in text:  # folders, free space, what is there, the set-up marker (and the standby's start)
        return "check"
    if "cgpu_kit.runtime.driver" in text:
        return "launch"
    if "cgpu_kit_runtime" in text:
        return "set-up"
    if "exec(base64" in text:
        return "download"
    if "sha256sum" in text:
        return "upload (check)"
    if "rm -rf" in text:
        return "cleanup"
    return "other"


class Runtime:
    """A fresh stand-in runtime: content folder, call log, launcher run by this interpreter."""

    def __init__(self, base: Path, latency: float) -> None:
        self.base = base
        self.root = base / "content"
        self.root.mkdir(parents=True)
        self.log = base / "calls.jsonl"
        launcher = base / "cgpu"
        launcher.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT / 'tests' / 'fakes')!r})\n"
            "from cgpu_fake import main\nsys.exit(main(sys.argv[1:]))\n"
        )
        launcher.chmod(0o755)
        os.environ.update(
            CGPU_BIN=str(launcher), CGPU_FAKE_CONTENT=str(self.root), CGPU_KIT_REMOTE_ROOT=str(self.root),
            CGPU_FAKE_LOG=str(self.log), CGPU_FAKE_LATENCY=str(latency),
        )
        os.environ.pop("CGPU_FAKE_RULES", None)

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def close(self) -> None:
        cgpu_fake.kill_runtime_processes(self.root)


def run_job(clips: list[Path], out: Path, runtime: Runtime) -> tuple[int, float, Counter]:
    before = len(runtime.calls())
    started = time.monotonic()
    result = CGPUJobManager().run(StabilizeJob(clips, out, backend="cgpu", preset="ultrafast"))
    wall = time.monotonic() - started
    if result.status is not JobStatus.COMPLETED:
        raise SystemExit(f"the batch did not complete: {result.error}\n{result.remote_log}")
    calls = runtime.calls()[before:]
    return len(calls), wall, Counter(classify(c) for c in calls)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--latency", type=float, default=2.0, help="seconds every cgpu call waits before it starts")
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between two polls (CGPU_KIT_POLL_INTERVAL)")
    ap.add_argument("--sample", type=int, default=3, help="single-clip jobs measured after the first one")
    ap.add_argument("--full-per-clip", type=int, default=1, help="measure one job per clip in full up to this N")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ["CGPU_KIT_POLL_INTERVAL"] = str(args.poll)
    os.environ.pop("CGPU_KIT_CHUNK_SECONDS", None)

    work = Path(tempfile.mkdtemp(prefix="bench_cgpu_calls_"))
    try:
        largest = max(args.sizes)
        clips = [make_shaky_clip(work / "clips" / f"clip_{n:03d}.mp4", width=160, height=120, frames=30, jitter=8,
                                 seed=n, audio=False) for n in range(max(largest, args.sample + 1))]
        rows, kinds = [], {}
        for size in args.sizes:
            CGPUJobManager.reset()
            runtime = Runtime(work / f"batch_{size}", args.latency)
            try:
                calls, wall, kind = run_job(clips[:size], work / f"out_batch_{size}", runtime)
            finally:
                runtime.close()
            kinds[size] = kind
            rows.append({"size": size, "batch_calls": calls, "batch_wall": wall})
            print(f"batch of {size}: {calls} calls, {wall:.1f}s  {dict(kind)}", flush=True)

        CGPUJobManager.reset()
        runtime = Runtime(work / "per_clip", args.latency)
        per_job: list[tuple[int, float]] = []
        try:
            wanted = max(min(largest, args.full_per_clip), args.sample + 1)
            for n in range(wanted):
                calls, wall, _ = run_job([clips[n]], work / f"out_single_{n}", runtime)
                per_job.append((calls, wall))
                print(f"single-clip job {n + 1}: {calls} calls, {wall:.1f}s", flush=True)
        finally:
            runtime.close()
        first, later = per_job[0], per_job[1:]
        mean_calls = statistics.mean(c for c, _ in later)
        mean_wall = statistics.mean(w for _, w in later)
        for row in rows:
            n = row["size"]
            if n <= len(per_job):
                row["clip_calls"] = sum(c for c, _ in per_job[:n])
                row["clip_wall"] = sum(w for _, w in per_job[:n])
                row["clip_how"] = "measured"
            else:
                row["clip_calls"] = first[0] + (n - 1) * mean_calls
                row["clip_wall"] = first[1] + (n - 1) * mean_wall
                row["clip_how"] = f"first job + {n - 1} x mean of {len(later)} measured later jobs"
    finally:
        CGPUJobManager.reset()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## cgpu: calls and wall time per batch (`bench/bench_cgpu_calls.py`)\n\n"
        f"Stabilization of tiny clips (160x120, 30 frames, preset ultrafast) through the cgpu transport and the "
        f"stand-in `cgpu` (`tests/fakes/cgpu`) with **{args.latency:g} s of latency per call**, polling every "
        f"{args.poll:g} s, output chunks every 30 s (the default). The stand-in's runtime is this machine "
        f"({platform.machine()}, {os.cpu_count()} cores, shared with other work), so the clips are processed here; "
        "the figures to read are the calls. Each batch starts on a fresh runtime (set-up included); the one-job-per-"
        "clip runs share one manager, so only their first job sets the runtime up.",
        "",
        "| clips | batch: cgpu calls | batch: wall | one job per clip: cgpu calls | one job per clip: wall | per-clip figures |",
        "| ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['batch_calls']} | {r['batch_wall']:.0f} s | {r['clip_calls']:.0f} | "
            f"{r['clip_wall']:.0f} s | {r['clip_how']} |"
        )
    order = ["check", "set-up", "upload (check)", "upload (copy)", "launch", "poll", "download", "cleanup", "other"]
    lines += ["", "Calls of each batch by purpose:", "",
              "| clips | " + " | ".join(order) + " |", "| ---: |" + " ---: |" * len(order)]
    for size, kind in kinds.items():
        lines.append(f"| {size} | " + " | ".join(str(kind.get(k, 0)) for k in order) + " |")
    lines += ["", f"Single-clip jobs measured: {len(per_job)} (first {per_job[0][0]} calls / {per_job[0][1]:.0f} s, "
              f"later ones {mean_calls:.1f} calls / {mean_wall:.0f} s on average). "
              "A batch's files travel together: one check (folders, free space, sizes and sha256, the set-up marker; "
              "it starts the batch's standby driver), then side by side one copy of a zip of what is missing (the "
              "shipped cgpu_kit too on a fresh runtime) and one command that waits for it, verifies, unpacks, sets up "
              "and launches; polls wait on the runtime up to 20 s for news and bring chunks and logs inline, so they "
              "grow with the batch's duration, not its number of clips; the last one brings the end and moves the "
              "batch's folder to the runtime's trash (no cleanup call). A later job on the same runtime folds the "
              "check into its land command."]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("cgpu-calls", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
