"""The local engine: DataLoader workers decode, the network runs batched in this process, each finished
batch is committed to the store at once (so an interrupted job keeps its work)."""

from __future__ import annotations

import os
import time
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from featx.cache import Store
from featx.engines.base import Filled
from featx.engines.plan import content_keys, first_missing, plan
from featx.errors import ImageError
from featx.images import MAX_PIXELS, ImageInput
from featx.network import FrozenNetwork
from featx.preprocessing import Preprocessing


class LocalEngine:
    """Decode in DataLoader worker processes, run the network here. See :class:`featx.engines.Engine`."""

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
        keys, unreadable = content_keys(images, progress=progress)
        if fail_fast and unreadable:
            raise unreadable[0]
        todo = plan(keys, unreadable, store)
        with tqdm(total=len(images), disable=not progress, unit="img", desc=network.backbone.name) as bar:
            bar.update(todo.n_cached + len(unreadable))
            n_computed, decode_errors = compute(
                images, keys, todo.todo, network, store, batch_size=batch_size, num_workers=num_workers,
                progress=bar, fail_fast=fail_fast, n_cached=todo.n_cached, max_pixels=max_pixels,
            )
        return todo.finish(decode_errors, n_computed)


def compute_missing(
    images: Sequence[ImageInput], keys: Sequence[str], network: FrozenNetwork, store: Store, *, batch_size: int = 64,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """Compute, in this process, the vectors of ``keys`` the store lacks (a re-read after a checksum failure)."""
    computed, _ = compute(images, keys, first_missing(keys, set(store.missing(keys))), network, store,
                          batch_size=batch_size, num_workers=0, max_pixels=max_pixels)
    return computed


def compute(
    images: Sequence[ImageInput],
    keys: Sequence[str | None],
    todo: Sequence[int],
    network: FrozenNetwork,
    store: Store,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: tqdm | None = None,
    fail_fast: bool = False,
    n_cached: int = 0,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, list[ImageError]]:
    """Run the network on the inputs at indices ``todo``, storing each batch under their ``keys``.

    Returns the number of vectors computed and the decoding failures, each naming its input. With
    ``fail_fast`` the first failure is raised, after the good vectors of its batch are stored.
    """
    if not todo:
        return 0, []
    network.prepare(len(todo), batch_size)
    workers = default_num_workers(len(todo), batch_size, network.device) if num_workers is None else num_workers
    loader = DataLoader(
        _Decode([(i, images[i]) for i in todo], network.preprocessing, max_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=network.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=_yield_to_the_network if workers and _decoders_should_yield(network.device) else None,
    )
    computed, errors = 0, []
    for indices, batch, batch_errors in _iterate(loader):
        errors.extend(batch_errors)
        if batch is not None:
            store.write([keys[i] for i in indices], network(batch))
            computed += len(indices)
        if fail_fast and batch_errors:
            raise batch_errors[0]
        if progress is not None:
            progress.update(len(indices) + len(batch_errors))
            progress.set_postfix(cached=n_cached, computed=computed, failed=len(errors), refresh=False)
    return computed, errors


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


class _Decode(Dataset):
    """Decoding, resizing and cropping (to uint8), run in DataLoader workers so the network never waits on PIL."""

    def __init__(self, items: Sequence[tuple[int, ImageInput]], preprocessing: Preprocessing, max_pixels: int):
        self.items, self.preprocessing, self.max_pixels = items, preprocessing, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | ImageError]:
        index, image = self.items[position]
        try:
            return index, self.preprocessing.decode(image, index, self.max_pixels)
        except ImageError as error:
            return index, error


def _collate(samples: list[tuple[int, Any]]) -> tuple[list[int], torch.Tensor | None, list[ImageError]]:
    good = [(i, t) for i, t in samples if isinstance(t, torch.Tensor)]
    errors = [t for _, t in samples if isinstance(t, ImageError)]
    batch = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], batch, errors


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
