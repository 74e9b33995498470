"""What each compared linear classifier costs on real features, side by side in one run.

    python benchmarks/classifiers.py        # about 1.5 minutes once the sample features are cached

EfficientNet-Lite0 features of the 3,000 Fashion-MNIST sample images (data/make_sample_data.py), 5
stratified folds: fit seconds per fold and accuracy for logistic regression and LinearSVC with each
liblinear solver, each timed twice, interleaved: with BLAS's default thread count and with one BLAS thread
(on some CPUs OpenBLAS's threads slow these small fits several-fold). Prints a table with the CPU model.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_info, threadpool_limits

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
    threads = max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
    print(f"{cpu_model()}; {X.shape[0]} images x {X.shape[1]} features, 5 folds; BLAS threads {threads}")
    for name, estimator in candidates.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = cross_validate(make_pipeline(StandardScaler(), estimator), X, y, cv=folds)
            with threadpool_limits(1, user_api="blas"):
                single = cross_validate(make_pipeline(StandardScaler(), estimator), X, y, cv=folds)
        print(
            f"{name:>34}: fit {scores['fit_time'].mean():5.2f} s per fold "
            f"({single['fit_time'].mean():5.2f} s with one BLAS thread, "
            f"{scores['fit_time'].mean() / single['fit_time'].mean():.1f}x), "
            f"accuracy {scores['test_score'].mean():.4f}, {len(caught)} warnings"
        )
    default, single = products_seconds(X), products_seconds(X, threads=1)
    print(
        f"{'the products alone':>34}: {default:5.3f} s ({single:5.3f} s with one BLAS thread, "
        f"{default / single:.1f}x): X @ W and X.T @ G, ten times, at the fold's shape"
    )


def products_seconds(X, threads: int | None = None, repeats: int = 3) -> float:
    """Best of ``repeats``: the two matrix products an L-BFGS step of a 10-class fit makes, ten times."""
    X = StandardScaler().fit_transform(X[: len(X) * 4 // 5]).astype(np.float64)
    W, G = np.ones((X.shape[1], 10)), np.ones((len(X), 10))
    best = float("inf")
    with threadpool_limits(threads, user_api="blas"):
        for _ in range(repeats + 1):  # the first warms up
            start = time.perf_counter()
            for _ in range(10):
                X @ W, X.T @ G
            best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    main()
