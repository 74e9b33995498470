"""Which classifier on these features? Cross-validated comparisons on shared folds, best first."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import confusion_matrix

from featx.evaluate.classifiers import as_classifier, plan_classifiers
from featx.evaluate.folds import (
    check_inputs,
    fold_scores,
    format_accuracy,
    make_folds,
    summarise,
)
from featx.inputs.batches import as_image_list
from featx.models._registry import Backbone, get_backbone
from featx.options import BLAS_THREADS, N_JOBS, check


def compare_classifiers(
    X: np.ndarray,
    y: Sequence[Any],
    *,
    classifiers: Iterable[str] | Mapping[str, BaseEstimator] | None = None,
    cv: Any = 5,
    split: Sequence[str] | None = None,
    tune: bool = False,
    backbone: str | None = None,
    layer: str | None = None,
    n_jobs: int | None = None,
    blas_threads: str = "auto",
    random_state: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Cross-validate classifiers on one feature matrix, on the same folds; best first.

    Above a size where a named classifier cannot finish in reasonable time, its scalable stand-in runs
    instead (``featx.evaluate.classifiers.STAND_INS``: the linear probe for logreg, a Nystroem kernel approximation
    and a linear SVM for the RBF SVM); the ``estimator`` column says what ran, ``attrs["notes"]`` why.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
        The features.
    y : sequence
        The labels.
    classifiers : list of str, dict or None, default=None
        Names from ``featx.evaluate.classifiers.CLASSIFIERS`` (None: all five), or name -> estimator.
    cv : int, "split" or splitter, default=5
        Folds (int, stratified), ``"split"`` with ``split=`` the manifest's split, or a splitter.
    split : sequence of str or None, default=None
        With ``cv="split"``: each row's split, "train" or "test".
    tune : bool, default=False
        Wrap each named classifier in a small ``GridSearchCV`` (nested inside the outer folds).
    backbone : str or None, default=None
        Copied into the table, so tables of several feature sets concatenate.
    layer : str or None, default=None
        Copied into the table, like ``backbone``.
    n_jobs : int or None, default=None
        Folds fitted in parallel (joblib).
    blas_threads : {"auto", "keep"}, default="auto"
        "auto" fits each classifier's first fold with BLAS's default threads and with one, and runs the
        other folds on the faster (``featx.evaluate.blas``); "keep" leaves BLAS as it is.
    random_state : int, default=0
        Seeds the folds and the classifiers.
    progress : bool, default=False
        Print a line to stderr as each classifier starts and ends (fits can take minutes).

    Returns
    -------
    DataFrame
        One row per classifier: classifier, estimator, backbone, layer, n_features, n_folds,
        accuracy_mean, accuracy_std, f1_macro_mean, f1_macro_std, fit_s and predict_s (mean seconds per
        fold). ``attrs["notes"]`` says which stand-ins ran and why, ``attrs["blas"]`` what each BLAS trial
        chose.
    """
    check("blas_threads", blas_threads, BLAS_THREADS, "compare_classifiers")
    check("n_jobs", n_jobs, N_JOBS, "compare_classifiers")
    X, y = check_inputs(X, y)
    folds = make_folds(y, cv, split=split, random_state=random_state)
    n_train = max(len(train) for train, _ in folds)
    rows, notes, blas = [], [], []
    for name, (ran, estimator, why) in plan_classifiers(
        classifiers, n_train, tune=tune, random_state=random_state
    ).items():
        if why:
            notes.append(why)
        start = time.perf_counter()
        if progress:
            print(
                f"compare: {ran} on {len(folds)} fold(s) of {n_train:,} rows ...", file=sys.stderr, flush=True
            )
        scores = fold_scores(estimator, X, y, folds, n_jobs, blas_threads)
        summary = summarise(scores)
        if scores.attrs["blas"]:
            blas.append(f"{ran}: {scores.attrs['blas']}")
        if progress:
            print(f"compare: {ran} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        rows.append(
            {
                "classifier": name,
                "estimator": ran,
                "backbone": backbone,
                "layer": layer,
                "n_features": X.shape[1],
                **summary,
            }
        )
    table = (
        pd.DataFrame(rows).sort_values("accuracy_mean", ascending=False, kind="stable").reset_index(drop=True)
    )
    table.attrs["notes"], table.attrs["blas"] = notes, blas
    return table


def compare_finetuning(
    images: Any,
    y: Sequence[Any],
    *,
    backbone: str | Backbone = "efficientnet_lite0",
    weights: Any = "DEFAULT",
    unfreeze: Sequence[int] = (0, 2),
    cv: Any = 5,
    split: Sequence[str] | None = None,
    max_folds: int | None = 1,
    random_state: int = 0,
    **params: Any,
) -> pd.DataFrame:
    """Rows for [`compare_classifiers`][featx.evaluate.compare_classifiers]' table: [`FineTunedClassifier`][featx.FineTunedClassifier] trained
    on the images, head only (``unfreeze=0``) and with its last blocks, on the same folds.

    Training on a CPU costs minutes per fold, so by default only the first fold is run (``n_folds`` says
    how many were; ``max_folds=None`` runs all). ``fit_s`` is the price of each point of accuracy.
    """
    from featx.estimators.finetune import FineTunedClassifier
    from featx.models.nodes import feature_size

    images, y = as_image_list(images), np.asarray(y)
    folds = make_folds(y, cv, split=split, random_state=random_state)[:max_folds]
    spec = get_backbone(backbone)
    rows = []
    for blocks in unfreeze:
        estimator = FineTunedClassifier(
            backbone, weights=weights, unfreeze=blocks, random_state=random_state, **params
        )
        summary = summarise(fold_scores(estimator, images, y, folds, None, blas_threads="keep"))
        name = "finetune head" if blocks == 0 else f"finetune last {blocks} blocks"
        rows.append(
            {
                "classifier": name,
                "estimator": name,
                "backbone": spec.name,
                "layer": "trained",
                "n_features": feature_size(spec),
                **summary,
            }
        )
    return pd.DataFrame(rows)


def recommendation(table: pd.DataFrame) -> str:
    """One sentence: the best row, and a cheaper one if it is within one standard deviation of it."""
    best = table.loc[table["accuracy_mean"].idxmax()]
    sentence = f"Best: {best['classifier']} at {format_accuracy(best)}"
    # a single-fold row has no spread of its own: borrow the table's typical fold-to-fold noise
    tolerance = best["accuracy_std"] if pd.notna(best["accuracy_std"]) else table["accuracy_std"].median()
    tolerance = 0.0 if pd.isna(tolerance) else tolerance
    close = table[
        (table["accuracy_mean"] >= best["accuracy_mean"] - tolerance) & (table["fit_s"] < best["fit_s"] / 2)
    ]
    if len(close):
        cheap = close.loc[close["accuracy_mean"].idxmax()]
        sentence += (
            f"; {cheap['classifier']} ({format_accuracy(cheap)}) is within one standard deviation and fits "
            f"{best['fit_s'] / max(cheap['fit_s'], 1e-9):.0f}x faster"
        )
    return sentence + "."


def confusion(
    X: np.ndarray,
    y: Sequence[Any],
    classifier: str | BaseEstimator = "logreg",
    *,
    cv: Any = 5,
    split: Sequence[str] | None = None,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The confusion matrix of one classifier summed over the test folds, and its labels (row order)."""
    X, y = check_inputs(X, y)
    estimator = as_classifier(classifier, random_state=random_state, n_train=len(y))
    labels = np.unique(y)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for train, test in make_folds(y, cv, split=split, random_state=random_state):
        predicted = clone(estimator).fit(X[train], y[train]).predict(X[test])
        matrix += confusion_matrix(y[test], predicted, labels=labels)
    return matrix, labels
