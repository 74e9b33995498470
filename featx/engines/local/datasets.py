"""What a local job's decoding workers run: each input read once, keyed by its content and decoded only
where the store lacks that key (a file list), or each worker's shards streamed (a shard stream); and how a
worker's batch is packed for the trip to the main process (:class:`Packed`: a few buffers a batch).
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Any, NamedTuple

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


#: What a worker did with each sample of its batch, one code each (:class:`Packed`).
CACHED, DECODED, JPEG, FAILED = 0, 1, 2, 3


class Packed(NamedTuple):
    """A worker's batch as a few buffers, so that one batch is a handful of objects between processes and
    the main process's bookkeeping is array operations: each sample's index, key (``b""`` where unread)
    and code; the failures and the stat signatures by position in the batch; the decoded pixels as one
    tensor and the JPEG bytes left for the device concatenated, sample ``i``'s JPEG is
    ``jpegs[offsets[j]:offsets[j + 1]]`` for the j-th sample coded ``JPEG``."""

    indices: np.ndarray
    keys: np.ndarray
    codes: np.ndarray
    errors: dict[int, ImageError]
    signatures: dict[int, Any]
    pixels: torch.Tensor | None
    jpegs: torch.Tensor | None
    offsets: np.ndarray

    def jpeg_views(self) -> list[torch.Tensor]:
        """The JPEGs' bytes, each a view of the one buffer (no copy)."""
        if self.jpegs is None:
            return []
        return [self.jpegs[a:b] for a, b in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())]


def pack(
    indices: Sequence[int], keys: Sequence[str | None], outcomes: Sequence[Any], signatures: dict[int, Any]
) -> Packed:
    """In the worker: a batch's outcomes (pixels, JPEG bytes, an error, or None for cached) packed."""
    codes = np.array(
        [
            DECODED
            if isinstance(o, torch.Tensor)
            else JPEG
            if isinstance(o, bytes)
            else FAILED
            if isinstance(o, ImageError)
            else CACHED
            for o in outcomes
        ],
        dtype=np.uint8,
    )
    decoded = [o for o in outcomes if isinstance(o, torch.Tensor)]
    jpegs = [o for o in outcomes if isinstance(o, bytes)]
    offsets = np.cumsum([0, *map(len, jpegs)], dtype=np.int64)
    return Packed(
        np.asarray(indices, dtype=np.int64),
        np.array([key or b"" for key in keys], dtype="S64"),
        codes,
        {n: o for n, o in enumerate(outcomes) if isinstance(o, ImageError)},
        signatures,
        torch.stack(decoded) if decoded else None,
        torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8) if jpegs else None,
        offsets,
    )


def stack_decoded(samples: list[tuple]) -> Packed:
    """In the worker: a file list's batch packed (see :class:`Packed`), in sample order."""
    return pack(
        [index for index, *_ in samples],
        [key for _, key, _, _ in samples],
        [result for _, _, result, _ in samples],
        {n: signature for n, (*_, signature) in enumerate(samples) if signature is not None},
    )


def stack_streamed(entries: list[Streamed]) -> tuple[list[Streamed], Packed]:
    """In the worker, as :func:`stack_decoded`: the entries without their pixels (the manifest's rows) and
    the batch packed; an entry with nothing to compute (cached, failed, skipped) is coded ``CACHED`` here,
    its entry says which."""
    outcomes = [entry.pixels for entry in entries]
    packed = pack(range(len(entries)), [entry.key for entry in entries], outcomes, {})
    return [without_pixels(entry) for entry in entries], packed


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
