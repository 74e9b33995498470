"""The folds and per-fold scores every comparison shares: the same folds for every feature set and
classifier make their differences paired, so the fold-to-fold noise can be measured."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.model_selection import StratifiedKFold, check_cv, cross_validate

from featx.errors import ParameterError
from featx.evaluate.blas import run_folds

Folds = list[tuple[np.ndarray, np.ndarray]]


SCORING = ("accuracy", "f1_macro")


def make_folds(
    y: Sequence[Any], cv: Any = 5, *, split: Sequence[str] | None = None, random_state: int = 0
) -> Folds:
    """Train/test index pairs: ``cv`` folds (stratified, shuffled, seeded), or ``cv='split'`` for the
    manifest's own split (``split`` holds 'train' / 'test' per row), or any scikit-learn splitter.

    Labels no classifier can learn from (missing, fewer than two classes, a fold whose training rows hold
    one class) are refused here, in featx's words, for every comparison that shares these folds."""
    y = _learnable(y)
    _check_cv(cv)
    if isinstance(cv, str) and cv == "split":
        return _two_classes_to_train([_split_fold(split)], y, "the split's")
    if isinstance(cv, (int, np.integer)):
        counts = pd.Series(y).value_counts()
        smallest = int(counts.min())
        if cv < 2 or smallest < cv:
            fix = f"pass cv={smallest} or fewer (--cv), or add images" if smallest >= 2 else "add images"
            raise ParameterError(
                f"cv={cv}: {cv}-fold cross-validation needs 2 <= cv <= the smallest class size, and class "
                f"{_label(counts.idxmin())} has {smallest} image(s); {fix}"
            )
        cv = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=random_state)
    folds = list(check_cv(cv, y, classifier=True).split(np.zeros((len(y), 1)), y))
    return _two_classes_to_train(folds, y, "a fold's")


def _check_cv(cv: Any) -> None:
    """Refuse a ``cv`` that is no number of folds, ``'split'`` or splitter in featx's words: a bool would be
    read as 1 fold ("True-fold"), and a float or other string reaches scikit-learn's ``ValueError``."""
    if isinstance(cv, (bool, np.bool_, str, float, np.floating)) and not (
        isinstance(cv, str) and cv == "split"
    ):
        raise ParameterError(
            f"cv={_label(cv)} is not a number of folds: pass an integer >= 2 (5-fold cross-validation: cv=5), "
            "'split' for the manifest's own split, or a scikit-learn splitter"
        )


def _learnable(y: Sequence[Any]) -> np.ndarray:
    """``y`` as a 1-D array of two classes or more, none missing; otherwise one line saying what it holds."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ParameterError(f"y has shape {y.shape}; pass one label per image (a 1-D sequence)")
    missing = pd.isna(y)
    if missing.any():
        raise ParameterError(
            f"y has {int(missing.sum())} missing label(s) (None or NaN; first: row "
            f"{int(np.flatnonzero(missing)[0])}); drop those rows or label them"
        )
    classes = pd.unique(y)
    if len(classes) < 2:
        held = f"hold one class, {_label(classes[0])}, in all {len(y)} rows" if len(classes) else "are empty"
        raise ParameterError(
            f"the labels (y) {held}; telling classes apart needs two classes or more: add images of "
            "another class"
        )
    return y


def _label(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _two_classes_to_train(folds: Folds, y: np.ndarray, whose: str) -> Folds:
    """The folds, if each fold's training rows hold two classes or more (a splitter's folds need not)."""
    for number, (train, _) in enumerate(folds, 1):
        held = pd.unique(y[train])
        if len(held) < 2:
            name = whose if len(folds) == 1 else f"fold {number} of {len(folds)}:"
            raise ParameterError(
                f"{name} training rows hold {f'one class, {_label(held[0])}' if len(held) else 'no rows'}; a "
                "classifier needs two classes to learn from: put images of each class on the training side"
            )
    return folds


def _split_fold(split: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    if split is None:
        raise ParameterError(
            "cv='split' needs the manifest's split column (train / test); it has none, use cv=5"
        )
    blank = pd.Series(split).isna().to_numpy()
    if blank.any():
        raise ParameterError(
            f"the split column is empty for {int(blank.sum())} row(s) (first: row "
            f"{int(np.flatnonzero(blank)[0])}); fill in train or test, or use cv=5"
        )
    values = pd.Series(split).astype(str).str.lower()
    unknown = sorted(set(values) - {"train", "test"})
    if unknown:
        raise ParameterError(f"split column holds {unknown}; cv='split' accepts only 'train' and 'test'")
    train, test = np.flatnonzero(values == "train"), np.flatnonzero(values == "test")
    if not len(train) or not len(test):
        raise ParameterError("cv='split' needs both 'train' and 'test' rows in the split column")
    return train, test


def fold_scores(
    estimator: BaseEstimator,
    X: np.ndarray,
    y: np.ndarray,
    folds: Folds,
    n_jobs: int | None,
    blas_threads: str = "auto",
) -> pd.DataFrame:
    """One row per fold: accuracy, f1_macro, fit_s, predict_s. With ``blas_threads="auto"`` the folds run
    on the BLAS threads a trial on the first fold chose (``featx.evaluate.blas``); ``attrs["blas"]`` says
    what it chose and why (None where no trial ran)."""

    def run(some: Folds) -> dict[str, np.ndarray]:
        return cross_validate(estimator, X, y, cv=some, scoring=SCORING, n_jobs=n_jobs, error_score="raise")

    result, why = run_folds(run, folds, n_jobs, blas_threads)
    scores = pd.DataFrame(
        {
            "fold": range(len(folds)),
            "accuracy": result["test_accuracy"],
            "f1_macro": result["test_f1_macro"],
            "fit_s": result["fit_time"],
            "predict_s": result["score_time"],
        }
    )
    scores.attrs["blas"] = why
    return scores


def corrected_paired_ttest(a: Sequence[float], b: Sequence[float], n_train: float, n_test: float) -> float:
    """Two-sided p-value that per-fold scores ``a`` and ``b`` differ (Nadeau & Bengio, 2003).

    The variance of the paired differences is inflated by ``n_test / n_train``: folds share training data,
    so they are not independent samples. NaN with fewer than two folds.
    """
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    k = len(differences)
    if k < 2:
        return math.nan
    variance = differences.var(ddof=1)
    if variance == 0:
        return 0.0 if differences.mean() != 0 else 1.0
    t = differences.mean() / math.sqrt((1 / k + n_test / n_train) * variance)
    return float(2 * stats.t.sf(abs(t), df=k - 1))


def summarise(scores: pd.DataFrame) -> dict[str, float]:
    std = scores.std(ddof=1) if len(scores) > 1 else scores.std().mul(np.nan)
    return {
        "n_folds": len(scores),
        "accuracy_mean": scores["accuracy"].mean(),
        "accuracy_std": std["accuracy"],
        "f1_macro_mean": scores["f1_macro"].mean(),
        "f1_macro_std": std["f1_macro"],
        "fit_s": scores["fit_s"].mean(),
        "predict_s": scores["predict_s"].mean(),
    }


def check_inputs(X: np.ndarray, y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ParameterError(
            f"X has shape {X.shape} and y has {len(y)} labels; need (n_samples, n_features) and n labels"
        )
    if pd.isna(y).any():
        raise ParameterError(f"y has {int(pd.isna(y).sum())} missing labels; drop those rows first")
    return X, y


def format_accuracy(row: pd.Series) -> str:
    spread = f" ± {100 * row['accuracy_std']:.1f}" if pd.notna(row["accuracy_std"]) else ""
    return f"{100 * row['accuracy_mean']:.1f}%{spread} accuracy"
