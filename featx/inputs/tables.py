"""Parquet tables of encoded images as a source (a Hugging Face dataset's ``image`` struct, for example):
each cell is named ``row://COLUMN/ROW::TABLE``. A table's row group is read once per worker, as its rows
come in order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from featx.inputs import timeouts

ROW_PREFIX = "row://"


def row_path(table: str, column: str, row: int) -> str:
    return f"{ROW_PREFIX}{column}/{row}::{table}"


def whole_table(paths: Sequence[str]) -> tuple[str, str] | None:
    """(table, column) when ``paths`` name every row of one table's image column in order, as a Parquet
    table given as a job's source does: then a reader of whole tables may read it, each row group once."""
    if not len(paths) or not str(paths[0]).startswith(ROW_PREFIX):
        return None
    location, _, table = str(paths[0])[len(ROW_PREFIX) :].partition("::")
    column = location.rpartition("/")[0]
    try:
        rows = int(_table(table, os.getpid())[1][-1])
    except (OSError, ValueError):
        return None
    if rows != len(paths) or any(path != row_path(table, column, row) for row, path in enumerate(paths)):
        return None
    return table, column


def cell_bytes(value: Any) -> bytes:
    """An image cell's bytes: a binary value, or the ``bytes`` of a Hugging Face Image struct
    (FileNotFoundError for an empty cell, as a missing file)."""
    if isinstance(value, dict):
        value = value.get("bytes")
    if value is None:
        raise FileNotFoundError("the cell is empty")
    return value


def image_column(schema: Any, source: str) -> str | None:
    """The column of encoded images in a table without a ``path`` column: ``image`` or the only column of
    binary values or of structs with a binary ``bytes`` field (Hugging Face's Image feature)."""
    import pyarrow as pa

    def holds_bytes(field: Any) -> bool:
        kind = field.type
        if pa.types.is_struct(kind):
            return kind.get_field_index("bytes") >= 0 and holds_bytes(kind.field("bytes"))
        return pa.types.is_binary(kind) or pa.types.is_large_binary(kind)

    candidates = [field.name for field in schema if holds_bytes(field)]
    if "image" in schema.names and "image" not in candidates:
        raise ValueError(
            f"{source}: its 'image' column holds {schema.field('image').type}, not encoded image "
            "bytes; name a column of paths 'path'"
        )
    if "image" in candidates:
        return "image"
    if len(candidates) > 1:
        raise ValueError(
            f"{source} has several columns of bytes {candidates} and no 'path' or 'image' column; "
            "rename the one that holds the images to 'image'"
        )
    return candidates[0] if candidates else None


def table_cell(path: str) -> bytes:
    """One cell's bytes (FileNotFoundError for an empty cell, IndexError past the end)."""
    location, _, table = path[len(ROW_PREFIX) :].partition("::")
    column, _, row_text = location.rpartition("/")
    _, starts = _table(table, os.getpid())
    row = int(row_text)
    group = max(0, int(np.searchsorted(starts, row, side="right")) - 1)
    if row < 0 or row >= starts[-1]:
        raise IndexError(f"row {row} is outside the table's {starts[-1]} rows")
    return cell_bytes(_row_group(table, column, group)[row - starts[group]])


@functools.lru_cache(maxsize=8)
def _table(table: str, process: int) -> tuple[Any, np.ndarray]:
    """The open table and the first row of each row group (plus the row count at the end), opened once
    per process (``process``: a forked worker must not share its parent's open file; see
    :func:`featx.inputs.sources._shard_in`)."""
    import fsspec
    import pyarrow.parquet as pq

    timeouts.ensure()

    file = pq.ParquetFile(fsspec.open(table, "rb").open())
    sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
    return file, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@functools.lru_cache(maxsize=2)
def _row_group(table: str, column: str, group: int) -> list[Any]:
    """One row group of the image column, as Python values: a worker reads its rows in order."""
    return _table(table, os.getpid())[0].read_row_group(group, columns=[column]).column(0).to_pylist()
