"""A stabilize batch on a two-worker Dask LocalCluster against the local backend, side by side in one run;
writes its section of bench/RESULTS.md.

Both sides run the same clips with the same parameters, alternating, each round into a fresh output folder.
The Dask side pays what a cluster pays (a kernel start per part, the parts and outputs travelling as bytes
through the scheduler); the cluster is started once, before the rounds, as a lab's cluster is already up.
On a machine of few cores expect little or no speed-up: the figure that matters there is the overhead.

    python bench/bench_dask.py [--clips 20] [--rounds 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _results import write_section  # noqa: E402

from cgpu_kit import CGPUJobManager, run  # noqa: E402
from cgpu_kit.cluster import close_all  # noqa: E402
from cgpu_kit.samples import make_shaky_clip  # noqa: E402


def timed_batch(clips: list[Path], out: Path, **options: object) -> float:
    CGPUJobManager.reset()
    started = time.perf_counter()
    result = run("stabilize", clips, out, **options)
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"the batch failed: {result.error}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import distributed

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["CGPU_KIT_LOCAL_ROOT"] = str(root / "runtime")
        clips = [make_shaky_clip(root / "in" / f"clip {n:02d}.mp4", seed=n) for n in range(args.clips)]
        started = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
        cluster_start = time.perf_counter() - started
        local, dask = [], []
        loads = [os.getloadavg()[0]]
        try:
            for r in range(args.rounds):
                local.append(timed_batch(clips, root / f"local{r}"))
                dask.append(timed_batch(clips, root / f"dask{r}", backend="dask", scheduler=cluster.scheduler_address))
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}: local {local[-1]:.1f}s, dask {dask[-1]:.1f}s", flush=True)
        finally:
            close_all()
            cluster.close()
    lo, da = statistics.median(local), statistics.median(dask)
    write_section("dask", f"""
## Dask: a stabilize batch on a {args.workers}-worker LocalCluster vs the local backend (`bench/bench_dask.py`)

{args.clips} small shaky clips (cgpu_kit.samples, 2.4 s each), default parameters, {args.rounds} round(s),
the two sides alternating in one run; median wall time of `cgpu_kit.run("stabilize", ...)`. Machine:
{os.cpu_count()} cores ({platform.machine()}), {time.strftime('%Y-%m-%d')}; the cluster started once
({cluster_start:.1f} s, not counted). Load average (1 min) during the run: {min(loads):.1f} to {max(loads):.1f}
on {os.cpu_count()} cores: above the core count, other work shared the machine and the figures are rough.

| backend | wall time (median) | rounds |
|---|---|---|
| local (one runtime, items side by side) | {lo:.1f} s | {', '.join(f'{x:.1f}' for x in local)} |
| dask, {args.workers} worker processes | {da:.1f} s | {', '.join(f'{x:.1f}' for x in dask)} |

dask / local: **{da / lo:.2f}** (below 1: the cluster is faster). Both sides share the same cores here, so a
LocalCluster cannot add compute: what it shows is the cost of the Dask path (a kernel start per part, parts
and outputs as bytes through the scheduler). On a real cluster each worker brings its own machine.
""")
    print(f"local {lo:.1f}s, dask {da:.1f}s, ratio {da / lo:.2f}")


if __name__ == "__main__":
    main()
