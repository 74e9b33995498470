"""Did transfer help at all? Pretrained features against raw pixels and random weights on the same folds,
compared with :func:`featx.evaluate.folds.corrected_paired_ttest` (Nadeau & Bengio): folds share training
data, so a plain paired t-test over folds is too optimistic."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from featx.errors import ParameterError
from featx.estimators.pixels import RawPixels
from featx.estimators.transformer import checked_transformer, extract_features
from featx.evaluate.classifiers import as_classifier
from featx.evaluate.folds import corrected_paired_ttest, fold_scores, format_accuracy, make_folds, summarise
from featx.inputs.batches import as_image_list
from featx.models._registry import Backbone, get_backbone
from featx.options import BLAS_THREADS, N_JOBS, check

BASELINES = ("pixels", "random")


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
        columns = [
            "features",
            "n_features",
            "accuracy_mean",
            "accuracy_std",
            "f1_macro_mean",
            "difference",
            "p_value",
        ]
        return (
            f"{self.summary[columns].to_string(index=False, float_format='{:.4f}'.format)}\n\n{self.verdict}"
        )


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
    n_jobs: int | None = None,
    blas_threads: str = "auto",
    random_state: int = 0,
    **params: Any,
) -> TransferReport:
    """Did pretrained features help on these images? Measure them against raw pixels and random weights.

    Features go through [`featx.extract_features`][featx.extract_features] (and ``cache_dir``, so each
    image is computed once per network and layer). Images that fail to decode are left out of every
    feature set, with a warning.

    Parameters
    ----------
    images : sequence of images
        Paths, bytes, PIL images or arrays, as [`PretrainedFeatures`][featx.PretrainedFeatures] takes them.
    y : sequence
        Their labels.
    backbones : str, Backbone or a list of them, default="efficientnet_lite0"
        Each gets its pretrained ``weights`` and, as a baseline, the same architecture with random weights
        at its last pooling layer.
    layers : None, "stages" or list of str, default=None
        None for each backbone's last pooling layer; ``"stages"`` adds its early and middle stages
        (``Backbone.stages``); or a list of node names.
    weights : str, path or None, default="DEFAULT"
        The pretrained weights of every backbone.
    baselines : sequence of str, default=("pixels", "random")
        Any of ``"pixels"`` ([`RawPixels`][featx.RawPixels] at ``pixel_size``) and ``"random"``.
    classifier : str or estimator, default="logreg"
        A name from ``featx.evaluate.classifiers.CLASSIFIERS`` or an estimator; the same for every set.
    cv : int, "split" or splitter, default=5
        The folds, as in [`compare_classifiers`][featx.evaluate.compare_classifiers]; the verdict's noise
        estimate needs cv >= 2.
    split : sequence of str or None, default=None
        With ``cv="split"``: each image's split, "train" or "test".
    dataset : str or None, default=None
        A name for the verdict sentence.
    blas_threads : {"auto", "keep"}, default="auto"
        As in [`compare_classifiers`][featx.evaluate.compare_classifiers]; ``summary.attrs["blas"]`` says
        what each trial chose.
    **params : dict
        Any other parameter of [`PretrainedFeatures`][featx.PretrainedFeatures] (``cache_dir``,
        ``device``, ``precision``, ``decoding``, ``batch_size``...), the same for every feature set.
    """
    check("blas_threads", blas_threads, BLAS_THREADS, "transfer_report")
    check("n_jobs", n_jobs, N_JOBS, "transfer_report")
    images = as_image_list(images)
    y = np.asarray(y)
    if len(images) != len(y):
        raise ParameterError(f"{len(images)} images but {len(y)} labels")
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        raise ParameterError(f"baselines={list(baselines)}: {unknown} unknown; use any of {BASELINES}")
    specs = [get_backbone(b) for b in ([backbones] if isinstance(backbones, (str, Backbone)) else backbones)]
    owned = sorted({"backbone", "layer", "on_error"} & set(params))
    if owned:
        raise ParameterError(
            f"transfer_report sets {owned} itself (from backbones= and layers=; failed images are left "
            "out); leave them out"
        )
    settings = {**params, "on_error": "nan"}
    checked_transformer("transfer_report", {**settings, "weights": weights})  # before minutes of work
    make_folds(y, cv, split=split, random_state=random_state)  # labels no fold learns from, before extracting
    sets = []
    for spec in specs:
        for layer in _layers(spec, layers):
            X = extract_features(images, spec, weights=weights, layer=layer, **settings)
            sets.append(FeatureSet("pretrained", spec.name, layer, X))
        if "random" in baselines:
            sets.append(
                FeatureSet(
                    "random init",
                    spec.name,
                    spec.node,
                    extract_features(images, spec, weights=None, **settings),
                )
            )
    if "pixels" in baselines:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # failures are reported once, below, for all sets together
            sets.append(
                FeatureSet(
                    "raw pixels", None, None, RawPixels(pixel_size, on_error="nan").fit_transform(images)
                )
            )

    usable = ~np.any([np.isnan(s.X).any(axis=1) for s in sets], axis=0)
    if not usable.all():
        warnings.warn(
            f"{int((~usable).sum())} of {len(images)} images failed to decode and are left out "
            f"of every feature set",
            stacklevel=2,
        )
    y = y[usable]
    split = None if split is None else np.asarray(split)[usable]
    folds = make_folds(y, cv, split=split, random_state=random_state)
    estimator = as_classifier(classifier, random_state=random_state, n_train=max(len(t) for t, _ in folds))

    per_fold, rows, blas = [], [], []
    for s in sets:
        scores = fold_scores(estimator, s.X[usable], y, folds, n_jobs, blas_threads)
        if scores.attrs["blas"]:
            blas.append(f"{s.label}: {scores.attrs['blas']}")
        per_fold.append(scores.assign(features=s.label, kind=s.kind))
        rows.append(
            {
                "features": s.label,
                "kind": s.kind,
                "backbone": s.backbone,
                "layer": s.layer,
                "n_features": s.X.shape[1],
                **summarise(scores),
            }
        )
    summary = pd.DataFrame(rows)
    scores = pd.concat(per_fold, ignore_index=True)
    n_train = np.mean([len(train) for train, _ in folds])
    n_test = np.mean([len(test) for _, test in folds])
    summary = _against_best_pretrained(summary, scores, n_train, n_test)
    summary.attrs["blas"] = blas
    name = classifier if isinstance(classifier, str) else type(classifier).__name__
    return TransferReport(summary, scores, _verdict(summary, name, dataset), name)


def with_finetuning(report: TransferReport, finetuned: pd.DataFrame) -> TransferReport:
    """The report with [`compare_finetuning`][featx.evaluate.compare_finetuning]'s rows added (kind
    "fine-tuned").

    Each row's ``difference`` is taken against the best pretrained set on the same first folds it ran.
    Its ``p_value`` is NaN: fine-tuning usually runs on too few folds for the paired test. The verdict
    is unchanged, because it is about frozen features.
    """
    best = report.summary.loc[report.summary["best_pretrained"], "features"].item()
    reference = report.scores[report.scores["features"] == best].sort_values("fold")["accuracy"].to_numpy()
    rows = [
        {
            "features": f"{row['backbone']} {row['classifier']}",
            "kind": "fine-tuned",
            "backbone": row["backbone"],
            "layer": row["layer"],
            "n_features": row["n_features"],
            "n_folds": row["n_folds"],
            "accuracy_mean": row["accuracy_mean"],
            "accuracy_std": row["accuracy_std"],
            "f1_macro_mean": row["f1_macro_mean"],
            "f1_macro_std": row["f1_macro_std"],
            "fit_s": row["fit_s"],
            "predict_s": row["predict_s"],
            "difference": 100 * (row["accuracy_mean"] - reference[: int(row["n_folds"])].mean()),
            "p_value": math.nan,
            "best_pretrained": False,
        }
        for _, row in finetuned.iterrows()
    ]
    summary = pd.concat([report.summary, pd.DataFrame(rows)], ignore_index=True)
    return TransferReport(summary, report.scores, report.verdict, report.classifier)


def _layers(spec: Backbone, layers: str | Sequence[str] | None) -> list[str]:
    if layers is None:
        return [spec.node]
    if isinstance(layers, str):
        if layers != "stages":
            raise ParameterError(f"layers={layers!r}; use None, 'stages' or a list of node names")
        if not spec.stages:
            raise ParameterError(
                f"backbone {spec.name!r} lists no stages to sweep; pass layers=[...] with nodes from "
                f"featx.list_nodes({spec.name!r})"
            )
        return [*spec.stages, spec.node]
    return list(layers)


def _against_best_pretrained(
    summary: pd.DataFrame, scores: pd.DataFrame, n_train: float, n_test: float
) -> pd.DataFrame:
    """Add ``difference`` (accuracy points) and ``p_value`` of each set against the best pretrained set."""
    pretrained = summary[summary["kind"] == "pretrained"]
    best = pretrained.loc[pretrained["accuracy_mean"].idxmax(), "features"]
    reference = scores.loc[scores["features"] == best, "accuracy"].to_numpy()
    differences, p_values = [], []
    for label in summary["features"]:
        accuracy = scores.loc[scores["features"] == label, "accuracy"].to_numpy()
        differences.append(100 * (accuracy.mean() - reference.mean()))
        p_values.append(
            math.nan if label == best else corrected_paired_ttest(accuracy, reference, n_train, n_test)
        )
    return summary.assign(
        difference=differences, p_value=p_values, best_pretrained=summary["features"] == best
    )


def _verdict(summary: pd.DataFrame, classifier: str, dataset: str | None) -> str:
    best = summary[summary["best_pretrained"]].iloc[0]
    baselines = summary[summary["kind"] != "pretrained"]
    where = f" on {dataset}" if dataset else ""
    subject = f"{best['backbone']} ImageNet features at {best['layer']} reach {format_accuracy(best)} with {classifier}"
    if baselines.empty:
        return f"No baseline was measured{where}: {subject}."
    rival = baselines.loc[baselines["accuracy_mean"].idxmax()]
    gain = -rival["difference"]  # the best pretrained set minus the strongest baseline, in points
    against = f"the strongest baseline, {rival['features']} ({format_accuracy(rival)})"
    folds = int(best["n_folds"])
    if folds < 2:
        return (
            f"Transfer {'helped' if gain > 0 else 'hurt'}{where} on a single train/test split: {subject}, "
            f"{gain:+.1f} points against {against}; one split cannot measure fold-to-fold noise (use cv=5)."
        )
    p = rival["p_value"]
    test = f"corrected paired t-test over {folds} folds, p = {p:.3g}"
    if p >= 0.05:
        return (
            f"Transfer made no measurable difference{where}: {subject}, {gain:+.1f} points against {against}, "
            f"within the fold-to-fold noise ({test})."
        )
    outcome, change = ("helped", "gain") if gain > 0 else ("hurt", "loss")
    return (
        f"Transfer {outcome}{where}: {subject}, {gain:+.1f} points against {against}; the {change} is "
        f"larger than the fold-to-fold noise ({test})."
    )
