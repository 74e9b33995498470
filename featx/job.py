"""The batch caching job behind ``featx extract``: manifest in, cache filled, feature file out.

Memory stays O(batch): vectors go to the cache batch by batch and the output file is assembled from the
cache in chunks. Re-running the job computes only what the cache lacks.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featx import engines
from featx._files import temporary_sibling
from featx.cache import FeatureCache, Namespace
from featx.engines.base import RunOptions
from featx.errors import ImageError
from featx.extract import read_vectors
from featx.feature_files import (
    check_output_path,
    check_writable_folder,
    printable_path,
    write_features,
)
from featx.inputs.images import MAX_PIXELS
from featx.inputs.manifests import load_job_source
from featx.inputs.shards import Shards
from featx.inputs.timeouts import read_timeout
from featx.models.network import FrozenNetwork, NetworkSpec
from featx.options import JOB_ON_ERROR, check

_CHUNK_ROWS = 4096


@dataclass
class JobSummary:
    n_images: int
    n_cached: int
    n_computed: int
    errors: list[ImageError] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # folder entries that are not images
    failed_shards: int = 0  # whole shards that could not be read: in ``errors``, not in ``n_images``

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds else float("nan")

    def __str__(self) -> str:
        lines = [
            f"images: {self.n_images}  cached: {self.n_cached}  computed: {self.n_computed}  "
            f"failed: {len(self.errors) - self.failed_shards}"
            + (f"  shards failed: {self.failed_shards}" if self.failed_shards else "")
            + (f"  skipped (not images): {len(self.skipped)}" if self.skipped else ""),
            f"time: {self.seconds:.1f} s  ({self.images_per_second:.1f} images/s)",
        ]
        if self.out is not None:
            lines.append(f"features: {self.out}")
        return "\n".join(lines)


def run_extract_job(
    manifest: pd.DataFrame | Shards,
    network: FrozenNetwork,
    namespace: Namespace,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    on_error: str = "skip",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    engine: engines.Engine | None = None,
    max_pixels: int = MAX_PIXELS,
) -> JobSummary:
    """Cache the features of every image in ``manifest`` and optionally write them to ``out``.

    ``manifest`` may be :class:`~featx.inputs.shards.Shards`: the engine then streams them and the output's rows
    are the samples it found, in shard order.

    ``on_error='skip'`` reports bad files in the summary and leaves them out of ``out``; ``'raise'`` stops
    at the first one (finished batches stay cached). ``engine`` fills the cache (default: ``engines.get("local")``).
    """
    check("on_error", on_error, JOB_ON_ERROR, "run_extract_job")
    if out is not None:
        check_output_path(out)  # before any work: a wrong suffix or a read-only folder costs nothing
    check_writable_folder(namespace.path, "--cache")
    engine = engine or engines.get("local")
    start = time.perf_counter()
    options = RunOptions(
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        fail_fast=on_error == "raise",
        max_pixels=max_pixels,
    )
    failed_shards = 0
    if isinstance(manifest, Shards):
        manifest, filled = engine.stream(manifest.names, network, namespace, options)
        failed_shards = int(
            (manifest["path"] == manifest["shard"]).sum()
        )  # a shard's row stands for the shard
    else:
        filled = engine.fill(manifest["path"].tolist(), network, namespace, options)
    summary = JobSummary(
        len(manifest) - failed_shards,
        filled.n_cached,
        filled.n_computed,
        filled.errors,
        skipped=manifest.attrs.get("skipped", []),
        failed_shards=failed_shards,
    )
    if out is not None:
        good = filled.good()
        summary.out = write_features(
            out,
            _chunks(manifest, filled, good, network, namespace, max_pixels),
            network.n_features,
            len(good),
            network.fingerprint,
            manifest.iloc[:0].assign(key=pd.Series(dtype=object)),
        )
    summary.seconds = time.perf_counter() - start
    return summary


def _chunks(
    manifest: pd.DataFrame,
    filled: engines.Filled,
    rows: np.ndarray,
    network: FrozenNetwork,
    namespace: Namespace,
    max_pixels: int,
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The output, chunk by chunk: the keys become strings only a chunk at a time."""
    for start in range(0, len(rows), _CHUNK_ROWS):
        here = rows[start : start + _CHUNK_ROWS]
        chunk = manifest.iloc[here].assign(key=filled.key_strings(here))
        vectors, _ = read_vectors(
            chunk["path"].tolist(), filled.keys[here], network, namespace, max_pixels=max_pixels
        )
        yield chunk.assign(path=chunk["path"].map(printable_path)), vectors


def write_errors(
    path: str | os.PathLike, errors: list[ImageError], skipped: list[tuple[str, str]] = ()
) -> Path:
    """One row per failed input (index, path, kind, message), then one per skipped folder entry (kind
    ``skipped``, no index). Written through a temporary file: a failed write leaves nothing behind."""
    path = Path(path)
    with temporary_sibling(path, "--errors") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["index", "path", "kind", "message"])
            writer.writeheader()
            for error in errors:
                writer.writerow(
                    {
                        "index": error.index,
                        "path": printable_path(error.source),
                        "kind": error.kind,
                        "message": printable_path(error.reason),
                    }
                )
            for entry, reason in skipped:
                writer.writerow(
                    {"index": "", "path": printable_path(entry), "kind": "skipped", "message": reason}
                )
        os.replace(tmp, path)
    return path


def run_job(
    source: str | os.PathLike,
    backbone: str = "resnet50",
    *,
    cache_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    weights: Any = "DEFAULT",
    layer: str | None = None,
    pooling: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    on_error: str = "skip",
    engine: str = "local",
    progress: bool = False,
    **engine_options: Any,
) -> JobSummary:
    """``featx extract SOURCE`` from Python: cache a folder's, manifest's or shards' features, optionally
    write ``out``. ``engine_options`` go to the engine (Ray: ``address``, ``concurrency``)."""
    read_timeout()  # a bad FEATX_READ_TIMEOUT is refused before the network loads, not on every row
    runner = engines.get(engine, **engine_options)
    network = runner.network(
        NetworkSpec(
            backbone, weights=weights, layer=layer, pooling=pooling, device=device, precision=precision
        )
    )
    namespace = FeatureCache(cache_dir).namespace(network.fingerprint)
    return run_extract_job(
        load_job_source(source),
        network,
        namespace,
        batch_size=batch_size,
        on_error=on_error,
        out=out,
        progress=progress,
        engine=runner,
    )
