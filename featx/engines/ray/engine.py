"""The batch job on Ray Data: read, key and decode in CPU tasks, run the frozen network in an actor pool.

    featx extract SOURCE --backbone resnet50 --cache /shared/cache --engine ray [--ray-address ADDR]

The unit of work is the local engine's: each path read once (however many rows name it), in a CPU
task, keyed by its content and decoded only if the cache lacks that key; a batch of decoded images ->
``Network`` -> one atomic ``Namespace.write`` into the on-disk cache. So a re-run computes only what
is missing, a killed run keeps its finished shards, and everything downstream reads the same namespaces.
WebDataset shards are streamed: one task reads each shard once and reports its samples
(:mod:`featx.engines.streaming`). The driver never loads the network: a worker resolves it
(:meth:`RayEngine.network`). Every node must see the cache directory (shared storage) and the image
paths. Ray stays optional: ``pip install 'featx[ray]'``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from featx.cache import KEY_DTYPE, Namespace, Store
from featx.engines.base import DEFAULTS, Filled, RunOptions
from featx.engines.plan import every_failure, once_per_path, share_with_repeats
from featx.engines.ray.network import (
    RemoteNetwork,
    connect,
    matching_network,
    ray_module,
    resolve_on_worker,
    unwrapped,
)
from featx.engines.ray.tasks import (
    key_decode_cells,
    read_key_decode_batch,
    stream_shard_batches,
    streamed_entries,
)
from featx.engines.streaming import Streamed, assemble
from featx.errors import FeatxError, ImageError, ParameterError
from featx.inputs import tables
from featx.models.network import Network
from featx.models.spec import NetworkSpec

BLOCK_BATCHES = 8  # batches of a list of files per Ray Data block: each block is one task for one actor


class _Embed:
    """A Ray actor: one frozen network, loaded once; each batch is computed and committed to the cache.

    Content this actor committed for an earlier batch is not computed again.

    It is built from the resolved spec (the device and measured precision, not "auto") and refuses to write
    unless its own fingerprint is the job's: vectors are never stored under a fingerprint they do not
    match (another torch, another quantization, another precision on that node). The refusal travels back
    as data, in a ``refusal`` column: raised here, Ray would hand the driver only its text inside a traceback.
    """

    def __init__(self, spec: NetworkSpec, fingerprint: dict[str, Any], cache_path: str, threads: int):
        torch.set_num_threads(threads)
        try:
            self.network, self.refusal = matching_network(spec, fingerprint), ""
        except FeatxError as refusal:
            self.network, self.refusal = None, str(refusal)
            return
        self.namespace = Namespace(Path(cache_path))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded = np.array([p.size > 0 for p in batch["pixels"]], dtype=bool)
        rows = {}  # key -> row: the same content twice in a batch is computed once
        for row in np.flatnonzero(decoded):
            rows.setdefault(str(batch["key"][row]), row)
        # the actor's index knows what it committed itself, so content repeated across batches is computed once
        todo = (
            {key: rows[key] for key in self.namespace.missing(list(rows))}
            if rows and not self.refusal
            else {}
        )
        if todo:
            pixels = np.stack([batch["pixels"][row] for row in todo.values()])
            self.namespace.write(list(todo), self.network(torch.from_numpy(pixels)))
        computed = np.zeros(len(decoded), dtype=bool)
        computed[list(todo.values())] = True
        cached = ~decoded & (batch["error_kind"] == "") & (batch["key"] != "")
        return {
            **{name: column for name, column in batch.items() if name != "pixels"},
            "computed": computed,
            "cached": cached,
            "refusal": np.full(len(decoded), self.refusal, dtype=object),
        }


class RayEngine:
    """The local engine's work on Ray Data: the same keys, errors and counts, the same cache.

    ``address`` joins a cluster ('auto': the running one; default: start a local instance).
    ``concurrency`` model actors (default: one per GPU, else one); ``num_workers`` caps the decoding tasks
    running at once (default: Ray's choice). ``fail_fast`` raises the first failure after the run.
    """

    def __init__(self, address: str | None = None, concurrency: int | None = None):
        self.address, self.concurrency = address, concurrency

    def network(self, spec: NetworkSpec) -> RemoteNetwork:
        """The network of ``spec``, resolved by one task on the kind of worker that will run it (a GPU worker
        for device 'cuda', or 'auto' on a cluster with GPUs; else a CPU one). The driver never loads it."""
        if spec.decoding in ("device", "dali"):
            raise ParameterError(
                f"decoding={spec.decoding!r} runs with the local engine only: Ray's decoding tasks run on CPU "
                "workers; use decoding auto, reduced or full"
            )
        spec = spec.replace(decoding="reduced") if spec.decoding == "auto" else spec
        ray = ray_module()
        connect(self.address)
        if spec.device not in ("auto", "cpu", "cuda"):
            raise ParameterError(
                f"the Ray engine takes device auto, cpu or cuda, not {spec.device!r}: Ray gives "
                "each model actor its own GPU"
            )
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if spec.device == "cuda" and not gpus:
            raise ParameterError(
                "device cuda: the Ray cluster has no GPUs (ray.cluster_resources() lists none); "
                "add GPU workers, or use device auto or cpu"
            )
        resolve = ray.remote(resolve_on_worker).options(num_gpus=1 if gpus and spec.device != "cpu" else 0)
        return unwrapped(ray, resolve.remote(spec))

    def fill(
        self,
        images: Sequence[str | os.PathLike],
        network: Network,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> Filled:
        ray = self._start(store, network, options.progress)
        paths = [os.fspath(p) for p in images]
        todo, repeats = once_per_path(paths, list(range(len(paths))))  # each path read once
        outcome = self._run(
            ray,
            [paths[i] for i in todo],
            network,
            store,
            options.batch_size,
            options.num_workers,
            options.max_pixels,
        )
        keys = np.zeros(len(paths), dtype=outcome.keys.dtype)
        keys[todo] = outcome.keys
        failures = [e.at(todo[e.index]) for e in outcome.failures]
        n_served = share_with_repeats(repeats, keys, failures, paths.__getitem__)
        filled = Filled(
            keys,
            every_failure(failures, keys, paths.__getitem__),
            outcome.n_cached + n_served,
            outcome.n_computed,
        )
        if options.fail_fast and filled.errors:
            raise filled.errors[0]
        return filled

    def stream(
        self,
        shards: Sequence[str],
        network: Network,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> tuple[pd.DataFrame, Filled]:
        """Each shard streamed once by one CPU task (Ray Data's blocks are shards); see
        :meth:`featx.engines.Engine.stream`."""
        ray = self._start(store, network, options.progress)
        shards = list(shards)
        items = ray.data.from_items(
            [{"number": n, "shard": s} for n, s in enumerate(shards)], override_num_blocks=len(shards)
        )
        decoded = items.map_batches(
            stream_shard_batches,
            fn_kwargs={
                "preprocessing": network.preprocessing,
                "max_pixels": options.max_pixels,
                "known": store.known(),
                "batch_size": options.batch_size,
            },
            batch_size=1,
            concurrency=options.num_workers,
        )
        entries: list[Streamed] = []
        n_cached = n_computed = 0
        for batch in self._embedded(ray, decoded, network, store, options.batch_size):
            entries.extend(streamed_entries(batch))
            n_cached += int(batch["cached"].sum())
            n_computed += int(batch["computed"].sum())
        store.refresh()  # the actors committed shards from their own processes
        manifest, filled = assemble(entries, shards, n_cached, n_computed)
        if options.fail_fast and filled.errors:
            raise filled.errors[0]
        return manifest, filled

    def _start(self, store: Store, network: Network, progress: bool):
        if not isinstance(store, Namespace):
            raise ParameterError(
                "the Ray engine writes to an on-disk cache that every node sees: pass cache_dir / --cache"
            )
        if network.device.type not in ("cpu", "cuda"):
            raise ParameterError(f"the Ray engine runs on cpu or cuda, not {network.device}")
        ray = ray_module()
        connect(self.address)
        ray.data.DataContext.get_current().enable_progress_bars = progress  # Ray Data's own bars
        return ray

    def _run(
        self,
        ray,
        paths: list[str],
        network: Network | RemoteNetwork,
        store: Namespace,
        batch_size: int,
        num_workers: int | None,
        max_pixels: int,
    ) -> _Outcome:
        settings = {"preprocessing": network.preprocessing, "max_pixels": max_pixels, "known": store.known()}
        whole = tables.whole_table(paths)
        context = ray.data.DataContext.get_current()
        ordered = context.execution_options.preserve_order
        if whole:  # Ray Data's own Parquet reader: each row group read once; rows numbered here, in order
            import fsspec
            from pyarrow.fs import FSSpecHandler, PyFileSystem

            table, column = whole
            filesystem, table = fsspec.core.url_to_fs(table)
            context.execution_options.preserve_order = True
            items = ray.data.read_parquet(table, filesystem=PyFileSystem(FSSpecHandler(filesystem)))
            items = items.select_columns([column])  # pushed down into the read
            decoded = items.map_batches(
                key_decode_cells,
                fn_kwargs={"column": column, **settings},
                batch_format="pyarrow",
                batch_size=batch_size,
                concurrency=num_workers,
            )
        else:
            table = pa.table({"index": np.arange(len(paths)), "path": pa.array(paths, pa.string())})
            blocks = max(1, -(-len(paths) // (batch_size * BLOCK_BATCHES)))  # one block would be one task
            items = ray.data.from_arrow(table, override_num_blocks=blocks)
            decoded = items.map_batches(
                read_key_decode_batch, fn_kwargs=settings, batch_size=batch_size, concurrency=num_workers
            )
        outcome = _Outcome(np.zeros(len(paths), dtype=KEY_DTYPE["key"]))
        try:
            for batch in self._embedded(ray, decoded, network, store, batch_size):
                if whole:
                    batch["index"] = np.arange(outcome.n_rows, outcome.n_rows + len(batch["key"]))
                outcome.add(batch, paths)
        finally:
            context.execution_options.preserve_order = ordered
        store.refresh()  # the actors committed shards from their own processes
        return outcome

    def _embedded(
        self, ray, decoded: Any, network: Network | RemoteNetwork, store: Namespace, batch_size: int
    ) -> Iterator[dict[str, np.ndarray]]:
        """The decoded rows through the actor pool, which commits their vectors; the rows come back to the
        driver streamed (never all at once), without pixels."""
        gpus = int(ray.cluster_resources().get("GPU", 0)) if network.device.type == "cuda" else 0
        actors = self.concurrency or max(1, gpus)
        # On CPUs each actor's thread pool takes its share of the cluster's cores, while reserving one
        # logical CPU only, so Ray still schedules the decoding tasks (which yield to it, as locally).
        threads = 1 if gpus else max(1, int(ray.cluster_resources().get("CPU", 1)) // actors)
        embedded = decoded.map_batches(
            _Embed,
            fn_constructor_kwargs={
                "spec": network.spec.replace(precision=network.precision),
                "fingerprint": network.fingerprint,
                "cache_path": str(store.path),
                "threads": threads,
            },
            batch_size=batch_size,
            concurrency=actors,
            num_gpus=1 if gpus else 0,
            num_cpus=1,
        )
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            refusal = next((text for text in batch["refusal"] if text), None)
            if refusal:
                raise FeatxError(refusal)  # stops the dataset: no actor writes for this job
            yield batch


@dataclasses.dataclass
class _Outcome:
    """What the driver keeps of a run: 64 bytes a key (empty for an unreadable input), two counts, and the
    failed inputs only."""

    keys: np.ndarray
    n_cached: int = 0
    n_computed: int = 0
    n_rows: int = 0
    failures: list[ImageError] = dataclasses.field(default_factory=list)

    def add(self, batch: dict[str, np.ndarray], paths: Sequence[str]) -> None:
        self.keys[batch["index"]] = np.asarray(batch["key"], dtype=self.keys.dtype)
        self.n_rows += len(batch["key"])
        self.n_cached += int(batch["cached"].sum())
        self.n_computed += int(batch["computed"].sum())
        for row in np.flatnonzero(batch["error_kind"] != ""):
            index = int(batch["index"][row])
            self.failures.append(
                ImageError(
                    index, paths[index], str(batch["error_kind"][row]), str(batch["error_reason"][row])
                )
            )
