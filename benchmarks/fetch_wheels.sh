#!/usr/bin/env bash
# Downloads, into .whl/, the wheels a GPU machine without package access needs beyond JAX,
# PyTorch and the usual scientific stack: ml_collections (configs). benchmarks/gpu_suite.sh
# installs them when ml_collections is missing there; `.whl/` is git-ignored.
#
#   bash benchmarks/fetch_wheels.sh [PYTHON_VERSION]      # default 3.12, the target's Python
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
mkdir -p .whl
# ml_collections is pure Python; its needs (absl-py, PyYAML) are on such machines already.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform any -d .whl "ml_collections==1.1.0"
ls -l .whl
