"""Feature files: what ``featx extract --out`` writes and :func:`load_features` reads back.

Parquet holds the manifest columns, the content key and a fixed-size float32 list column ``features``;
the extractor's fingerprint rides in the schema metadata. ``.npy`` writes the matrix and a sibling
``.meta.csv``. Both are written in chunks, so a job over N images never holds N vectors in memory.

Writes go to temporary siblings that are renamed into place only when complete; a failed write (a full
disk) removes them and leaves the previous file as it was. The ``.npy`` pair is committed by removing
the old ``.meta.csv`` first, then renaming the matrix, then the new ``.meta.csv``: an interrupted commit
leaves a matrix without its meta file, which :func:`load_features` refuses, never a mismatched pair.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featx._files import local_path, temporary_sibling
from featx.errors import OutputError, ParameterError

FEATURES_COLUMN = "features"
SUFFIXES = (".parquet", ".npy")


def check_output_path(
    path: str | os.PathLike, suffixes: Iterable[str] = SUFFIXES, what: str = "--out"
) -> Path:
    """Refuse, before any work, an output that is a URL, whose suffix is wrong or whose folder cannot take a
    new file."""
    path = local_path(path, what)
    suffixes = tuple(suffixes)
    if path.suffix.lower() not in suffixes:
        raise ParameterError(f"{what} {path}: use a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    check_writable_folder(path.parent, what)
    return path


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Create and remove a file in ``folder``: the only check that also holds for root and read-only mounts."""
    folder = Path(folder)
    probe = folder / f".tmp-featx-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise OutputError(f"{what}: cannot write in {folder}: {error.strerror or error}") from None


def printable_path(path: str) -> str:
    """A path as UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) become ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def write_features(
    path: str | os.PathLike,
    chunks: Iterable[tuple[pd.DataFrame, np.ndarray]],
    n_features: int,
    n_rows: int,
    fingerprint: Mapping[str, Any],
    columns: pd.DataFrame,
) -> Path:
    """Write (meta, vectors) chunks to ``.parquet`` or ``.npy`` (+ ``.meta.csv``), atomically.

    ``columns`` (an empty frame with the meta columns and dtypes) gives the schema when there are no rows:
    a job whose every input failed still writes a valid, empty file in either format.
    """
    path = check_output_path(path)
    if path.suffix.lower() == ".parquet":
        with temporary_sibling(path, "--out") as tmp:
            _write_parquet(tmp, chunks, n_features, fingerprint, columns)
            os.replace(tmp, path)
        return path
    meta_path = _npy_meta_path(path)
    with temporary_sibling(path, "--out") as tmp, temporary_sibling(meta_path, "--out") as meta_tmp:
        metas = _write_npy(tmp, chunks, n_features, n_rows)
        pd.concat([columns.iloc[:0], *metas], ignore_index=True).to_csv(meta_tmp, index=False)
        meta_path.unlink(missing_ok=True)  # uncommit the old pair first (see the module docstring)
        os.replace(tmp, path)
        os.replace(meta_tmp, meta_path)
    return path


def _write_npy(
    tmp: Path, chunks: Iterable[tuple[pd.DataFrame, np.ndarray]], n_features: int, n_rows: int
) -> list[pd.DataFrame]:
    """Stream the matrix into a .npy file with ordinary writes (a memory map would die by SIGBUS on a full disk)."""
    metas, written = [], 0
    with open(tmp, "wb") as handle:
        header = {"descr": "<f4", "fortran_order": False, "shape": (n_rows, n_features)}
        np.lib.format.write_array_header_1_0(handle, header)
        for meta, vectors in chunks:
            handle.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            written += len(vectors)
            metas.append(meta)
        handle.flush()
        os.fsync(handle.fileno())
    if written != n_rows:
        raise RuntimeError(f"featx bug: {written} vectors written for {n_rows} rows")
    return metas


def _write_parquet(
    tmp: Path,
    chunks: Iterable[tuple[pd.DataFrame, np.ndarray]],
    n_features: int,
    fingerprint: Mapping[str, Any],
    columns: pd.DataFrame,
) -> None:
    empty = (columns.iloc[:0], np.empty((0, n_features), dtype=np.float32))
    schema = _table(*empty, n_features).schema.with_metadata(
        {"featx": json.dumps(dict(fingerprint), sort_keys=True)}
    )
    with pq.ParquetWriter(tmp, schema) as writer:
        for meta, vectors in chunks:
            writer.write_table(_table(meta, vectors, n_features).cast(schema))


def _table(meta: pd.DataFrame, vectors: np.ndarray, n_features: int) -> pa.Table:
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    table = pa.Table.from_pandas(meta.reset_index(drop=True), preserve_index=False)
    # an object column with no values yet (no rows, or only missing labels) is text, as in every other chunk
    table = table.cast(
        pa.schema(
            [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema],
            metadata=table.schema.metadata,
        )
    )
    return table.append_column(FEATURES_COLUMN, pa.FixedSizeListArray.from_arrays(values, n_features))


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, pd.DataFrame]:
    """Read what ``featx extract --out`` wrote: ``(X, meta)``, X an (n, d) float32 array.

    ``meta`` has the manifest columns (path, label, split where known) and ``key``; for Parquet its
    ``attrs["featx"]`` holds the extractor fingerprint (backbone, weights, node, pooling, precision).
    A ``.npy`` without its ``.meta.csv``, or with one of another length, is refused; so is anything that
    is not a matrix of numbers (a damaged file, Python objects, which are never unpickled). A Parquet file
    saved again by pandas (its ``features`` a list column) is read if its rows are all one length.
    """
    path = Path(path)
    if path.suffix == ".npy":
        meta_path = _npy_meta_path(path)
        if not meta_path.is_file():
            raise ParameterError(
                f"{path} has no {meta_path.name} beside it (an interrupted or partial write?); "
                "run featx extract --out again"
            )
        X, meta = _npy_matrix(path), _readable(pd.read_csv, meta_path)
        if len(X) != len(meta):
            raise ParameterError(
                f"{path} has {len(X)} rows but {meta_path.name} has {len(meta)}: they come from "
                "different runs; run featx extract --out again"
            )
        return X, meta
    table = _readable(pq.read_table, path)
    if FEATURES_COLUMN not in table.column_names:
        raise ParameterError(
            f"{path} has no {FEATURES_COLUMN!r} column (columns: {table.column_names}): it is no feature "
            "file that featx extract --out wrote"
        )
    X = _parquet_matrix(table.column(FEATURES_COLUMN).combine_chunks(), path)
    meta = table.drop([FEATURES_COLUMN]).to_pandas()
    raw = (table.schema.metadata or {}).get(b"featx")
    meta.attrs["featx"] = json.loads(raw) if raw else {}
    return X, meta


def _readable(read: Any, path: Path) -> Any:
    """``read(path)``; a file that cannot be parsed is one :class:`ParameterError` naming it."""
    try:
        return read(path)
    except (ValueError, OSError) as error:  # pandas' and pyarrow's parse errors are ValueErrors
        raise ParameterError(
            f"{path} cannot be read ({type(error).__name__}: {error}); run featx extract --out again"
        ) from None


def _npy_matrix(path: Path) -> np.ndarray:
    try:
        X = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):  # numpy's own message would offer to unpickle: never
        raise ParameterError(
            f"{path} is not a .npy matrix of numbers (a damaged file, or one holding Python objects, "
            "which featx never loads); run featx extract --out again"
        ) from None
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise ParameterError(
            f"{path} holds a {X.ndim}-D {X.dtype} array; a feature matrix is 2-D, a row of real numbers "
            "per image"
        )
    return X.astype(np.float32, copy=False)


def _parquet_matrix(column: pa.Array, path: Path) -> np.ndarray:
    """The ``features`` column as (n, d) float32: a fixed-size list as featx writes it, or a list column
    of one length (pandas writes one back that way)."""
    kind = column.type
    if not (pa.types.is_fixed_size_list(kind) or pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise ParameterError(f"{path}: its {FEATURES_COLUMN!r} column holds {kind}, not vectors")
    lengths = np.asarray(column.value_lengths().fill_null(-1))
    if len(lengths) and (lengths.min() < 0 or lengths.min() != lengths.max()):
        bad = int(np.argmax(lengths != lengths[0])) if lengths.min() >= 0 else int(np.argmin(lengths))
        raise ParameterError(
            f"{path}: its {FEATURES_COLUMN!r} rows are not all vectors of one length (row {bad} is "
            f"{'null' if lengths[bad] < 0 else f'{lengths[bad]} long'}, row 0 {lengths[0]})"
        )
    width = int(lengths[0]) if len(lengths) else getattr(kind, "list_size", 0)  # 0 rows: fixed size, or 0
    values = column.flatten().to_numpy(zero_copy_only=False, writable=True)  # like np.load's, not Arrow's
    if not np.issubdtype(values.dtype, np.number):
        raise ParameterError(f"{path}: its {FEATURES_COLUMN!r} column holds {kind}, not numbers")
    return values.reshape(len(lengths), width).astype(np.float32, copy=False)


def _npy_meta_path(path: Path) -> Path:
    return path.with_name(path.stem + ".meta.csv")
