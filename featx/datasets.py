"""Manifests: where the images of a job are and what their labels are.

A SOURCE is a folder (class sub-folders give labels; a flat folder has none) or a CSV / Parquet file with a
``path`` column and optional ``label`` and ``split`` columns; relative paths resolve against its folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from featx.errors import ParameterError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def load_manifest(source: str | os.PathLike) -> pd.DataFrame:
    """A DataFrame with an absolute ``path`` column and, where known, ``label`` and ``split``."""
    source = Path(source).expanduser()
    if source.is_dir():
        return _folder_manifest(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source} is neither a folder of images nor a CSV / Parquet manifest")
    if source.suffix.lower() == ".parquet":
        frame = pd.read_parquet(source)
    elif source.suffix.lower() in (".csv", ".tsv", ".txt"):
        frame = pd.read_csv(source, sep="\t" if source.suffix.lower() == ".tsv" else ",")
    else:
        raise ParameterError(f"{source}: a manifest must be .csv, .tsv or .parquet (or pass a folder)")
    if "path" not in frame.columns:
        raise ParameterError(f"{source} has columns {list(frame.columns)}; a manifest needs a 'path' column")
    root = source.parent.resolve()
    frame = frame.copy()
    frame["path"] = [str(p if Path(p).is_absolute() else root / p) for p in frame["path"].astype(str)]
    return frame.reset_index(drop=True)


def is_features_file(path: str | os.PathLike) -> bool:
    """True for what ``featx extract --out`` writes (a ``.npy``, or a Parquet file with a features column)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return True
    if path.suffix.lower() != ".parquet" or not path.is_file():
        return False
    import pyarrow.parquet as pq

    from featx.feature_files import FEATURES_COLUMN

    return FEATURES_COLUMN in pq.read_schema(path).names


def _folder_manifest(folder: Path) -> pd.DataFrame:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        rows = [(str(f), c.name) for c in classes for f in sorted(c.rglob("*")) if _is_image_name(f)]
        frame = pd.DataFrame(rows, columns=["path", "label"])
    else:
        frame = pd.DataFrame({"path": [str(f) for f in sorted(folder.iterdir()) if _is_image_name(f)]})
    if frame.empty:
        raise ParameterError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    frame["path"] = [str(Path(p).resolve()) for p in frame["path"]]
    return frame


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and not path.is_dir()
