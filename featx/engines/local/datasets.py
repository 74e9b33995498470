"""What a local job's decoding workers run: each input read once, keyed by its content and decoded only
where the store lacks that key (a file list), or each worker's shards streamed (a shard stream); and how a
worker's batch is packed for the trip to the main process (one tensor of pixels, the rest as outcomes).
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from featx.engines.keyed import key_and_decode
from featx.engines.local import seen
from featx.engines.streaming import Streamed, stream_shard, without_pixels
from featx.errors import ImageError
from featx.inputs.bounds import byte_bound
from featx.inputs.images import ImageInput, describe, read_content
from featx.models.preprocessing import Preprocessing


def unremembered(images: Sequence[ImageInput], known: Container[str], keys: np.ndarray) -> list[int]:
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


class ReadKeyDecode(Dataset):
    """One input: read once, keyed by its content, and decoded (to a uint8 ``3 x crop x crop`` tensor)
    only if its key is not in ``known``. Runs in DataLoader workers, so the network never waits on I/O or
    PIL. A local file's stat signature comes back too, unless the file changed while it was read."""

    def __init__(
        self,
        images: Sequence[ImageInput],
        todo: Sequence[int],
        known: Container[str],
        preprocessing: Preprocessing,
        max_pixels: int,
    ):
        self.images, self.todo, self.known = images, todo, known
        self.preprocessing, self.max_pixels = preprocessing, max_pixels

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, position: int) -> tuple[int, str | None, torch.Tensor | ImageError | None, Any]:
        index = self.todo[position]
        image = self.images[index]
        before = seen.signature(image)
        key, pixels, error = key_and_decode(
            lambda: read_content(image, index, byte_bound(self.max_pixels)),
            index,
            describe(image),
            self.known,
            self.preprocessing,
            self.max_pixels,
        )
        unchanged = key is not None and before is not None and seen.signature(image) == before
        return index, key, error if error is not None else pixels, before if unchanged else None


def stack_decoded(samples: list[tuple]) -> tuple[list[tuple], torch.Tensor | None]:
    """In the worker: the batch's decoded pixels as one tensor (one transfer between processes, one pinned
    copy for the GPU), in sample order; each sample keeps its index, key, outcome and file signature, where
    the outcome is an error, None (cached), True (its row is in the tensor) or JPEG bytes for the device."""
    decoded = [result for _, _, result, _ in samples if isinstance(result, torch.Tensor)]
    outcomes = [
        (index, key, True if isinstance(result, torch.Tensor) else result, signature)
        for index, key, result, signature in samples
    ]
    return outcomes, torch.stack(decoded) if decoded else None


def stack_streamed(
    entries: list[Streamed],
) -> tuple[list[Streamed], list[bool | bytes], torch.Tensor | None]:
    """In the worker, as :func:`stack_decoded`: the entries without their pixels, each one's outcome
    (True: a row of the tensor; bytes: a JPEG for the device; False: nothing to compute), and the tensor."""
    outcomes = [
        entry.pixels if isinstance(entry.pixels, bytes) else entry.pixels is not None for entry in entries
    ]
    pixels = [entry.pixels for entry in entries if isinstance(entry.pixels, torch.Tensor)]
    return [without_pixels(entry) for entry in entries], outcomes, torch.stack(pixels) if pixels else None


class StreamShards(IterableDataset):
    """The samples of this worker's shards (every shard when there are no workers), streamed, keyed, and
    decoded where ``known`` lacks them."""

    def __init__(
        self, shards: list[str], known: Container[str], preprocessing: Preprocessing, max_pixels: int
    ):
        self.shards, self.known, self.preprocessing, self.max_pixels = (
            shards,
            known,
            preprocessing,
            max_pixels,
        )

    def __iter__(self) -> Iterator[Streamed]:
        worker = get_worker_info()
        mine = (
            range(len(self.shards))
            if worker is None
            else range(worker.id, len(self.shards), worker.num_workers)
        )
        for number in mine:
            yield from stream_shard(
                number, self.shards[number], self.known, self.preprocessing, self.max_pixels
            )
