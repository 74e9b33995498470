#!/usr/bin/env bash
# The main job on the bundled sample data, about 5 minutes on 2 CPU cores (the first run also installs,
# about 3 minutes more): write 3,000 Fashion-MNIST images, cache their EfficientNet-Lite0 ImageNet features,
# compare five classifiers by 5-fold cross-validation and ask whether transfer helped (against raw pixels
# and random weights): a table, a sentence, a plot and one HTML page.
#   bash pipelines/demo.sh                      # efficientnet_lite0 (real ImageNet weights, offline)
#   BACKBONE=resnet50 bash pipelines/demo.sh    # any backbone (torchvision weights need internet or TORCH_HOME)
set -euo pipefail
cd "$(dirname "$0")/.."
BACKBONE=${BACKBONE:-efficientnet_lite0}
stage() { echo "== demo $1/5: $2" >&2; }
stage 1 "install (project environment .venv/ unless one is active; a few minutes the first time)"
bash .ci/install
source .ci/env.sh
stage 2 "write the sample images under data/ (Fashion-MNIST from apt, digits from scikit-learn)"
"$PYTHON" data/make_sample_data.py
mkdir -p out
stage 3 "cache $BACKBONE features of 3,000 images in .featx-cache/ (1-2 minutes on 2 cores; nothing on a re-run)"
"$PYTHON" -m featx extract data/fashion_mnist/manifest.csv --backbone "$BACKBONE" \
  --cache .featx-cache --out "out/fashion_mnist_${BACKBONE}.parquet"
stage 4 "compare 5 classifiers by 5-fold cross-validation, then the transfer report (2-3 minutes)"
"$PYTHON" -m featx compare "out/fashion_mnist_${BACKBONE}.parquet" --cache .featx-cache --report \
  --out "out/fashion_mnist_${BACKBONE}.csv" --plot "out/fashion_mnist_${BACKBONE}.png" \
  --html "out/fashion_mnist_${BACKBONE}.html"
stage 5 "done: table out/fashion_mnist_${BACKBONE}.csv, plot out/fashion_mnist_${BACKBONE}.png"
echo "open the report: out/fashion_mnist_${BACKBONE}.html"
