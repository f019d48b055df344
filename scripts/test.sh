#!/usr/bin/env bash
# The whole test suite: ruff first, then unit and end-to-end tests, then every notebook and template through nbmake.
# Two pytest workers (pytest-xdist), each taking whole files: most tests wait on clients, latencies and kernels
# rather than on the CPU, so two of them side by side take 10 minutes on 2 cores where one alone takes 17.
# (pytest-benchmark, where installed, is left out: the suite has no benchmarks, and it warns under xdist.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check cgpu_kit tests bench
python3 -m pytest -q -n 2 --dist loadfile -p no:benchmark --nbmake tests notebooks templates
