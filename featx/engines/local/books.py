"""The job's books, one kind for a file list and one for a shard stream: what the job's thread learns from
each worker batch (keys, failures, counts) and the :class:`Work` it hands to the pipeline. The loop that
drives either is one (``engine._drive``); only the books differ.

Each worker batch is a :class:`Packed`, so the books are kept array by array, not input by input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from featx.cache.store import key_strings
from featx.engines.local import seen
from featx.engines.local.datasets import CACHED, DECODED, JPEG, Packed
from featx.engines.local.stages import Work
from featx.engines.streaming import Streamed, assemble
from featx.errors import ImageError
from featx.inputs.images import ImageInput, describe


class FileBooks:
    """A file list's books: each input's key (in ``keys``), the failures, the cached count."""

    def __init__(self, images: Sequence[ImageInput], keys: np.ndarray, n_todo: int, n_cached: int):
        self.images, self.keys, self.n_todo, self.n_cached = images, keys, n_todo, n_cached
        self.failures: list[ImageError] = []
        self._seen = self._decoded = 0

    def take(self, packed: Packed) -> tuple[Work, int]:
        """The work of one worker batch, and how many inputs it held."""
        has_key = packed.keys != b""
        self.keys[packed.indices[has_key]] = packed.keys[has_key]
        for position, signature in packed.signatures.items():
            seen.remember(self.images[packed.indices[position]], signature, packed.keys[position].decode())
        self.failures += packed.errors.values()
        self.n_cached += int(np.count_nonzero(packed.codes == CACHED))
        jpeg = packed.codes == JPEG
        jpegs = [
            (index, describe(self.images[index]), key, content)
            for index, key, content in zip(
                packed.indices[jpeg].tolist(), key_strings(packed.keys[jpeg]), packed.jpeg_views()
            )
        ]
        decoded = key_strings(packed.keys[packed.codes == DECODED])
        self._decoded += len(decoded) + len(jpegs)
        self._seen += len(packed.codes)
        expected = round(self.n_todo * self._decoded / self._seen)
        return Work(decoded, packed.pixels, jpegs, expected), len(packed.codes)

    def device_failed(self, failures: list[ImageError]) -> None:
        self.failures += failures

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def first_failure(self) -> ImageError:
        return min(self.failures, key=lambda e: e.index)

    def postfix(self, computed: int) -> str:
        return f"cached={self.n_cached}, computed={computed}, failed={len(self.failures)}"


class ShardBooks:
    """A shard stream's books: every entry the decoders reported (the manifest's rows), in arrival order."""

    def __init__(self, shards: list[str]):
        self.shards = shards
        self.entries: list[Streamed] = []
        self.n_cached = self.n_failed = self._decoded = 0
        self._started: set[int] = set()

    def take(self, batch: tuple[list[Streamed], Packed]) -> tuple[Work, int]:
        streamed, packed = batch
        first = len(self.entries)  # a JPEG's index: its entry's place in ``entries``
        self.entries += streamed
        self._started.update(entry.shard for entry in streamed)
        self.n_failed += sum(entry.error is not None for entry in streamed)
        self.n_cached += sum(
            entry.key is not None and entry.error is None and entry.skipped is None
            for entry, code in zip(streamed, packed.codes.tolist())
            if code == CACHED
        )
        jpegs = [
            (first + position, streamed[position].path, streamed[position].key, content)
            for position, content in zip(np.flatnonzero(packed.codes == JPEG).tolist(), packed.jpeg_views())
        ]
        decoded = key_strings(packed.keys[packed.codes == DECODED])
        self._decoded += len(decoded) + len(jpegs)
        # how many this job computes is known only at its end: estimated from the shards begun so far
        expected = round(self._decoded * len(self.shards) / len(self._started))
        return Work(decoded, packed.pixels, jpegs, expected), len(streamed)

    def device_failed(self, failures: list[ImageError]) -> None:
        for failure in failures:
            entry = self.entries[failure.index]
            self.entries[failure.index] = replace(entry, error=failure.at(entry.position))
        self.n_failed += len(failures)

    @property
    def failed(self) -> bool:
        return self.n_failed > 0

    def first_failure(self) -> ImageError:
        return assemble(self.entries, self.shards, self.n_cached, 0)[1].errors[0]

    def postfix(self, computed: int) -> str:
        return (
            f"shards={len(self._started)}/{len(self.shards)}, cached={self.n_cached}, "
            f"computed={computed}, failed={self.n_failed}"
        )
