"""The local engine: DataLoader workers read each input once, key it by its content and decode it only
if the store lacks that key; the network runs in full batches in this process, and each batch is committed
to the store at once (so an interrupted job keeps its work)."""

from __future__ import annotations

import os
import time
from typing import Any, Container, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from featx.cache import Store
from featx.engines import seen
from featx.engines.base import Filled
from featx.engines.plan import first_missing, spread_failures
from featx.errors import ImageError
from featx.images import MAX_PIXELS, ImageInput, describe, hash_content, read_content
from featx.network import FrozenNetwork, NetworkSpec
from featx.preprocessing import Preprocessing


class LocalEngine:
    """Read, key and decode in DataLoader worker processes, run the network here. See :class:`featx.engines.Engine`."""

    def network(self, spec: NetworkSpec) -> FrozenNetwork:
        """The network of ``spec``, loaded in this process, where it runs."""
        return FrozenNetwork(spec)

    def fill(
        self,
        images: Sequence[ImageInput],
        network: FrozenNetwork,
        store: Store,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        progress: bool = False,
        fail_fast: bool = False,
        max_pixels: int = MAX_PIXELS,
    ) -> Filled:
        with tqdm(total=len(images), disable=not progress, unit="img", desc=network.backbone.name) as bar:
            return run(images, network, store, batch_size=batch_size, num_workers=num_workers, progress=bar,
                       fail_fast=fail_fast, max_pixels=max_pixels)


def compute_missing(
    images: Sequence[ImageInput], keys: Sequence[str], network: FrozenNetwork, store: Store, *, batch_size: int = 64,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """Compute, in this process, the vectors of ``keys`` the store lacks (a re-read after a checksum failure)."""
    todo = first_missing(keys, set(store.missing(keys)))
    return run([images[i] for i in todo], network, store, batch_size=batch_size, num_workers=0,
               max_pixels=max_pixels).n_computed


def run(
    images: Sequence[ImageInput],
    network: FrozenNetwork,
    store: Store,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: tqdm | None = None,
    fail_fast: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> Filled:
    """Key every input and compute what ``store`` lacks, once per distinct content, in full batches.

    With ``fail_fast`` the first failure is raised once the vectors decoded before it are stored.
    """
    known = store.known()
    keys: list[str | None] = [None] * len(images)
    todo = _unremembered(images, known, keys)
    n_cached = len(images) - len(todo)
    if progress is not None:
        progress.update(n_cached)
    workers = default_num_workers(len(todo), batch_size, network.device) if num_workers is None else num_workers
    loader = DataLoader(
        _ReadKeyDecode(images, todo, known, network.preprocessing, max_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=list,
        # a RemoteNetwork's "cuda" may be a Ray worker's GPU, not this machine's
        pin_memory=network.device.type == "cuda" and torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=_yield_to_the_network if workers and _decoders_should_yield(network.device) else None,
    )
    unreadable: list[ImageError] = []
    decode_errors: list[ImageError] = []
    batches = _Batches(network, store, batch_size)
    n_seen = n_decoded = 0
    for samples in _iterate(loader):
        for index, key, result, file_signature in samples:
            keys[index] = key
            if file_signature is not None:
                seen.remember(images[index], file_signature, key)
            if isinstance(result, ImageError):
                (unreadable if key is None else decode_errors).append(result)
            elif result is None:
                n_cached += 1
            else:
                batches.add(key, result)
                n_decoded += 1
        n_seen += len(samples)
        batches.commit_full(expected=round(len(todo) * n_decoded / n_seen))
        if fail_fast and (unreadable or decode_errors):
            batches.commit_all()
            raise min(unreadable + decode_errors, key=lambda e: e.index)
        if progress is not None:
            progress.update(len(samples))
            # as a string: tqdm's own number format shows 70,000 as "7e+4"
            progress.set_postfix_str(f"cached={n_cached}, computed={batches.computed}, "
                                     f"failed={len(unreadable) + len(decode_errors)}", refresh=False)
    batches.commit_all()
    errors = sorted(unreadable + spread_failures(decode_errors, keys), key=lambda e: e.index)
    return Filled(keys, errors, n_cached, batches.computed)


def _unremembered(images: Sequence[ImageInput], known: Container[str], keys: list[str | None]) -> list[int]:
    """The inputs to read: all but the files this process read before, unchanged since, whose vectors are
    ``known`` (their ``keys`` are filled in)."""
    todo = []
    for index, image in enumerate(images):
        key = seen.remembered(image)
        if key is not None and key in known:
            keys[index] = key
        else:
            todo.append(index)
    return todo


class _Batches:
    """Decoded images gathered into full batches, each distinct content once; each batch is run through
    the network and committed to the store as soon as it is full."""

    def __init__(self, network: FrozenNetwork, store: Store, batch_size: int):
        self.network, self.store, self.batch_size = network, store, batch_size
        self.computed = 0
        self._keys: list[str] = []
        self._pixels: list[torch.Tensor] = []
        self._taken: set[str] = set()
        self._prepared, self._expected = False, 0

    def add(self, key: str, pixels: torch.Tensor) -> None:
        if key not in self._taken:  # the same content twice in one run: computed once
            self._taken.add(key)
            self._keys.append(key)
            self._pixels.append(pixels)

    def commit_full(self, expected: int) -> None:
        """Commit every full batch; ``expected`` estimates how many images this job computes in all (the
        network compiles, or not, for that number before its first batch)."""
        self._expected = expected
        while len(self._keys) >= self.batch_size:
            self._commit(self.batch_size)

    def commit_all(self) -> None:
        while self._keys:
            self._commit(self.batch_size)

    def _commit(self, n: int) -> None:
        if not self._prepared:
            self.network.prepare(max(self._expected, len(self._keys)), self.batch_size)
            self._prepared = True
        keys, pixels = self._keys[:n], self._pixels[:n]
        del self._keys[:n], self._pixels[:n]
        self.store.write(keys, self.network(torch.stack(pixels)))
        self.computed += len(keys)


def default_num_workers(n_images: int, batch_size: int, device: torch.device = torch.device("cpu")) -> int:
    """No worker processes for a batch or two (start-up would dominate). With a GPU running the network,
    decode on every spare core; on a CPU, decoders share the cores with the network: half, up to 4."""
    if n_images <= 2 * batch_size:
        return 0
    cores = os.cpu_count() or 2
    return max(1, cores - 1) if device.type == "cuda" else max(1, min(4, cores // 2))


def _decoders_should_yield(device: torch.device) -> bool:
    """Niced decoders help only where they compete with the network's own threads and nothing else: with
    a GPU they have the CPU to themselves, and beside a busy neighbour a niced decoder starves and the
    network waits on it. Measured, not assumed: the share of CPU time other processes use, now."""
    return device.type == "cpu" and busy_share_of_others() < 0.25


def busy_share_of_others(window_s: float = 0.2) -> float:
    """The fraction of all cores busy over ``window_s`` while this process sleeps (Linux /proc/stat;
    elsewhere 0, i.e. assume an idle machine)."""
    def ticks() -> tuple[int, int] | None:
        try:
            fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    before = ticks()
    if before is None:
        return 0.0
    time.sleep(window_s)
    after = ticks()
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0


class _ReadKeyDecode(Dataset):
    """One input: read once, keyed by its content, and decoded (to a uint8 ``3 x crop x crop`` tensor)
    only if its key is not in ``known``. Runs in DataLoader workers, so the network never waits on I/O or
    PIL. A local file's stat signature comes back too, unless the file changed while it was read."""

    def __init__(self, images: Sequence[ImageInput], todo: Sequence[int], known: Container[str],
                 preprocessing: Preprocessing, max_pixels: int):
        self.images, self.todo, self.known = images, todo, known
        self.preprocessing, self.max_pixels = preprocessing, max_pixels

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, position: int) -> tuple[int, str | None, torch.Tensor | ImageError | None, Any]:
        index = self.todo[position]
        image = self.images[index]
        before = seen.signature(image)
        try:
            content = read_content(image, index)
            key = hash_content(content)
        except ImageError as error:
            return index, None, error, None
        file_signature = before if before is not None and seen.signature(image) == before else None
        if key in self.known:
            return index, key, None, file_signature
        try:
            pixels = self.preprocessing.decode(content, index, self.max_pixels, source=describe(image))
        except ImageError as error:
            return index, key, error, file_signature
        return index, key, pixels, file_signature


def _yield_to_the_network(worker_id: int) -> None:
    """On a machine without spare cores a decoder competing at equal priority slows the network's thread
    pool more than its decoding gains (see benchmarks/speed.py)."""
    os.nice(10)


def _iterate(loader: DataLoader) -> Iterator[Any]:
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        # Shut worker processes down at once, also on Ctrl-C, so nothing lingers or half-writes.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
