#!/usr/bin/env bash
# The whole test suite: ruff first, then unit and end-to-end tests, then every notebook and template through nbmake.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check cgpu_kit tests bench
python3 -m pytest -q --nbmake tests notebooks templates
