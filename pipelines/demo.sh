#!/usr/bin/env bash
# The main job on the bundled sample data: install, write 3,000 Fashion-MNIST images, cache their
# EfficientNet-Lite0 ImageNet features, then train a logistic regression and an SVM and print accuracies.
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
"$PYTHON" pipelines/train_classifiers.py "out/fashion_mnist_${BACKBONE}.parquet"
