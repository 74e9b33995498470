"""LinearProbe against scikit-learn on real cached features, and the RBF SVM against its stand-in.

    python benchmarks/probe.py                          # all 70,000 Fashion-MNIST images, lite0 features
    python benchmarks/probe.py --images 10000 --skip-synthetic   # a quicker run
    python benchmarks/probe.py --skip-synthetic --skip-logreg --svm-rows 5000 10000 20000   # the SVM threshold
    python benchmarks/probe.py --skip-real --skip-logreg                # the SVM on the synthetic matrix only
    python benchmarks/probe.py --skip-svm --n-jobs -1                   # on a GPU machine: the logistic part

Caching the features of all 70,000 images is a one-off of about half an hour on 2 CPU cores; the cache
(.featx-cache/) is reused by every later run. Side by side, in one process, it prints:

1. LinearProbe vs make_pipeline(StandardScaler(), LogisticRegression(lbfgs)) at the same C: fit seconds,
   test accuracy, agreement of predictions (goal: within 0.3 points at >= 10x less time);
2. LinearProbe's C path (warm starts, one validation split) vs GridSearchCV over the same grid (3 folds);
3. the RBF SVC (the estimator `featx compare` runs as "svm") vs its stand-in (Nystroem + LinearSVC) at
   each of --svm-rows (default 10,000 and all training rows): fit and predict seconds, test accuracy. The
   SVC runs up to 20,000 rows only; beyond that it takes hours, and the stand-in runs alone;
4. the same for a synthetic 50k x 2048 matrix (--skip-synthetic leaves it out).

``LinearProbe`` runs where ``device="auto"`` puts it (the GPU when there is one; the table names it);
scikit-learn runs on the CPU, GridSearchCV on ``--n-jobs`` processes. Rows go to
benchmarks/results/probe.csv with the CPU and GPU models.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "data"))

from make_sample_data import FASHION_DIR, read_idx  # noqa: E402

from featx import LinearProbe, extract_features  # noqa: E402
from featx._machine import cpu_model  # noqa: E402
from featx.evaluate.classifiers import STAND_INS, make_classifier  # noqa: E402
from featx.models.devices import resolve_device  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
GRID = [0.001, 0.01, 0.1, 1.0]


def fashion_features(n_images: int, cache: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(X, y, n_train) for the first images of train then test, EfficientNet-Lite0 features, cached."""
    parts = []
    for prefix in ("train", "t10k"):
        parts.append(
            (
                read_idx(FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz"),
                read_idx(FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz"),
            )
        )
    images = np.concatenate([p[0] for p in parts])[:n_images]
    labels = np.concatenate([p[1] for p in parts])[:n_images]
    n_train = min(len(parts[0][0]), int(n_images * 6 / 7))
    start = time.perf_counter()
    X = extract_features(list(images), "efficientnet_lite0", cache_dir=cache, progress=True)
    print(
        f"features: {X.shape} in {time.perf_counter() - start:.0f} s (cached after the first run)", flush=True
    )
    return X, labels, n_train


def timed(estimator, X, y):
    start = time.perf_counter()
    estimator.fit(X, y)
    return estimator, time.perf_counter() - start


SVC_MAX_ROWS = 20_000


def compare(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    n_train: int,
    svm_rows: list[int],
    logreg: bool = True,
    n_jobs: int | None = None,
) -> list[dict]:
    train, test = slice(0, n_train), slice(n_train, None)
    rows = []

    def row(task, method, seconds, estimator, **extra):
        start = time.perf_counter()
        accuracy = estimator.score(X[test], y[test])
        predict_s = time.perf_counter() - start
        rows.append(
            {
                "data": name,
                "task": task,
                "method": method,
                "fit_s": seconds,
                "predict_s": predict_s,
                "accuracy": accuracy,
                **extra,
            }
        )
        print(
            f"{name:>16} {task:<22} {method:<34} {seconds:9.1f} s  predict {predict_s:6.1f} s  "
            f"accuracy {accuracy:.4f}",
            flush=True,
        )
        return estimator

    if logreg:
        logistic_regression(X, y, train, test, row, n_jobs)
    for n in svm_rows:
        subset = slice(0, min(n, n_train))
        stand_in, t_stand_in = timed(STAND_INS["svm"].build(0), X[subset], y[subset])
        row(f"rbf svm, {n:,} rows", STAND_INS["svm"].name, t_stand_in, stand_in)
        if n <= SVC_MAX_ROWS:
            svc, t_svc = timed(make_classifier("svm"), X[subset], y[subset])
            row(f"rbf svm, {n:,} rows", "SVC (rbf)", t_svc, svc, speedup=t_svc / t_stand_in)
    return rows


def logistic_regression(X, y, train, test, row, n_jobs: int | None) -> None:
    """LinearProbe vs scikit-learn at one C, then its C path vs GridSearchCV; ``row`` records each fit."""
    device = resolve_device("auto").type
    probe, t_probe = timed(LinearProbe(C=0.1), X[train], y[train])
    row("logreg C=0.1", f"LinearProbe (torch L-BFGS, {device})", t_probe, probe)
    sklearn, t_sklearn = timed(
        make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)), X[train], y[train]
    )
    agree = float((sklearn.predict(X[test]) == probe.predict(X[test])).mean())
    row(
        "logreg C=0.1",
        "LogisticRegression (lbfgs)",
        t_sklearn,
        sklearn,
        agreement=agree,
        speedup=t_sklearn / t_probe,
    )
    path, t_path = timed(LinearProbe(Cs=GRID), X[train], y[train])
    row(f"C in {GRID}", f"LinearProbe path ({device}, C_={path.C_})", t_path, path)
    search, t_search = timed(
        GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
            {"logisticregression__C": GRID},
            cv=3,
            n_jobs=n_jobs,
        ),
        X[train],
        y[train],
    )
    row(
        f"C in {GRID}",
        f"GridSearchCV lbfgs (C={search.best_params_['logisticregression__C']})",
        t_search,
        search,
        speedup=t_search / t_path,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=70_000)
    parser.add_argument("--cache", default=str(REPO / ".featx-cache"))
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-real", action="store_true", help="only the synthetic matrix")
    parser.add_argument("--skip-logreg", action="store_true", help="only the RBF SVM and its stand-in")
    parser.add_argument("--skip-svm", action="store_true", help="only LinearProbe and LogisticRegression")
    parser.add_argument("--svm-rows", type=int, nargs="+", help="training rows (default: 10,000 and all)")
    parser.add_argument("--n-jobs", type=int, help="GridSearchCV's processes (default: 1)")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {gpu}", flush=True)
    rows = []
    if not args.skip_real:
        X, y, n_train = fashion_features(args.images, Path(args.cache))
        svm_rows = [] if args.skip_svm else args.svm_rows or [10_000, n_train]
        rows += compare(f"fashion {len(X):,}", X, y, n_train, svm_rows, not args.skip_logreg, args.n_jobs)
    if not args.skip_synthetic:
        Xs, ys = make_classification(
            60_000,
            2048,
            n_informative=256,
            n_classes=10,
            n_clusters_per_class=2,
            class_sep=2.0,
            random_state=0,
        )
        svm_rows = [] if args.skip_svm else args.svm_rows or [10_000, 50_000]
        rows += compare(
            "synthetic 50k x 2048",
            Xs.astype(np.float32),
            ys,
            50_000,
            svm_rows,
            not args.skip_logreg,
            args.n_jobs,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows).assign(cpu=cpu_model(), cores=os.cpu_count(), gpu=gpu)
    out = RESULTS / "probe.csv"
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(frame.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
