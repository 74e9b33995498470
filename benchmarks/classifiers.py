"""What each compared linear classifier costs on real features, side by side in one run.

    python benchmarks/classifiers.py        # about 1 minute once the sample features are cached

EfficientNet-Lite0 features of the 3,000 Fashion-MNIST sample images (data/make_sample_data.py), 5
stratified folds: fit seconds per fold and accuracy for logistic regression and LinearSVC with each
liblinear solver. Prints a table with the CPU model.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from featx import extract_features
from featx._machine import cpu_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    manifest = pd.read_csv(REPO / "data" / "fashion_mnist" / "manifest.csv")
    paths = [str(REPO / "data" / "fashion_mnist" / p) for p in manifest["path"]]
    X = extract_features(paths, "efficientnet_lite0", cache_dir=REPO / ".featx-cache")
    y = manifest["label"].to_numpy()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    candidates = {
        "logreg (C=0.1, lbfgs)": LogisticRegression(C=0.1, max_iter=2000),
        "LinearSVC (C=0.01, dual='auto')": LinearSVC(C=0.01, max_iter=5000),
        "LinearSVC (C=0.01, dual=True)": LinearSVC(C=0.01, dual=True, max_iter=5000),
    }
    print(f"{cpu_model()}; {X.shape[0]} images x {X.shape[1]} features, 5 folds")
    for name, estimator in candidates.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = cross_validate(make_pipeline(StandardScaler(), estimator), X, y, cv=folds)
        print(
            f"{name:>34}: fit {scores['fit_time'].mean():5.2f} s per fold, "
            f"accuracy {scores['test_score'].mean():.4f}, {len(caught)} warnings"
        )


if __name__ == "__main__":
    main()
