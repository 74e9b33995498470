"""The batch caching job behind ``featx extract``: manifest in, cache filled, feature file out.

Memory stays O(batch): vectors go to the cache batch by batch and the output file is assembled from the
cache in chunks. Re-running the job computes only what the cache lacks.
"""

from __future__ import annotations

import csv
import dataclasses
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
from featx.engines.base import DEFAULTS, RunOptions
from featx.errors import ImageError, ParameterError
from featx.extract import read_vectors
from featx.feature_files import (
    check_output_path,
    check_writable_folder,
    printable_path,
    write_features,
)
from featx.inputs.manifests import load_job_source
from featx.inputs.shards import Shards
from featx.inputs.timeouts import read_timeout
from featx.models._registry import Backbone
from featx.models.network import Network
from featx.models.spec import NetworkSpec, field_names
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
    n_recomputed: int = 0  # vectors that vanished from the cache while ``out`` was written (a prune beside)

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds else float("nan")

    def __str__(self) -> str:
        lines = [
            f"images: {self.n_images}  cached: {self.n_cached}  computed: {self.n_computed}  "
            f"failed: {len(self.errors) - self.failed_shards}"
            + (f"  shards failed: {self.failed_shards}" if self.failed_shards else "")
            + (f"  skipped (not images): {len(self.skipped)}" if self.skipped else "")
            + (f"  recomputed (vanished from the cache): {self.n_recomputed}" if self.n_recomputed else ""),
            f"time: {self.seconds:.1f} s  ({self.images_per_second:.1f} images/s)",
        ]
        if self.out is not None:
            lines.append(f"features: {self.out}")
        return "\n".join(lines)


def run_extract_job(
    manifest: pd.DataFrame | Shards,
    network: Network,
    namespace: Namespace,
    options: RunOptions = DEFAULTS,
    *,
    on_error: str = "skip",
    out: str | os.PathLike | None = None,
    engine: engines.Engine | None = None,
) -> JobSummary:
    """Cache the features of every image in ``manifest`` and optionally write them to ``out``.

    ``manifest`` may be :class:`~featx.inputs.shards.Shards`: the engine then streams them and the
    output's rows are the samples it found, in shard order.

    ``on_error='skip'`` reports bad files in the summary and leaves them out of ``out``; ``'raise'`` stops
    at the first one (finished batches stay cached). ``engine`` fills the cache (default:
    ``engines.get("local")``) as ``options`` say, and its vectors are read back for ``out`` the same way.
    """
    check("on_error", on_error, JOB_ON_ERROR, "run_extract_job")
    if out is not None:
        check_output_path(out)  # before any work: a wrong suffix or a read-only folder costs nothing
    check_writable_folder(namespace.path, "--cache")
    engine = engine or engines.get("local")
    start = time.perf_counter()
    options = dataclasses.replace(options, fail_fast=on_error == "raise")
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
            _chunks(manifest, filled, good, network, namespace, options, summary),
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
    network: Network,
    namespace: Namespace,
    options: RunOptions,
    summary: JobSummary,
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """The output, chunk by chunk: the keys become strings only a chunk at a time. Vectors that vanished
    from the cache meanwhile are computed again and counted in ``summary``."""
    for start in range(0, len(rows), _CHUNK_ROWS):
        here = rows[start : start + _CHUNK_ROWS]
        chunk = manifest.iloc[here].assign(key=filled.key_strings(here))
        vectors, recomputed = read_vectors(
            chunk["path"].tolist(), filled.keys[here], network, namespace, options
        )
        summary.n_recomputed += recomputed
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
    backbone: str | Backbone = "resnet50",
    *,
    cache_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    on_error: str = "skip",
    engine: str = "local",
    progress: bool = False,
    **params: Any,
) -> JobSummary:
    """``featx extract SOURCE`` from Python: cache a folder's, manifest's or shards' features, optionally
    write ``out``.

    ``params`` are the network's ([`NetworkSpec`][featx.NetworkSpec]: ``weights``, ``layer``,
    ``pooling``, ``device``, ``precision``, ``decoding``...), how it runs (``batch_size``,
    ``num_workers``, ``max_pixels``), and the engine's own (Ray: ``address``, ``concurrency``), each
    checked before any work.
    """
    run_names = [f.name for f in dataclasses.fields(RunOptions) if f.metadata]
    unknown = sorted(set(params) - {*field_names(), *run_names, *engines.option_names(engine)})
    if unknown:
        raise ParameterError(
            f"run_job got {', '.join(map(repr, unknown))}; it takes the network's parameters "
            f"({', '.join(field_names()[1:])}), how it runs ({', '.join(run_names)}) and the {engine} "
            f"engine's ({', '.join(engines.option_names(engine)) or 'none'})"
        )
    spec = NetworkSpec.from_params({"backbone": backbone, **params}, "run_job")
    read_timeout()  # a bad FEATX_READ_TIMEOUT is refused before the network loads, not on every row
    options = RunOptions.from_params({**params, "progress": progress}, "run_job")
    runner = engines.get(engine, **{k: v for k, v in params.items() if k in engines.option_names(engine)})
    network = runner.network(spec)
    namespace = FeatureCache(cache_dir).namespace(network.fingerprint)
    return run_extract_job(
        load_job_source(source), network, namespace, options, on_error=on_error, out=out, engine=runner
    )
