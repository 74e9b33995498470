"""The local engine: DataLoader workers read each input once, key it by its content and decode it only
if the store lacks that key; the network runs in full batches in this process, and each batch is committed
to the store as soon as the disk takes it (``batches.py``), so an interrupted job keeps its work.

What the workers run is ``datasets.py``; this thread keeps the books of each worker batch (keys,
failures, progress) and hands it to the pipeline (``stages.py``), whose decoding, issuing and commit
threads overlap.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from featx.cache import Namespace, Store, stat_memo
from featx.engines.base import DEFAULTS, Filled, RunOptions, no_keys
from featx.engines.local import seen
from featx.engines.local.books import FileBooks, ShardBooks
from featx.engines.local.datasets import (
    ReadKeyDecode,
    StreamShards,
    stack_decoded,
    stack_streamed,
    unremembered,
)
from featx.engines.local.stages import ON_DEVICE, LocalJob
from featx.engines.local.workers import (
    decoders_should_yield,
    default_num_workers,
    explain_worker_exit,
    worker_context,
    yield_to_the_network,
)
from featx.engines.plan import every_failure, first_missing, once_per_path, share_with_repeats
from featx.engines.streaming import assemble
from featx.inputs.images import ImageInput, describe
from featx.models.build import build_network
from featx.models.network import Network
from featx.models.spec import NetworkSpec


class LocalEngine:
    """Read, key and decode in DataLoader worker processes, run the network here. See :class:`featx.engines.Engine`."""

    def network(self, spec: NetworkSpec) -> Network:
        """The network of ``spec``, loaded in this process, where it runs."""
        return build_network(spec)

    def fill(
        self,
        images: Sequence[ImageInput],
        network: Network,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> Filled:
        """See :meth:`featx.engines.Engine.fill`. With an on-disk cache, the keys of unchanged local files
        come from the stat memo kept beside it, and what this run learned is added to it."""
        memo_root = store.path.parent if isinstance(store, Namespace) else None
        if memo_root is not None:
            seen.adopt(stat_memo.load(memo_root, seen.local_paths(images)))
        try:
            with tqdm(
                total=len(images), disable=not options.progress, unit="img", desc=network.backbone.name
            ) as bar:
                return run(images, network, store, options, bar)
        finally:
            learned = seen.learned()
            if memo_root is not None:
                stat_memo.save(memo_root, learned)

    def stream(
        self,
        shards: Sequence[str],
        network: Network,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> tuple[pd.DataFrame, Filled]:
        """Each DataLoader worker streams whole shards (shard i goes to worker i mod n); see
        :meth:`featx.engines.Engine.stream`."""
        with tqdm(disable=not options.progress, unit="img", desc=network.backbone.name) as bar:
            return run_shards(list(shards), network, store, options, bar)


def compute_missing(
    images: Sequence[ImageInput],
    keys: Sequence[str],
    network: Network,
    store: Store,
    options: RunOptions = DEFAULTS,
) -> int:
    """Compute, in this process, the vectors of ``keys`` the store lacks (a re-read after a checksum
    failure), in the batch size and pixel bound of ``options``."""
    todo = first_missing(keys, set(store.missing(keys)))
    quiet = replace(options, num_workers=0, progress=False, fail_fast=False)
    return run([images[i] for i in todo], network, store, quiet).n_computed


def run(
    images: Sequence[ImageInput],
    network: Network,
    store: Store,
    options: RunOptions = DEFAULTS,
    progress: tqdm | None = None,
) -> Filled:
    """Key every input and compute what ``store`` lacks, once per distinct content, in full batches.

    With ``options.fail_fast`` the first failure is raised once the vectors decoded before it are stored.
    """
    known = store.known()
    keys = no_keys(len(images))
    todo, repeats = once_per_path(images, unremembered(images, known, keys))
    n_cached = len(images) - len(todo) - sum(map(len, repeats.values()))
    if progress is not None:
        progress.update(n_cached)
    workers = options.num_workers
    if workers is None:
        workers = default_num_workers(len(todo), options.batch_size, network.device)
    workers = min(workers, -(-len(todo) // options.batch_size))  # a worker decodes whole batches
    loader = _decoding_loader(
        ReadKeyDecode(images, todo, known, network.preprocessing, options.max_pixels),
        stack_decoded,
        workers,
        network,
        options.batch_size,
    )
    books = FileBooks(images, keys, len(todo), n_cached)
    computed = _drive(loader, LocalJob(network, store, options), books, options, progress)
    n_cached = books.n_cached + share_with_repeats(
        repeats, keys, books.failures, lambda i: describe(images[i])
    )
    return Filled(
        keys, every_failure(books.failures, keys, lambda i: describe(images[i])), n_cached, computed
    )


def run_shards(
    shards: list[str],
    network: Network,
    store: Store,
    options: RunOptions = DEFAULTS,
    progress: tqdm | None = None,
) -> tuple[pd.DataFrame, Filled]:
    """Stream every shard once in worker processes, compute what ``store`` lacks in full batches, and
    assemble the manifest in shard order. At most one worker per shard: a shard is read front to back."""
    known = store.known()
    workers = options.num_workers
    if workers is None:
        workers = default_num_workers(sys.maxsize, options.batch_size, network.device)
    workers = min(workers, len(shards))
    loader = _decoding_loader(
        StreamShards(shards, known, network.preprocessing, options.max_pixels),
        stack_streamed,
        workers,
        network,
        options.batch_size,
    )
    books = ShardBooks(shards)
    computed = _drive(loader, LocalJob(network, store, options), books, options, progress)
    return assemble(books.entries, shards, books.n_cached, computed)


def _drive(
    loader: DataLoader,
    job: LocalJob,
    books: FileBooks | ShardBooks,
    options: RunOptions,
    progress: tqdm | None,
) -> int:
    """The one loop of both kinds of job: each worker batch into the books and on to the pipeline; at the
    first failure with ``fail_fast``, what was decoded before it is stored and the failure raised. Returns
    how many vectors the job computed."""
    with job:
        for batch in _iterate(loader):
            work, n = books.take(batch)
            job.put(work)
            books.device_failed(job.take_failures())
            if options.fail_fast and (books.failed or job.pipeline.stopped):
                job.finish()
                books.device_failed(job.take_failures())
                raise books.first_failure()
            if progress is not None:
                progress.update(n)
                # as a string: tqdm's own number format shows 70,000 as "7e+4"
                progress.set_postfix_str(books.postfix(job.batches.computed), refresh=False)
        job.finish()
        books.device_failed(job.take_failures())
    if progress is not None:  # the last batches were computed after the last worker batch came in
        progress.set_postfix_str(books.postfix(job.batches.computed))
    return job.batches.computed


def _decoding_loader(
    dataset: Dataset | IterableDataset, collate_fn: Any, workers: int, network: Network, batch_size: int
) -> DataLoader:
    """How a job's decoders start, written once for both kinds of job: ``workers`` processes (none: here),
    niced beside a CPU network, started from a fork server in a process connected to Ray."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=_pin(network),
        prefetch_factor=4 if workers else None,
        multiprocessing_context=worker_context([__name__]) if workers else None,
        worker_init_fn=yield_to_the_network if workers and decoders_should_yield(network.device) else None,
    )


def _pin(network: Network) -> bool:
    """Pinned worker batches for a GPU, unless the workers hand over JPEG bytes (nothing to pin, and
    pinning walks every sample holding the GIL). A RemoteNetwork's "cuda" may be a Ray worker's GPU."""
    cuda = network.device.type == "cuda" and torch.cuda.is_available()
    return cuda and network.preprocessing.decoding not in ON_DEVICE


def _iterate(loader: DataLoader) -> Iterator[Any]:
    iterator = iter(loader)
    try:
        yield from iterator
    except RuntimeError as error:
        explained = explain_worker_exit(loader.multiprocessing_context, error)
        if explained is None:
            raise
        raise explained from error
    finally:
        # Shut worker processes down at once, also on Ctrl-C, so nothing lingers or half-writes.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
