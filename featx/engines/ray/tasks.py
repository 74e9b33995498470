"""What the Ray engine's CPU tasks run: read each image once, key it, decode it only if the cache lacks it,
and hand back columns in which rows that need no computing carry empty pixels. Whole files (paths), cells
of a Parquet table read by Ray Data's own reader, and WebDataset shards streamed one per task."""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from featx.engines.keyed import key_and_decode
from featx.engines.streaming import Streamed, stream_shard
from featx.errors import ImageError
from featx.inputs import tables
from featx.inputs.bounds import byte_bound
from featx.inputs.images import read_content
from featx.inputs.remote import read_error
from featx.models.preprocessing import Preprocessing


def failure_columns(errors: Sequence[ImageError | None]) -> dict[str, np.ndarray]:
    return {
        "error_kind": np.array([e.kind if e else "" for e in errors], dtype=object),
        "error_reason": np.array([e.reason if e else "" for e in errors], dtype=object),
    }


NOTHING = np.zeros((0, 0, 0), dtype=np.uint8)  # the pixels of a row that needs no computing


def object_column(values: Sequence[Any]) -> np.ndarray:
    """One object per row (pixel arrays of several shapes), which ``np.array`` would try to stack."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def read_key_decode_batch(
    batch: dict[str, np.ndarray], preprocessing: Preprocessing, max_pixels: int, known: Container[str]
) -> dict[str, np.ndarray]:
    """Read each image once, key it, and decode (resize, crop to uint8) only what ``known`` lacks; rows
    that are cached or failed carry empty pixels, so nothing but keys travels for them."""
    bound = byte_bound(max_pixels)
    return {
        "index": batch["index"],
        **_keyed_columns(
            [
                (
                    lambda path=str(path), index=int(index): read_content(path, index, bound),
                    int(index),
                    str(path),
                )
                for index, path in zip(batch["index"], batch["path"])
            ],
            preprocessing,
            max_pixels,
            known,
        ),
    }


def stream_shard_batches(
    batch: dict[str, np.ndarray],
    preprocessing: Preprocessing,
    max_pixels: int,
    known: Container[str],
    batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
    """Stream each shard of ``batch`` once (see :func:`featx.engines.streaming.stream_shard`), yielding its
    samples ``batch_size`` at a time, so a task never holds a whole shard's pixels."""
    for number, shard in zip(batch["number"], batch["shard"]):
        chunk: list[Streamed] = []
        for entry in stream_shard(int(number), str(shard), known, preprocessing, max_pixels):
            chunk.append(entry)
            if len(chunk) == batch_size:
                yield streamed_columns(chunk)
                chunk = []
        if chunk:
            yield streamed_columns(chunk)


def streamed_columns(entries: list[Streamed]) -> dict[str, np.ndarray]:
    def strings(values: Any) -> np.ndarray:
        return np.array(["" if v is None else v for v in values], dtype=object)

    pixels = object_column([NOTHING if e.pixels is None else e.pixels.numpy() for e in entries])
    return {
        "number": np.array([e.shard for e in entries]),
        "position": np.array([e.position for e in entries]),
        "path": strings(e.path for e in entries),
        "sample": strings(e.sample for e in entries),
        "label": strings(e.label for e in entries),
        "has_label": np.array([e.label is not None for e in entries]),
        "key": strings(e.key for e in entries),
        "skipped": strings(e.skipped for e in entries),
        "pixels": pixels,
        **failure_columns([e.error for e in entries]),
    }


def streamed_entries(batch: dict[str, np.ndarray]) -> Iterator[Streamed]:
    """The driver's copy of what a decoding task reported, without pixels."""
    for row in range(len(batch["key"])):
        path, kind, position = (
            str(batch["path"][row]),
            str(batch["error_kind"][row]),
            int(batch["position"][row]),
        )
        yield Streamed(
            int(batch["number"][row]),
            position,
            path,
            str(batch["sample"][row]),
            str(batch["label"][row]) if batch["has_label"][row] else None,
            str(batch["key"][row]) or None,
            error=ImageError(position, path, kind, str(batch["error_reason"][row])) if kind else None,
            skipped=str(batch["skipped"][row]) or None,
        )


def key_decode_cells(
    batch: pa.Table, column: str, preprocessing: Preprocessing, max_pixels: int, known: Container[str]
) -> dict[str, np.ndarray]:
    """The cells of a table's image column as Ray Data's Parquet reader hands them over (a row group read
    once, by one task): keyed, and decoded where ``known`` lacks the key. Rows carry no index: the driver
    numbers them, in order. A failure carries its kind and reason; the driver names the row."""
    return _keyed_columns(
        [(lambda value=value: _cell_content(value), 0, column) for value in batch.column(column).to_pylist()],
        preprocessing,
        max_pixels,
        known,
    )


def _cell_content(value: Any) -> bytes:
    try:
        return tables.cell_bytes(value)
    except FileNotFoundError as empty:
        raise read_error(0, tables.ROW_PREFIX, empty) from None


def _keyed_columns(
    inputs: Sequence[tuple[Callable[[], bytes], int, str]],
    preprocessing: Preprocessing,
    max_pixels: int,
    known: Container[str],
) -> dict[str, np.ndarray]:
    """Key, pixels (``NOTHING`` unless decoded) and failure columns of ``inputs``, each (how to read its
    bytes, its index, its name in errors): read once, hashed, decoded only where ``known`` lacks the key."""
    keys, pixels, errors = [], [], []
    for content, index, source in inputs:
        key, decoded, error = key_and_decode(content, index, source, known, preprocessing, max_pixels)
        keys.append(key or "")
        pixels.append(decoded.numpy() if decoded is not None else NOTHING)
        errors.append(error)
    return {"key": np.array(keys, dtype=object), "pixels": object_column(pixels), **failure_columns(errors)}
