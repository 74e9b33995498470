"""Figures for comparisons and transfer reports (matplotlib: ``pip install 'featx[plots]'``).

Figures are built with ``matplotlib.figure.Figure``, not pyplot, so they work the same in a script, a
headless job and a notebook (where a returned figure displays itself).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from featx._files import atomic_write, local_path
from featx.errors import OutputError, ParameterError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from featx.evaluate import TransferReport

KIND_COLOURS = {
    "pretrained": "tab:blue",
    "random init": "tab:grey",
    "raw pixels": "tab:orange",
    "fine-tuned": "tab:green",
}


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("plots need matplotlib: pip install 'featx[plots]'") from error
    return Figure


def plot_accuracy(table: pd.DataFrame, ax: Axes) -> None:
    """Mean accuracy per classifier with its fold-to-fold standard deviation as error bars."""
    labels = table["classifier"].astype(str)
    if table["backbone"].nunique(dropna=True) > 1 or table["layer"].nunique(dropna=True) > 1:
        labels = labels + " · " + table["backbone"].astype(str) + " " + table["layer"].astype(str)
    ax.barh(
        labels,
        100 * table["accuracy_mean"],
        xerr=100 * table["accuracy_std"].fillna(0),
        color="tab:blue",
        capsize=3,
    )
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%), mean ± std over folds")
    ax.set_title("classifiers")
    _zoom(ax, 100 * table["accuracy_mean"], 100 * table["accuracy_std"].fillna(0))


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], ax: Axes, title: str = "confusion") -> None:
    """Counts summed over the test folds (rows: true label, columns: predicted)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay(matrix, display_labels=[str(label) for label in labels])
    display.plot(ax=ax, colorbar=False, xticks_rotation="vertical", values_format="d")
    ax.set_title(title)


def plot_transfer(report: TransferReport, ax: Axes) -> None:
    """Accuracy of every feature set (layers, backbones, baselines), coloured by kind."""
    summary = report.summary
    colours = [KIND_COLOURS.get(kind, "tab:purple") for kind in summary["kind"]]
    ax.barh(
        summary["features"],
        100 * summary["accuracy_mean"],
        xerr=100 * summary["accuracy_std"].fillna(0),
        color=colours,
        capsize=3,
    )
    ax.invert_yaxis()
    ax.set_xlabel(f"accuracy (%) with {report.classifier}, mean ± std over folds")
    ax.set_title("transfer report: pretrained vs baselines")
    _zoom(ax, 100 * summary["accuracy_mean"], 100 * summary["accuracy_std"].fillna(0))


def _zoom(ax: Axes, means: pd.Series, stds: pd.Series) -> None:
    low = max(0.0, float((means - stds).min()) - 5)
    ax.set_xlim(low, min(100.0, float((means + stds).max()) + 2))


def comparison_figure(
    table: pd.DataFrame | None = None,
    confusion: tuple[np.ndarray, Sequence[str]] | None = None,
    report: TransferReport | None = None,
) -> Figure:
    """One figure, one panel per part given: classifier accuracies, the best one's confusion, the report."""
    Figure = _figure_class()
    panels = [part for part in (table, confusion, report) if part is not None]
    if not panels:
        raise ParameterError(
            "nothing to plot: pass a comparison table, a confusion matrix or a transfer report"
        )
    figure = Figure(figsize=(6.5 * len(panels), 5.5), layout="constrained")
    axes = iter(figure.subplots(1, len(panels), squeeze=False)[0])
    if table is not None:
        plot_accuracy(table, next(axes))
    if confusion is not None:
        best = (
            table.loc[table["layer"] != "trained", "classifier"].iloc[0]
            if table is not None
            else "classifier"
        )
        plot_confusion(*confusion, next(axes), title=f"confusion of {best} (all test folds)")
    if report is not None:
        plot_transfer(report, next(axes))
    return figure


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    """Write the figure as a PNG, whole or not at all (parent folders created)."""
    path = local_path(path, "--plot")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--plot: cannot write in {path.parent}: {error.strerror or error}") from None
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100), "--plot")
    return path
