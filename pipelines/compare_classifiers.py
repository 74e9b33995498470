"""An experiment definition to copy and edit: which classifier, which layer, and did transfer help?

    python pipelines/compare_classifiers.py                       # the Fashion-MNIST sample
    python pipelines/compare_classifiers.py data/digits/manifest.csv --name digits

Edit the settings below. Features go through the on-disk cache, so a second run (or ``featx compare`` on
the same images) computes nothing. Writes ``out/<name>.csv``, ``out/<name>.transfer.csv`` and
``out/<name>.png`` and prints the verdict.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from featx import extract_features, get_backbone
from featx.evaluate import compare_classifiers, confusion, recommendation, transfer_report
from featx.evaluate.figures import comparison_figure, save_png
from featx.inputs.manifests import load_manifest

# --- the experiment ------------------------------------------------------------------------------------
BACKBONES = [
    "efficientnet_lite0"
]  # add "resnet50", "vgg16" ... (torchvision weights: internet or TORCH_HOME)
LAYERS = "stages"  # None: the last pooling layer only; "stages": early, middle and last; or a list of nodes
CLASSIFIERS = ["logreg", "linsvm", "svm", "knn", "rf"]
CV = 5  # stratified folds; "split" uses the manifest's train/test split (no noise estimate)
TUNE = False  # grid-search each classifier's regularisation inside every fold
CACHE = ".featx-cache"
OUT = Path("out")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("manifest", nargs="?", default="data/fashion_mnist/manifest.csv")
    parser.add_argument("--name", default="fashion_mnist", help="prefix of the output files")
    args = parser.parse_args()

    manifest = load_manifest(args.manifest)
    paths, labels = manifest["path"].tolist(), manifest["label"].astype(str).to_numpy()

    tables = []
    for backbone in BACKBONES:
        X = extract_features(paths, backbone, cache_dir=CACHE, progress=True)
        tables.append(
            compare_classifiers(
                X,
                labels,
                classifiers=CLASSIFIERS,
                cv=CV,
                tune=TUNE,
                split=manifest.get("split"),
                backbone=backbone,
                layer=get_backbone(backbone).node,
            )
        )
    table = pd.concat(tables).sort_values("accuracy_mean", ascending=False, ignore_index=True)
    print(table.to_string(index=False, float_format="{:.4f}".format))
    print(recommendation(table))

    best, best_backbone = table.iloc[0]["classifier"], table.iloc[0]["backbone"]
    report = transfer_report(
        paths,
        labels,
        backbones=BACKBONES,
        layers=LAYERS,
        classifier=best,
        cv=CV,
        split=manifest.get("split"),
        dataset=args.name,
        cache_dir=CACHE,
        progress=True,
    )
    print(f"\n{report}")

    OUT.mkdir(exist_ok=True)
    table.to_csv(OUT / f"{args.name}.csv", index=False)
    report.summary.to_csv(OUT / f"{args.name}.transfer.csv", index=False)
    X_best = extract_features(paths, best_backbone, cache_dir=CACHE)
    figure = comparison_figure(
        table, confusion(X_best, labels, best, cv=CV, split=manifest.get("split")), report
    )
    print(f"plot: {save_png(figure, OUT / f'{args.name}.png')}")


if __name__ == "__main__":
    main()
