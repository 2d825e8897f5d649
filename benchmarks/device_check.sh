#!/usr/bin/env bash
# The device check on a GPU machine (benchmarks/suites/device_check.py says
# what it checks and times): sets up what it needs, then runs it; its JSON
# and table land in OUTPUT_DIR.
#
#   benchmarks/device_check.sh OUTPUT_DIR [--smoke] [suite flags]
#
# Environment:
#   PYTHON  an interpreter that has everything already (the project's .venv
#           for --smoke on a CPU): nothing is installed.
#   WHEELS  a folder of wheels to install from instead of an index (machines
#           that reach none).
#   VENV    where to make the GPU virtualenv (default .venv-gpu).
# Otherwise a virtualenv is made from requirements.lock plus
# requirements-gpu.lock: TensorFlow's Linux wheel on PyPI is built with CUDA
# but loads the CUDA libraries from the nvidia-* wheels its 'and-cuda' extra
# names, which requirements-gpu.lock pins.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: benchmarks/device_check.sh OUTPUT_DIR [--smoke] [flags]}"
shift
if [ -z "${PYTHON:-}" ]; then
  venv="${VENV:-.venv-gpu}"
  index=()
  if [ -n "${WHEELS:-}" ]; then
    index=(--no-index --find-links "$WHEELS")
  fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
  "$venv/bin/python" -m pip install -q "${index[@]}" \
    -r requirements.lock -r requirements-gpu.lock
  "$venv/bin/python" -m pip install -q --no-deps -e .
  PYTHON="$venv/bin/python"
fi
exec "$PYTHON" -m benchmarks device_check --output_dir="$out" "$@"
