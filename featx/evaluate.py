"""Experiments on features: which classifier, which layer, which backbone, and did transfer help at all?

Every comparison runs on the same folds, so differences are paired and the fold-to-fold noise can be
measured: :func:`corrected_paired_ttest` is Nadeau & Bengio's test, which accounts for the overlap of
cross-validation training sets (a plain paired t-test over folds is too optimistic).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, check_cv, cross_validate

from featx.backbones import Backbone, get_backbone
from featx.classifiers import as_classifier, resolve_classifiers
from featx.extract import extract_features
from featx.images import as_image_list
from featx.pixels import RawPixels

Folds = list[tuple[np.ndarray, np.ndarray]]
SCORING = ("accuracy", "f1_macro")
BASELINES = ("pixels", "random")


def make_folds(y: Sequence[Any], cv: Any = 5, *, split: Sequence[str] | None = None, random_state: int = 0) -> Folds:
    """Train/test index pairs: ``cv`` folds (stratified, shuffled, seeded), or ``cv='split'`` for the
    manifest's own split (``split`` holds 'train' / 'test' per row), or any scikit-learn splitter."""
    y = np.asarray(y)
    if isinstance(cv, str) and cv == "split":
        return [_split_fold(split)]
    if isinstance(cv, (int, np.integer)):
        smallest = pd.Series(y).value_counts().min()
        if cv < 2 or smallest < cv:
            raise ValueError(f"cv={cv}: need 2 <= cv <= the smallest class size ({smallest})")
        cv = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=random_state)
    return list(check_cv(cv, y, classifier=True).split(np.zeros((len(y), 1)), y))


def _split_fold(split: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray]:
    if split is None:
        raise ValueError("cv='split' needs the manifest's split column (train / test); it has none, use cv=5")
    values = pd.Series(split).astype(str).str.lower()
    unknown = sorted(set(values) - {"train", "test"})
    if unknown:
        raise ValueError(f"split column holds {unknown}; cv='split' accepts only 'train' and 'test'")
    train, test = np.flatnonzero(values == "train"), np.flatnonzero(values == "test")
    if not len(train) or not len(test):
        raise ValueError("cv='split' needs both 'train' and 'test' rows in the split column")
    return train, test


def _scores(estimator: BaseEstimator, X: np.ndarray, y: np.ndarray, folds: Folds, n_jobs: int | None) -> pd.DataFrame:
    """One row per fold: accuracy, f1_macro, fit_s, predict_s."""
    result = cross_validate(estimator, X, y, cv=folds, scoring=SCORING, n_jobs=n_jobs, error_score="raise")
    return pd.DataFrame({
        "fold": range(len(folds)),
        "accuracy": result["test_accuracy"],
        "f1_macro": result["test_f1_macro"],
        "fit_s": result["fit_time"],
        "predict_s": result["score_time"],
    })


def _summarise(scores: pd.DataFrame) -> dict[str, float]:
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


def _check_inputs(X: np.ndarray, y: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X has shape {X.shape} and y has {len(y)} labels; need (n_samples, n_features) and n labels")
    if pd.isna(y).any():
        raise ValueError(f"y has {int(pd.isna(y).sum())} missing labels; drop those rows first")
    return X, y


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
    random_state: int = 0,
) -> pd.DataFrame:
    """Cross-validate classifiers on one feature matrix, on the same folds; best first.

    Parameters
    ----------
    X, y : features (n_samples, n_features) and labels.
    classifiers : names from ``featx.classifiers.CLASSIFIERS`` (default: all five), or name -> estimator.
    cv : folds (int, stratified), ``"split"`` with ``split=`` the manifest's split, or a splitter.
    tune : wrap each named classifier in a small ``GridSearchCV`` (nested inside the outer folds).
    backbone, layer : copied into the table, so tables of several feature sets concatenate.

    Returns
    -------
    DataFrame with one row per classifier: classifier, backbone, layer, n_features, n_folds,
    accuracy_mean, accuracy_std, f1_macro_mean, f1_macro_std, fit_s and predict_s (mean seconds per fold).
    """
    X, y = _check_inputs(X, y)
    folds = make_folds(y, cv, split=split, random_state=random_state)
    rows = []
    for name, estimator in resolve_classifiers(classifiers, tune=tune, random_state=random_state).items():
        summary = _summarise(_scores(estimator, X, y, folds, n_jobs))
        rows.append({"classifier": name, "backbone": backbone, "layer": layer, "n_features": X.shape[1], **summary})
    table = pd.DataFrame(rows).sort_values("accuracy_mean", ascending=False, kind="stable")
    return table.reset_index(drop=True)


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
    """Rows for :func:`compare_classifiers`' table: :class:`featx.finetune.FineTunedClassifier` trained
    on the images, head only (``unfreeze=0``) and with its last blocks, on the same folds.

    Training on a CPU costs minutes per fold, so by default only the first fold is run (``n_folds`` says
    how many were; ``max_folds=None`` runs all). ``fit_s`` is the price of each point of accuracy.
    """
    from featx.extract import feature_size
    from featx.finetune import FineTunedClassifier

    images, y = as_image_list(images), np.asarray(y)
    folds = make_folds(y, cv, split=split, random_state=random_state)[:max_folds]
    spec = get_backbone(backbone)
    rows = []
    for blocks in unfreeze:
        estimator = FineTunedClassifier(backbone, weights, unfreeze=blocks, random_state=random_state, **params)
        summary = _summarise(_scores(estimator, images, y, folds, None))
        rows.append({"classifier": "finetune head" if blocks == 0 else f"finetune last {blocks} blocks",
                     "backbone": spec.name, "layer": "trained", "n_features": feature_size(spec), **summary})
    return pd.DataFrame(rows)


def recommendation(table: pd.DataFrame) -> str:
    """One sentence: the best row, and a cheaper one if it is within one standard deviation of it."""
    best = table.loc[table["accuracy_mean"].idxmax()]
    sentence = f"Best: {best['classifier']} at {_accuracy(best)}"
    # a single-fold row has no spread of its own: borrow the table's typical fold-to-fold noise
    tolerance = best["accuracy_std"] if pd.notna(best["accuracy_std"]) else table["accuracy_std"].median()
    tolerance = 0.0 if pd.isna(tolerance) else tolerance
    close = table[(table["accuracy_mean"] >= best["accuracy_mean"] - tolerance)
                  & (table["fit_s"] < best["fit_s"] / 2)]
    if len(close):
        cheap = close.loc[close["accuracy_mean"].idxmax()]
        sentence += (f"; {cheap['classifier']} ({_accuracy(cheap)}) is within one standard deviation and fits "
                     f"{best['fit_s'] / max(cheap['fit_s'], 1e-9):.0f}x faster")
    return sentence + "."


def _accuracy(row: pd.Series) -> str:
    spread = f" ± {100 * row['accuracy_std']:.1f}" if pd.notna(row["accuracy_std"]) else ""
    return f"{100 * row['accuracy_mean']:.1f}%{spread} accuracy"


def confusion(
    X: np.ndarray, y: Sequence[Any], classifier: str | BaseEstimator = "logreg", *, cv: Any = 5,
    split: Sequence[str] | None = None, random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The confusion matrix of one classifier summed over the test folds, and its labels (row order)."""
    X, y = _check_inputs(X, y)
    estimator = as_classifier(classifier, random_state=random_state)
    labels = np.unique(y)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for train, test in make_folds(y, cv, split=split, random_state=random_state):
        predicted = clone(estimator).fit(X[train], y[train]).predict(X[test])
        matrix += confusion_matrix(y[test], predicted, labels=labels)
    return matrix, labels


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


@dataclass
class FeatureSet:
    """One representation of the same images: pretrained features at a layer, or a baseline."""

    kind: str  # "pretrained", "random init" or "raw pixels"
    backbone: str | None
    layer: str | None
    X: np.ndarray

    @property
    def label(self) -> str:
        if self.kind == "raw pixels":
            side = round((self.X.shape[1] / 3) ** 0.5)
            return f"raw pixels {side}x{side}" if 3 * side * side == self.X.shape[1] else "raw pixels"
        return f"{self.backbone} {self.layer} ({self.kind})"


@dataclass
class TransferReport:
    """Pretrained features against baselines on the same folds, and the verdict in one sentence.

    ``summary`` has one row per feature set (``difference`` in accuracy points and ``p_value`` against the
    best pretrained set); ``scores`` one row per feature set and fold.
    """

    summary: pd.DataFrame
    scores: pd.DataFrame
    verdict: str
    classifier: str

    def __str__(self) -> str:
        columns = ["features", "n_features", "accuracy_mean", "accuracy_std", "f1_macro_mean", "difference", "p_value"]
        return f"{self.summary[columns].to_string(index=False, float_format='{:.4f}'.format)}\n\n{self.verdict}"


def transfer_report(
    images: Any,
    y: Sequence[Any],
    *,
    backbones: str | Backbone | Sequence[str | Backbone] = "efficientnet_lite0",
    layers: str | Sequence[str] | None = None,
    weights: Any = "DEFAULT",
    baselines: Sequence[str] = BASELINES,
    classifier: str | BaseEstimator = "logreg",
    cv: Any = 5,
    split: Sequence[str] | None = None,
    pixel_size: int = 32,
    dataset: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    num_workers: int | None = None,
    progress: bool = False,
    n_jobs: int | None = None,
    random_state: int = 0,
) -> TransferReport:
    """Did pretrained features help on these images? Measure them against raw pixels and random weights.

    Parameters
    ----------
    images, y : the images (paths, bytes, PIL, arrays) and their labels.
    backbones : one or several backbones; each gets its pretrained ``weights`` and, as a baseline, the
        same architecture with random weights at its last pooling layer.
    layers : None for each backbone's last pooling layer; ``"stages"`` adds its early and middle stages
        (``Backbone.stages``); or a list of node names.
    baselines : any of ``"pixels"`` (:class:`featx.RawPixels` at ``pixel_size``) and ``"random"``.
    classifier : a name from ``featx.classifiers.CLASSIFIERS`` or an estimator; the same for every set.
    cv, split : the folds, as in :func:`compare_classifiers`; the verdict's noise estimate needs cv >= 2.
    dataset : a name for the verdict sentence.

    Features go through :func:`featx.extract_features` (and ``cache_dir``, so each image is computed once
    per network and layer). Images that fail to decode are left out of every feature set, with a warning.
    """
    images = as_image_list(images)
    y = np.asarray(y)
    if len(images) != len(y):
        raise ValueError(f"{len(images)} images but {len(y)} labels")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ValueError(f"baselines={list(baselines)}: {unknown} unknown; use any of {BASELINES}")
    specs = [get_backbone(b) for b in ([backbones] if isinstance(backbones, (str, Backbone)) else backbones)]
    settings = dict(cache_dir=cache_dir, batch_size=batch_size, device=device, precision=precision,
                    num_workers=num_workers, on_error="nan", progress=progress)
    sets = []
    for spec in specs:
        for layer in _layers(spec, layers):
            X = extract_features(images, spec, weights=weights, layer=layer, **settings)
            sets.append(FeatureSet("pretrained", spec.name, layer, X))
        if "random" in baselines:
            sets.append(FeatureSet("random init", spec.name, spec.node,
                                   extract_features(images, spec, weights=None, **settings)))
    if "pixels" in baselines:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures are reported once, below, for all sets together
            sets.append(FeatureSet("raw pixels", None, None, RawPixels(pixel_size, on_error="nan").fit_transform(images)))

    usable = ~np.any([np.isnan(s.X).any(axis=1) for s in sets], axis=0)
    if not usable.all():
        warnings.warn(f"{int((~usable).sum())} of {len(images)} images failed to decode and are left out "
                      f"of every feature set", stacklevel=2)
    y = y[usable]
    split = None if split is None else np.asarray(split)[usable]
    folds = make_folds(y, cv, split=split, random_state=random_state)
    estimator = as_classifier(classifier, random_state=random_state)

    fold_scores, rows = [], []
    for s in sets:
        scores = _scores(estimator, s.X[usable], y, folds, n_jobs)
        fold_scores.append(scores.assign(features=s.label, kind=s.kind))
        rows.append({"features": s.label, "kind": s.kind, "backbone": s.backbone, "layer": s.layer,
                     "n_features": s.X.shape[1], **_summarise(scores)})
    summary = pd.DataFrame(rows)
    scores = pd.concat(fold_scores, ignore_index=True)
    n_train = np.mean([len(train) for train, _ in folds])
    n_test = np.mean([len(test) for _, test in folds])
    summary = _against_best_pretrained(summary, scores, n_train, n_test)
    name = classifier if isinstance(classifier, str) else type(classifier).__name__
    return TransferReport(summary, scores, _verdict(summary, name, dataset), name)


def with_finetuning(report: TransferReport, finetuned: pd.DataFrame) -> TransferReport:
    """The report with :func:`compare_finetuning`'s rows added (kind "fine-tuned").

    Each row's ``difference`` is taken against the best pretrained set on the same first folds it ran.
    Its ``p_value`` is NaN: fine-tuning usually runs on too few folds for the paired test. The verdict
    is unchanged, because it is about frozen features.
    """
    best = report.summary.loc[report.summary["best_pretrained"], "features"].item()
    reference = report.scores[report.scores["features"] == best].sort_values("fold")["accuracy"].to_numpy()
    rows = [{"features": f"{row['backbone']} {row['classifier']}", "kind": "fine-tuned", "backbone": row["backbone"],
             "layer": row["layer"], "n_features": row["n_features"], "n_folds": row["n_folds"],
             "accuracy_mean": row["accuracy_mean"], "accuracy_std": row["accuracy_std"],
             "f1_macro_mean": row["f1_macro_mean"], "f1_macro_std": row["f1_macro_std"], "fit_s": row["fit_s"],
             "predict_s": row["predict_s"],
             "difference": 100 * (row["accuracy_mean"] - reference[: int(row["n_folds"])].mean()),
             "p_value": math.nan, "best_pretrained": False} for _, row in finetuned.iterrows()]
    summary = pd.concat([report.summary, pd.DataFrame(rows)], ignore_index=True)
    return TransferReport(summary, report.scores, report.verdict, report.classifier)


def _layers(spec: Backbone, layers: str | Sequence[str] | None) -> list[str]:
    if layers is None:
        return [spec.node]
    if isinstance(layers, str):
        if layers != "stages":
            raise ValueError(f"layers={layers!r}; use None, 'stages' or a list of node names")
        return [*spec.stages, spec.node]
    return list(layers)


def _against_best_pretrained(summary: pd.DataFrame, scores: pd.DataFrame, n_train: float,
                             n_test: float) -> pd.DataFrame:
    """Add ``difference`` (accuracy points) and ``p_value`` of each set against the best pretrained set."""
    pretrained = summary[summary["kind"] == "pretrained"]
    best = pretrained.loc[pretrained["accuracy_mean"].idxmax(), "features"]
    reference = scores.loc[scores["features"] == best, "accuracy"].to_numpy()
    differences, p_values = [], []
    for label in summary["features"]:
        accuracy = scores.loc[scores["features"] == label, "accuracy"].to_numpy()
        differences.append(100 * (accuracy.mean() - reference.mean()))
        p_values.append(math.nan if label == best else corrected_paired_ttest(accuracy, reference, n_train, n_test))
    return summary.assign(difference=differences, p_value=p_values, best_pretrained=summary["features"] == best)


def _verdict(summary: pd.DataFrame, classifier: str, dataset: str | None) -> str:
    best = summary[summary["best_pretrained"]].iloc[0]
    baselines = summary[summary["kind"] != "pretrained"]
    where = f" on {dataset}" if dataset else ""
    subject = f"{best['backbone']} ImageNet features at {best['layer']} reach {_accuracy(best)} with {classifier}"
    if baselines.empty:
        return f"No baseline was measured{where}: {subject}."
    rival = baselines.loc[baselines["accuracy_mean"].idxmax()]
    gain = -rival["difference"]  # the best pretrained set minus the strongest baseline, in points
    against = f"the strongest baseline, {rival['features']} ({_accuracy(rival)})"
    folds = int(best["n_folds"])
    if folds < 2:
        return (f"Transfer {'helped' if gain > 0 else 'hurt'}{where} on a single train/test split: {subject}, "
                f"{gain:+.1f} points against {against}; one split cannot measure fold-to-fold noise (use cv=5).")
    p = rival["p_value"]
    test = f"corrected paired t-test over {folds} folds, p = {p:.3g}"
    if p >= 0.05:
        return (f"Transfer made no measurable difference{where}: {subject}, {gain:+.1f} points against {against}, "
                f"within the fold-to-fold noise ({test}).")
    outcome, change = ("helped", "gain") if gain > 0 else ("hurt", "loss")
    return (f"Transfer {outcome}{where}: {subject}, {gain:+.1f} points against {against}; the {change} is "
            f"larger than the fold-to-fold noise ({test}).")
