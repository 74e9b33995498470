"""One self-contained HTML page for a comparison: what was compared, on what, and whether transfer helped.

The page has no scripts, stylesheets or images from elsewhere (the figure is an inline PNG), so it opens
from a file, an e-mail attachment or a CI artifact, with no server and no network.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from featx._files import temporary_sibling
from featx._machine import cpu_model
from featx.feature_files import check_output_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from featx.evaluate import TransferReport

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .7em; border-bottom: 1px solid #eee; }
th { text-align: left; background: #f5f5f5; } td { font-variant-numeric: tabular-nums; }
.verdict { font-size: 1.1em; padding: .8em 1em; background: #eef5ff; border-left: 4px solid #3a7bd5; }
img { max-width: 100%; } .notes { color: #555; } .scroll { overflow-x: auto; }
"""


def html_report(
    table: pd.DataFrame,
    setup: Mapping[str, Any],
    *,
    report: TransferReport | None = None,
    figure: Figure | None = None,
    title: str = "featx comparison",
) -> str:
    """The page as a string: setup, verdict, comparison table (with the estimator that ran), the
    transfer report's table, and the figure inline."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if report is not None:
        parts.append(f'<p class="verdict" id="verdict">{html.escape(report.verdict)}</p>')
    parts.append("<h2>Setup</h2>" + _key_values(setup))
    parts.append("<h2>Classifiers</h2>" + _frame(table))
    notes = table.attrs.get("notes", [])
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    if report is not None:
        columns = ["features", "n_features", "accuracy_mean", "accuracy_std", "difference", "p_value"]
        parts.append("<h2>Did transfer help?</h2>" + _frame(report.summary[columns]))
    if figure is not None:
        parts.append(
            f'<h2>Figures</h2><img id="figure" alt="comparison figure" src="{_png_data_uri(figure)}">'
        )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def setup_of(fingerprint: Mapping[str, Any], *, n_images: int, n_classes: int, folds: str) -> dict[str, Any]:
    """What a reader needs to reproduce the numbers: network, data size, folds, software and machine."""
    from featx import __version__

    keys = ("backbone", "weights", "node", "pooling", "precision")
    return {
        **{k: fingerprint.get(k, "?") for k in keys},
        "images": n_images,
        "classes": n_classes,
        "folds": folds,
        "featx": __version__,
        "cpu": cpu_model(),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_html(path: str | os.PathLike, page: str) -> Path:
    """Write the page (atomically: a temporary sibling, then a rename)."""
    path = check_output_path(path, (".html", ".htm"), "--html")
    with temporary_sibling(path, "--html") as tmp:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
    return path


def _frame(frame: pd.DataFrame) -> str:
    table = frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="", border=0)
    return f'<div class="scroll">{table}</div>'


def _key_values(values: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in values.items()
    )
    return f"<table>{rows}</table>"


def _png_data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
