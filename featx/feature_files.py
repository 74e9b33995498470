"""Feature files: what ``featx extract --out`` writes and :func:`load_features` reads back.

Parquet holds the manifest columns, the content key and a fixed-size float32 list column ``features``;
the extractor's fingerprint rides in the schema metadata. ``.npy`` writes the matrix and a sibling
``.meta.csv``. Both are written in chunks, so a job over N images never holds N vectors in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featx.errors import ParameterError

FEATURES_COLUMN = "features"


def write_features(
    path: str | os.PathLike,
    chunks: Iterable[tuple[pd.DataFrame, np.ndarray]],
    n_features: int,
    n_rows: int,
    fingerprint: Mapping[str, Any],
) -> Path:
    """Write (meta, vectors) chunks to ``.parquet`` or ``.npy`` (+ ``.meta.csv``), atomically."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    if path.suffix == ".parquet":
        _write_parquet(tmp, chunks, n_features, fingerprint)
    elif path.suffix == ".npy":
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_rows, n_features))
        metas, start = [], 0
        for meta, vectors in chunks:
            matrix[start : start + len(vectors)] = vectors
            start += len(vectors)
            metas.append(meta)
        matrix.flush()
        del matrix
        meta_frame = pd.concat(metas, ignore_index=True) if metas else pd.DataFrame()
        meta_frame.to_csv(_npy_meta_path(path), index=False)
    else:
        raise ParameterError(f"--out {path}: use a .parquet or .npy file name")
    os.replace(tmp, path)
    return path


def _write_parquet(tmp: Path, chunks: Iterable[tuple[pd.DataFrame, np.ndarray]], n_features: int,
                   fingerprint: Mapping[str, Any]) -> None:
    writer: pq.ParquetWriter | None = None
    try:
        for meta, vectors in chunks:
            values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
            table = pa.Table.from_pandas(meta.reset_index(drop=True), preserve_index=False).append_column(
                FEATURES_COLUMN, pa.FixedSizeListArray.from_arrays(values, n_features)
            )
            if writer is None:
                schema = table.schema.with_metadata({"featx": json.dumps(dict(fingerprint), sort_keys=True)})
                writer = pq.ParquetWriter(tmp, schema)
            writer.write_table(table.cast(writer.schema))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ParameterError("no vectors to write: every input failed")


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, pd.DataFrame]:
    """Read what ``featx extract --out`` wrote: ``(X, meta)``, X an (n, d) float32 array.

    ``meta`` has the manifest columns (path, label, split where known) and ``key``; for Parquet its
    ``attrs["featx"]`` holds the extractor fingerprint (backbone, weights, node, pooling, precision).
    """
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False), pd.read_csv(_npy_meta_path(path))
    table = pq.read_table(path)
    column = table.column(FEATURES_COLUMN).combine_chunks()
    width = column.type.list_size
    X = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width).astype(np.float32, copy=False)
    meta = table.drop([FEATURES_COLUMN]).to_pandas()
    raw = (table.schema.metadata or {}).get(b"featx")
    meta.attrs["featx"] = json.loads(raw) if raw else {}
    return X, meta


def _npy_meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".meta.csv")
