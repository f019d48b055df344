"""How long after ``cgpu-kit stabilize`` starts the batch's first item starts (local runtime), for one or more
source trees run in turn (``--tree``: a checkout of cgpu_kit put first on PYTHONPATH), rounds interleaved so that
the machine's changing speed falls on each tree alike. Prints the runs and their medians; writes nothing.

The first item's start is the item loop's ``N items side by side`` line in the job's runtime.log (the executed
notebook's log), stamped by the driver; the CLI's start is stamped here just before it is spawned.

``python bench/bench_first_item.py --tree /tmp/before --tree . --rounds 5``

``--kernel`` measures the part the kernel's launch ahead (runtime/prespawn.py) changes, with less of the rest's
noise: in a fresh interpreter, as the driver does it, from the interpreter's start to the kernel's first reply,
with the kernel launched before jupyter_client is imported and adopted, and without (kernel.start alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*items side by side", re.M)


def first_item_after(tree: Path, clips: list[Path], out: Path) -> float:
    """Seconds from the CLI's spawn to the first item's start, for one batch run with ``tree``'s cgpu_kit."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    started = time.time()
    run = subprocess.run([sys.executable, "-m", "cgpu_kit", "stabilize", *map(str, clips), "-o", str(out), "-q"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"the batch failed with {tree}:\n{run.stderr}")
    log = next(out.glob("_cgpu_kit/job_*/runtime.log")).read_text()
    stamp = dt.datetime.strptime(_LINE.search(log).group(1), "%Y-%m-%d %H:%M:%S,%f")
    return stamp.timestamp() - started  # the driver logs local time, as datetime reads it


_KERNEL_RUN = """
import sys, time
from pathlib import Path
from cgpu_kit.runtime import kernel, prespawn
work = Path(sys.argv[1])
pre = prespawn.spawn(work, "python3") if sys.argv[2] == "ahead" else None
km = kernel.start(work, "python3", pre)
kc = km.client()
kc.start_channels()
from jupyter_core.utils import run_sync
run_sync(kc.wait_for_ready)(timeout=60)
print(time.time())
kc.stop_channels()
kernel.stop(km)
"""


def kernel_ready_after(how: str, work: Path) -> float:
    """Seconds from a fresh interpreter's spawn to its kernel's first reply (``how``: "ahead" or "plain")."""
    started = time.time()
    run = subprocess.run([sys.executable, "-c", _KERNEL_RUN, str(work), how], capture_output=True, text=True, check=True)
    return float(run.stdout.split()[-1]) - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", type=Path, help="a cgpu_kit source tree (repeat to compare)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--kernel", action="store_true", help="only the kernel's start, launched ahead or not")
    args = ap.parse_args()
    if args.kernel:
        work = Path(tempfile.mkdtemp(prefix="bench_kernel_"))
        ready: dict[str, list[float]] = {"ahead": [], "plain": []}
        for _ in range(args.rounds):
            for how, xs in ready.items():
                xs.append(kernel_ready_after(how, work))
        print(f"the kernel's first reply after the interpreter's start ({args.rounds} rounds interleaved, load "
              f"average {os.getloadavg()[0]:.1f} at the end)")
        for how, xs in ready.items():
            print(f"{how}: median {statistics.median(xs):.3f} s; runs {', '.join(f'{x:.2f}' for x in xs)}")
        return
    trees = [t.resolve() for t in (args.tree or [HERE.parent])]
    sys.path.insert(0, str(trees[-1]))
    from cgpu_kit.samples import make_shaky_clip

    work = Path(tempfile.mkdtemp(prefix="bench_first_item_"))
    os.environ["CGPU_KIT_LOCAL_ROOT"] = str(work / "runtime")
    clips = [make_shaky_clip(work / "in" / f"clip {n:02d}.mp4", seed=n % 5, frames=50) for n in range(args.clips)]
    runs: dict[Path, list[float]] = {t: [] for t in trees}
    for r in range(args.rounds):
        for n, tree in enumerate(trees):
            runs[tree].append(first_item_after(tree, clips, work / f"out{r}_{n}"))
    print(f"first item's start after the CLI's ({args.clips} clips, {args.rounds} rounds interleaved, "
          f"load average {os.getloadavg()[0]:.1f} at the end)")
    for tree, xs in runs.items():
        print(f"{tree}: median {statistics.median(xs):.2f} s; runs {', '.join(f'{x:.2f}' for x in xs)}")


if __name__ == "__main__":
    main()
