"""The batch caching job behind ``featx extract``: manifest in, cache filled, feature file out.

Memory stays O(batch): vectors go to the cache batch by batch and the output file is assembled from the
cache in chunks. Re-running the job computes only what the cache lacks.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from featx.cache import Namespace
from featx.extract import FrozenNetwork, compute_missing, content_keys, spread_failures
from featx.feature_files import write_features
from featx.images import ImageError

ON_ERROR = ("skip", "raise")
_CHUNK_ROWS = 4096


@dataclass
class JobSummary:
    n_images: int
    n_cached: int
    n_computed: int
    errors: list[ImageError] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds else float("nan")

    def __str__(self) -> str:
        lines = [
            f"images: {self.n_images}  cached: {self.n_cached}  computed: {self.n_computed}  "
            f"failed: {len(self.errors)}",
            f"time: {self.seconds:.1f} s  ({self.images_per_second:.1f} images/s)",
        ]
        if self.out is not None:
            lines.append(f"features: {self.out}")
        return "\n".join(lines)


def run_extract_job(
    manifest: pd.DataFrame,
    network: FrozenNetwork,
    namespace: Namespace,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    on_error: str = "skip",
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> JobSummary:
    """Cache the features of every image in ``manifest`` and optionally write them to ``out``.

    ``on_error='skip'`` reports bad files in the summary and leaves them out of ``out``; ``'raise'`` stops
    at the first one (finished batches stay cached).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use one of {ON_ERROR}")
    start = time.perf_counter()
    paths = manifest["path"].tolist()
    keys, errors = content_keys(paths, progress=progress)
    if errors and on_error == "raise":
        raise errors[0]
    missing = set(namespace.missing(k for k in keys if k is not None))
    n_cached = sum(1 for k in keys if k is not None and k not in missing)
    with tqdm(total=len(paths), disable=not progress, unit="img", desc=network.backbone.name) as bar:
        bar.update(n_cached + len(errors))
        bar.set_postfix(cached=n_cached, refresh=False)
        n_computed, decode_errors = compute_missing(
            paths, keys, network, namespace, batch_size=batch_size, num_workers=num_workers,
            progress=bar, fail_fast=on_error == "raise",
        )
    errors = sorted(errors + spread_failures(decode_errors, keys), key=lambda e: e.index)
    summary = JobSummary(len(paths), n_cached, n_computed, errors)
    if out is not None:
        failed = {e.index for e in errors}
        good = [i for i in range(len(paths)) if i not in failed]
        frame = manifest.assign(key=keys)
        summary.out = write_features(
            out, _chunks(frame, good, network, namespace), network.n_features, len(good), network.fingerprint
        )
    summary.seconds = time.perf_counter() - start
    return summary


def _chunks(frame: pd.DataFrame, rows: list[int], network: FrozenNetwork,
            namespace: Namespace) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    for start in range(0, len(rows), _CHUNK_ROWS):
        chunk = frame.iloc[rows[start : start + _CHUNK_ROWS]]
        keys = chunk["key"].tolist()
        vectors, corrupt = namespace.read(keys)
        if corrupt:  # recompute vectors whose stored copy failed its checksum
            images = chunk["path"].tolist()
            compute_missing(images, keys, network, namespace, num_workers=0)
            vectors, _ = namespace.read(keys)
        yield chunk, vectors


def write_errors(path: str | os.PathLike, errors: list[ImageError]) -> Path:
    """One row per failed input: index, path, kind, message."""
    path = Path(path)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["index", "path", "kind", "message"])
        writer.writeheader()
        for error in errors:
            writer.writerow({"index": error.index, "path": error.source, "kind": error.kind, "message": error.reason})
    return path
