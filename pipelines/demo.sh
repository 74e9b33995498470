#!/usr/bin/env bash
# The main job on the bundled sample data: install, write 3,000 Fashion-MNIST images, cache their
# EfficientNet-Lite0 ImageNet features, then compare five classifiers by 5-fold cross-validation and ask
# whether transfer helped (against raw pixels and random weights): a table, a sentence and a plot.
#   bash pipelines/demo.sh                      # efficientnet_lite0 (real ImageNet weights, offline)
#   BACKBONE=resnet50 bash pipelines/demo.sh    # any backbone (torchvision weights need internet or TORCH_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
BACKBONE=${BACKBONE:-efficientnet_lite0}
PYTHON=${PYTHON:-python3}
bash .ci/install
"$PYTHON" data/make_sample_data.py
mkdir -p out
"$PYTHON" -m featx extract data/fashion_mnist/manifest.csv --backbone "$BACKBONE" \
  --cache .featx-cache --out "out/fashion_mnist_${BACKBONE}.parquet"
"$PYTHON" -m featx compare "out/fashion_mnist_${BACKBONE}.parquet" --cache .featx-cache --report \
  --out "out/fashion_mnist_${BACKBONE}.csv" --plot "out/fashion_mnist_${BACKBONE}.png"
