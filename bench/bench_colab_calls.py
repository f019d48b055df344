"""Calls and wall time per batch through Google's REAL ``colab`` client beside the REAL cgpu, in one run.

Both clients talk to the same Colab stand-in of the tests (``tests/fakes/colab_runtime.py``: fake tun API and
OAuth, a real jupyter_server as the runtime); the same stabilization batches go through each, one after the
other, alternating which goes first. Nothing crosses a network here, so the figures are lower bounds of
what Colab costs; what they compare is each client's own cost per call and the calls each transport needs.
The colab figures include its ``new`` and ``stop`` (a runtime per batch, released at the end).

    python bench/bench_colab_calls.py [--sizes 1 5] [--no-write]

Writes the "colab-vs-cgpu" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fakes"))

import colab_client  # noqa: E402
import colab_runtime  # noqa: E402

from bench._results import write_section  # noqa: E402
from cgpu_kit.jobs.stabilize import StabilizeJob  # noqa: E402
from cgpu_kit.manager import CGPUJobManager  # noqa: E402
from cgpu_kit.results import JobStatus  # noqa: E402
from cgpu_kit.samples import make_shaky_clip  # noqa: E402
from cgpu_kit.transports.colab import ColabTransport  # noqa: E402


def batch(backend: str, clips: list[Path], out: Path, kinds: collections.Counter) -> tuple[int, float]:
    """(client calls, wall seconds) of one stabilization batch, the colab session's stop included."""
    CGPUJobManager.reset()
    manager = CGPUJobManager()
    invoke = ColabTransport._invoke

    def counted(self, args, **kw):  # noqa: ANN001,ANN003
        kinds[args[0]] += 1
        return invoke(self, args, **kw)

    ColabTransport._invoke = counted
    started = time.monotonic()
    try:
        result = manager.run(StabilizeJob(clips, out, backend=backend, preset="ultrafast"))
        if result.status is not JobStatus.COMPLETED:
            raise SystemExit(f"the {backend} batch did not complete: {result.error}\n{result.remote_log}")
        calls = sum(s.transport.inner.calls for s in manager.sessions.values())
        stops = kinds["stop"]
        CGPUJobManager.reset()  # colab: `stop` releases the runtime
        calls += kinds["stop"] - stops
    finally:
        ColabTransport._invoke = invoke
    return calls, time.monotonic() - started


def startup(argv: list[str], runs: int = 3) -> float:
    """Median seconds of ``argv`` (a client's start with nothing to do), run ``runs`` times."""
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.monotonic() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--json", type=Path, help="save the batches' figures here")
    ap.add_argument("--old", type=Path, help="figures of an older cgpu_kit (--json of it) to show beside")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cgpu_dir, why = colab_runtime.real_cgpu_dir()
    if cgpu_dir is None:
        raise SystemExit(f"the real cgpu client is not available: {why}")
    python, why = colab_client.real_colab_python()
    if python is None:
        raise SystemExit(f"the real colab client is not available: {why}")
    os.environ.update(CGPU_KIT_POLL_INTERVAL="0.5")
    os.environ.pop("CGPU_KIT_CHUNK_SECONDS", None)
    work = Path(tempfile.mkdtemp(prefix="bench_colab_calls_"))
    stand_in = colab_runtime.ColabRuntime(work, cgpu_dir)
    client = colab_client.ColabClient(stand_in, python)
    os.environ.update(CGPU_BIN=str(stand_in.executable), COLAB_BIN=str(client.executable))
    rows = []
    kinds: collections.Counter = collections.Counter()
    load = []
    try:
        clips = [make_shaky_clip(work / "clips" / f"clip_{n:03d}.mp4", width=160, height=120, frames=30, jitter=8,
                                 seed=n, audio=False) for n in range(max(args.sizes))]
        for n, size in enumerate(args.sizes):
            figures = {}
            for backend in (("colab", "cgpu") if n % 2 else ("cgpu", "colab")):
                root = f"/tmp/bench_colab_calls_rt_{backend}_{size}"
                shutil.rmtree(root, ignore_errors=True)
                os.environ["CGPU_KIT_REMOTE_ROOT"] = root
                load.append(os.getloadavg()[0])
                figures[backend] = batch(backend, clips[:size], work / f"out_{backend}_{size}", kinds)
                stand_in.recycle(root)
                shutil.rmtree(root, ignore_errors=True)
                calls, wall = figures[backend]
                print(f"{size} clip(s) via {backend}: {calls} calls, {wall:.1f} s", flush=True)
            rows.append((size, figures["cgpu"], figures["colab"]))
        if args.json:
            args.json.write_text(json.dumps({str(size): [c, k] for size, c, k in rows}))
        starts = (startup(["node", str(colab_runtime.entry_point(cgpu_dir)), "--help"]),
                  startup([str(python), "-c", "import colab_cli.cli, colab_cli.commands.execution"]))
    finally:
        stand_in.close()
        CGPUJobManager.reset()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## colab vs cgpu: the two real clients on the same batches (`bench/bench_colab_calls.py`)\n\n"
        "The same stabilization batches (160x120, 30 frames, preset ultrafast, polling every 0.5 s) through the REAL "
        "cgpu 0.1.4 and Google's REAL colab 0.7.5 (google-colab-cli in a Python 3.12 venv), both against the tests' "
        "Colab stand-in (fake tun API and OAuth, a real jupyter_server as the runtime), one after the other in one "
        f"run on {platform.machine()} with {os.cpu_count()} cores shared with other work (load average "
        f"{min(load):.1f} to {max(load):.1f} at the batches' starts). No network lies between, so these are lower "
        "bounds; on Colab every call also pays round trips to Google and the runtime. The colab figures include its "
        "`new` and `stop` (a runtime per batch, released at the end).",
        "",
        "| clips | cgpu: calls | cgpu: wall | cgpu: s per call | colab: calls | colab: wall | colab: s per call "
        "| before: cgpu calls | before: colab calls |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    old = json.loads(args.old.read_text()) if args.old else {}
    for size, (cc, cw), (kc, kw) in rows:
        before = old.get(str(size), [[None], [None]])
        lines.append(f"| {size} | {cc} | {cw:.1f} s | {cw / cc:.2f} | {kc} | {kw:.1f} s | {kw / kc:.2f} "
                     f"| {before[0][0] if before[0][0] is not None else '-'} "
                     f"| {before[1][0] if before[1][0] is not None else '-'} |")
    lines += [
        "",
        "colab calls by command over all its batches: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ". "
        "A colab call starts a Python 3.12 process that imports the client (pydantic, google-auth, rich, the Jupyter "
        f"kernel client): {starts[1]:.2f} s here (median of 3, the imports alone, measured after the batches), "
        f"against {starts[0]:.2f} s for node to start cgpu (`--help`). The rest of a colab call is its own work: an "
        "`exec` checks the session, opens a websocket to the kernel and runs the client's prelude (`os.chdir`) "
        "before the snippet, and the client often lingers 10 s after its output (a reader thread), which the "
        "transport cuts to 1.5 s once its end marker is in. Finished chunks and the logs come inline with the polls "
        "(each verified by size and sha256); a file too large for that is two calls (an `exec` for its size and "
        "sha256, then `colab download`), where cgpu prints verified base64 through its terminal in one; `new` and "
        "`stop` add two per batch.",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("colab-vs-cgpu", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
