"""How much faster one batch ends when it is spread over several runtimes (cgpu_kit/pool.py) than on one.

Two kinds of runtime, each table measured 1, 2 and 4 runtimes side by side in one process:

- ``cgpu`` (the one that stands for a real Colab account): each runtime is a :class:`CgpuTransport` with a
  remote root of its own (its own set-up and work folders) through the stand-in ``cgpu`` of the tests
  (``tests/fakes/cgpu``), whose every call first waits ``--latency`` seconds, as a real call does. It takes
  #12's batched path: one check, one copy, one land-and-launch, polls that wait on the runtime, one cleanup.
- ``cgpu-1part``: the same with the pool's first round a whole fair share (``cgpu_kit.pool.FIRST_ROUND = 1``:
  one part per runtime, no second round to balance a slow runtime), to show what a part's overhead costs;
  its speed-up is against the ``cgpu`` one-runtime time when both run.
- ``mock``: each runtime is a :class:`cgpu_kit.testing.MockTransport` (the local transport: a put and a get per
  file, polls every 0.25 s) whose every call waits ``--latency`` seconds: mostly per-call costs that real cgpu
  no longer pays; kept for comparison with the earlier figures.

The items are the test-only ``sleepy`` job type (tests/support), each sleeping ``--seconds``, one at a time per
runtime (``workers=1``). Sleeping needs no CPU, so this runs on 2 cores. 1 runtime is the plain one-runtime
path (as ``--backend``); the speed-up is its wall time over the several-runtime one.

    python bench/bench_runtimes.py [--items 24] [--seconds 1] [--latency 1] [--runtimes 1 2 4]
                                   [--kinds cgpu cgpu-1part mock] [--no-write]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests"), str(HERE.parent / "tests" / "fakes")]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), str(HERE.parent / "tests"),
                                                         os.environ.get("PYTHONPATH")]))

import cgpu_fake  # noqa: E402
from _results import write_section  # noqa: E402
from support.sleepy import SleepyJob, tones  # noqa: E402

from cgpu_kit import CGPUJobManager, pool  # noqa: E402
from cgpu_kit.pool import FIRST_ROUND  # noqa: E402
from cgpu_kit.results import JobStatus  # noqa: E402
from cgpu_kit.testing import MockTransport  # noqa: E402
from cgpu_kit.transports.cgpu import CgpuTransport  # noqa: E402


class BenchCgpu(CgpuTransport):
    """The cgpu transport, its runtime also importing the tests' ``support`` package (the sleepy processor),
    as a plugin installed on the runtime would be; no call more or less."""

    def runtime_env(self) -> dict[str, str]:
        env = dict(super().runtime_env())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(HERE.parent / "tests")]))
        return env


def stand_in_cgpu(work: Path, latency: float) -> tuple[Path, Path]:
    """The tests' stand-in ``cgpu`` (run by this interpreter), every call ``latency`` s late; its content
    folder and call log."""
    content, calls = work / "content", work / "cgpu_calls.jsonl"
    content.mkdir(parents=True, exist_ok=True)
    launcher = work / "cgpu"
    launcher.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(HERE.parent / 'tests' / 'fakes')!r})\n"
                        "from cgpu_fake import main\nsys.exit(main(sys.argv[1:]))\n")
    launcher.chmod(0o755)
    os.environ.update(CGPU_BIN=str(launcher), CGPU_FAKE_CONTENT=str(content), CGPU_FAKE_LOG=str(calls),
                      CGPU_FAKE_LATENCY=str(latency))
    os.environ.pop("CGPU_FAKE_RULES", None)
    return content, calls


def cgpu_calls(log_path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []


def one_run(kind: str, inputs: list[Path], work: Path, runtimes: int, seconds: float,
            latency: float) -> tuple[float, dict, list[int]]:
    """Wall time, items by runtime and calls by runtime of one batch over ``runtimes`` runtimes of ``kind``."""
    CGPUJobManager.reset()
    pool.FIRST_ROUND = 1.0 if kind == "cgpu-1part" else FIRST_ROUND
    if kind.startswith("cgpu"):
        content, log_path = stand_in_cgpu(work / f"{kind}{runtimes}", latency)
        transports = [BenchCgpu(remote_root=str(content / f"rt{n}")) for n in range(runtimes)]
    else:
        transports = [MockTransport(lambda call: time.sleep(latency), remote_root=str(work / f"rt{runtimes}_{n}"))
                      for n in range(runtimes)]
    out = work / f"out_{kind}{runtimes}"
    shutil.rmtree(out, ignore_errors=True)
    job = SleepyJob(inputs, out, seconds=seconds, workers=1, runtimes=transports)
    started = time.monotonic()
    try:
        result = CGPUJobManager().run(job)
    finally:
        pool.FIRST_ROUND = FIRST_ROUND
        if kind.startswith("cgpu"):
            cgpu_fake.kill_runtime_processes(content)
    wall = time.monotonic() - started
    if result.status is not JobStatus.COMPLETED:
        failed = "; ".join(f"{Path(i.input_path).name}: {i.error}" for i in result.items if i.error)
        raise SystemExit(f"{kind}, {runtimes} runtime(s): {result.summary()} ({failed or result.error})")
    if kind.startswith("cgpu"):  # the stand-in logs every call; a call belongs to the runtime whose root it names
        calls = [0] * runtimes
        for call in cgpu_calls(log_path):
            n = next((k for k in range(runtimes) if f"rt{k}" in call["text"]), 0)
            calls[n] += 1
    else:
        calls = [len(t.calls) for t in transports]
    by_runtime = result.metadata.get("runtimes") or {transports[0].key: len(result.items)}
    names = {t.key: f"runtime {n + 1}" for n, t in enumerate(transports)}
    return wall, {names[k]: v for k, v in by_runtime.items()}, calls


def table(kind: str, rows: list[tuple[int, float, dict, list[int]]], base: float | None) -> list[str]:
    base = next((wall for n, wall, _, _ in rows if n == 1), base)
    what = {"cgpu": "the stand-in cgpu, a remote root per runtime (#12's batched calls)",
            "cgpu-1part": "the stand-in cgpu as above, one part per runtime (FIRST_ROUND = 1)",
            "mock": "MockTransport (local transport: a call per file, polls every 0.25 s)"}[kind]
    lines = [f"Runtimes through {what}:", "",
             "| runtimes | wall (s) | speed-up vs 1 runtime | calls by runtime | items by runtime |",
             "|---:|---:|---:|---|---|"]
    for n, wall, by_runtime, calls in rows:
        speed = f"{base / wall:.2f}x" if base else "-"
        lines.append(f"| {n} | {wall:.1f} | {speed} | {', '.join(map(str, calls))} | "
                     f"{', '.join(str(v) for v in by_runtime.values())} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=1.0, help="each item sleeps this long")
    ap.add_argument("--latency", type=float, default=1.0, help="each transport call waits this long first")
    ap.add_argument("--runtimes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--kinds", nargs="+", choices=["cgpu", "cgpu-1part", "mock"], default=["cgpu", "cgpu-1part", "mock"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_runtimes_"))
    tables: list[str] = []
    cgpu_base = None
    try:
        inputs = tones(work / "in", args.items)
        for kind in args.kinds:
            rows = []
            for n in args.runtimes:
                if kind == "cgpu-1part" and n == 1 and cgpu_base is not None:
                    continue  # one runtime does not use the pool: the cgpu table's time is its time
                wall, by_runtime, calls = one_run(kind, inputs, work, n, args.seconds, args.latency)
                rows.append((n, wall, by_runtime, calls))
                print(f"{kind}, {n} runtime(s): {wall:.1f}s, calls by runtime {calls}, items by runtime {by_runtime}",
                      flush=True)
            if kind == "cgpu":
                cgpu_base = next((wall for n, wall, _, _ in rows if n == 1), None)
            tables += table(kind, rows, cgpu_base if kind == "cgpu-1part" else None)
    finally:
        CGPUJobManager.reset()
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "## Several runtimes at once (`bench/bench_runtimes.py`)",
        "",
        f"`python bench/bench_runtimes.py --items {args.items} --seconds {args.seconds:g} --latency {args.latency:g}` "
        f"on {platform.machine()} with {os.cpu_count()} cores (shared with other work: load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).",
        "",
        f"{args.items} items of {args.seconds:g} s each (sleepy, one at a time per runtime), every call "
        f"{args.latency:g} s late. 1 runtime is the plain one-runtime path; several are the pool "
        "(cgpu_kit/pool.py). Each runtime's driver and kernel run on this machine.",
        "",
        *tables,
        "Goal (issue 13): >= 1.8x at 2 runtimes, >= 3.2x at 4.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section("runtimes", text)


if __name__ == "__main__":
    main()
