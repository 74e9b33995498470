"""Train a logistic regression and an RBF SVM on cached features and print test accuracy.

    python pipelines/train_classifiers.py out/fashion_mnist_efficientnet_lite0.parquet

The features file is what ``featx extract --out`` wrote; its ``split`` column picks train and test.
"""

from __future__ import annotations

import argparse

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from featx import load_features

CLASSIFIERS = {
    "logistic regression": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1)),
    "RBF SVM": lambda: make_pipeline(StandardScaler(), SVC(C=10)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", help="a .parquet or .npy file written by `featx extract --out`")
    args = parser.parse_args()
    X, meta = load_features(args.features)
    train, test = (meta["split"] == "train").to_numpy(), (meta["split"] == "test").to_numpy()
    y = meta["label"].to_numpy()
    print(f"{args.features}: {X.shape[1]} features, {train.sum()} train / {test.sum()} test images")
    for name, make in CLASSIFIERS.items():
        accuracy = make().fit(X[train], y[train]).score(X[test], y[test])
        print(f"{name:>20}: test accuracy {accuracy:.1%}")


if __name__ == "__main__":
    main()
