"""Calls and wall time per batch through the REAL cgpu client, beside the stand-in; and ``cgpu copy``'s memory.

The real cgpu 0.1.4 (built from ``../shared/vendor``, as the tests build it) talks to the Colab stand-in of
the tests (``tests/fakes/colab_runtime.py``: fake tun API and OAuth, a real jupyter_server as the runtime), and
the pty stand-in (``tests/fakes/cgpu``) runs the same batches with no added latency, side by side in one run.
Nothing crosses a network here, so the real client's figures are lower bounds of what Colab costs.
``cgpu copy``'s peak memory (node's max RSS) is measured for files of several sizes.

    python bench/bench_cgpu_real.py [--sizes 1 10 50] [--copy-mb 1 16 48] [--no-stand-in] [--json F] [--old F]

``--json F`` saves the batches' figures; ``--old F`` puts such a file's figures (the same script run on an older
cgpu_kit, e.g. ``git archive`` of the commit before into a folder, this script copied there) beside the new ones.

Writes the "cgpu-real" section of bench/RESULTS.md (right after "cgpu-calls").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fakes"))

import colab_runtime  # noqa: E402

from bench._results import write_section  # noqa: E402
from bench.bench_cgpu_calls import Runtime as StandIn  # noqa: E402
from cgpu_kit.jobs.stabilize import StabilizeJob  # noqa: E402
from cgpu_kit.manager import CGPUJobManager  # noqa: E402
from cgpu_kit.results import JobStatus  # noqa: E402
from cgpu_kit.samples import make_shaky_clip  # noqa: E402


def batch(clips: list[Path], out: Path) -> tuple[int, float]:
    CGPUJobManager.reset()
    manager = CGPUJobManager()
    started = time.monotonic()
    result = manager.run(StabilizeJob(clips, out, backend="cgpu", preset="ultrafast"))
    wall = time.monotonic() - started
    if result.status is not JobStatus.COMPLETED:
        raise SystemExit(f"the batch did not complete: {result.error}\n{result.remote_log}")
    calls = sum(s.transport.inner.calls for s in manager.sessions.values())
    CGPUJobManager.reset()
    return calls, wall


def copy_peak_mb(executable: Path, size_mb: int, work: Path, remote_root: str) -> tuple[float, float]:
    """(node's peak RSS in MB, seconds) of one ``cgpu copy`` of a file of ``size_mb`` MB, in a fresh child."""
    src = work / f"copy_{size_mb}.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(size_mb << 20))
    probe = (
        "import resource,subprocess,sys,time;t=time.monotonic();"
        "r=subprocess.run(sys.argv[1:],capture_output=True,stdin=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.monotonic()-t, r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(executable), "copy", str(src), f"{remote_root}/{src.name}"],
                         capture_output=True, text=True, check=True).stdout.split()
    src.unlink()
    if out[2] != "0":
        raise SystemExit(f"cgpu copy of {size_mb} MB failed")
    return int(out[0]) / 1024, float(out[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--copy-mb", type=int, nargs="+", default=[1, 16, 48])
    ap.add_argument("--no-stand-in", action="store_true", help="only the real client")
    ap.add_argument("--json", type=Path, help="save the batches' figures here")
    ap.add_argument("--old", type=Path, help="figures of an older cgpu_kit (--json of it) to show beside")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cgpu_dir, why = colab_runtime.real_cgpu_dir()
    if cgpu_dir is None:
        raise SystemExit(f"the real cgpu client is not available: {why}")
    os.environ.update(CGPU_KIT_POLL_INTERVAL="0.5", HF_HUB_OFFLINE="1")
    os.environ.pop("CGPU_KIT_CHUNK_SECONDS", None)
    work = Path(tempfile.mkdtemp(prefix="bench_cgpu_real_"))
    colab = colab_runtime.ColabRuntime(work, cgpu_dir)
    rows, copies = [], []
    try:
        clips = [make_shaky_clip(work / "clips" / f"clip_{n:03d}.mp4", width=160, height=120, frames=30, jitter=8,
                                 seed=n, audio=False) for n in range(max(args.sizes))]
        for size in args.sizes:
            root = f"/tmp/bench_cgpu_real_rt_{size}"
            shutil.rmtree(root, ignore_errors=True)
            os.environ.update(CGPU_BIN=str(colab.executable), CGPU_KIT_REMOTE_ROOT=root)
            real = batch(clips[:size], work / f"out_real_{size}")
            colab.recycle(root)
            shutil.rmtree(root, ignore_errors=True)
            fake = (0, 0.0)
            if not args.no_stand_in:
                stand_in = StandIn(work / f"standin_{size}", 0.0)
                try:
                    fake = batch(clips[:size], work / f"out_fake_{size}")
                finally:
                    stand_in.close()
            rows.append((size, real, fake))
            print(f"{size} clip(s): real {real[0]} calls {real[1]:.1f} s; stand-in {fake[0]} calls {fake[1]:.1f} s", flush=True)
        if args.json:
            args.json.write_text(json.dumps({str(size): [real, fake] for size, real, fake in rows}))
        root = "/tmp/bench_cgpu_real_copy"
        os.makedirs(root, exist_ok=True)
        for mb in args.copy_mb:
            peak, seconds = copy_peak_mb(colab.executable, mb, work, root)
            copies.append((mb, peak, seconds))
            print(f"cgpu copy {mb} MB: peak {peak:.0f} MB, {seconds:.2f} s", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    finally:
        colab.close()
        CGPUJobManager.reset()
        shutil.rmtree(work, ignore_errors=True)

    lines = [
        "## cgpu: the real client beside the stand-in (`bench/bench_cgpu_real.py`)\n\n"
        "The same stabilization batches (160x120, 30 frames, preset ultrafast, polling every 0.5 s) through the REAL "
        "cgpu 0.1.4 (built from `../shared/vendor`) against the tests' Colab stand-in (fake tun API and OAuth refresh, "
        "a real jupyter_server as the runtime), and through the pty stand-in `tests/fakes/cgpu` with no added latency, "
        f"one after the other in one run on {platform.machine()} with {os.cpu_count()} cores shared with other work. "
        "No network lies between them, so these are lower bounds: on Colab each call also pays its round trips to "
        "Google and the runtime (the `cgpu-calls` section above models that with 2 s a call).",
        "",
        "| clips | real cgpu: calls | real cgpu: wall | real: s per call | stand-in: calls | stand-in: wall "
        "| before (older cgpu_kit): real calls | before: real wall |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    old = json.loads(args.old.read_text()) if args.old else {}
    for size, (rc, rw), (fc, fw) in rows:
        oc, ow = old.get(str(size), [[None, None]])[0]
        lines.append(f"| {size} | {rc} | {rw:.1f} s | {rw / rc:.2f} | {fc or '-'} | {f'{fw:.1f} s' if fc else '-'} "
                     f"| {oc if oc is not None else '-'} | {f'{ow:.1f} s' if ow is not None else '-'} |")
    lines += [
        "",
        "`cgpu copy` memory: node reads the whole file, then holds its base64 and the JSON body at once "
        "(cgpu's `src/runtime/file-transfer.ts`), so its peak grows with the file: about 70 MB plus 6-7x the file. "
        "cgpu_kit never sends more than `CGPU_KIT_COPY_PIECE_BYTES` (48 MiB, the default part size) in one copy: "
        "input parts are at most `part_bytes`, and a larger file (a whisper `model.bin`) goes in verified pieces "
        "joined on the runtime, so a copy's memory stays near the 48 MB row below; lower both on a machine short "
        "of memory. The calls differ between the two clients by their polls: a batch polls while it runs, and "
        "the same batch ran at a different pace under this machine's changing load.",
        "",
        "| file | node's peak RSS | wall |",
        "| ---: | ---: | ---: |",
    ]
    for mb, peak, seconds in copies:
        lines.append(f"| {mb} MB | {peak:.0f} MB | {seconds:.2f} s |")
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        write_section("cgpu-real", markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
