"""Decoded images gathered into full network batches; each batch is run through the network and handed to
one background writer, which commits every batch waiting for it as one shard (a group commit).

Why: a commit writes two files and fsyncs each. On a CPU the network's second per batch hides that; on a
GPU the network takes milliseconds and one fsync per batch would set the pace (an H200 ran ResNet-50 at
9,000 images/s alone and featx at 472 images/s, one commit per batch of 64). With a group commit the
device never waits for the disk: while one shard is written, the next batches queue, and the next shard
takes them all. Shards grow only as much as the disk is slower than the network, every commit stays
atomic, and a killed job loses only the batches that were waiting (up to ``MAX_WAITING_BYTES``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from featx.cache import Store
from featx.models.network import Network
from featx.models.pending import PendingVectors
from featx.models.preprocessing import device_index

MAX_WAITING_BYTES = 256 * 2**20  # vectors the network may run ahead of the disk by (at least one batch)


class Batches:
    """Rows of decoded uint8 pixels, each distinct content once, cut into full batches for the network.

    Use as a context manager: leaving it waits for every commit (and raises a writer's error)."""

    def __init__(self, network: Network, store: Store, batch_size: int):
        self.network, self.batch_size = network, batch_size
        self.computed = 0
        self._keys: list[str] = []
        self._chunks: deque[torch.Tensor] = deque()  # pixel rows of ``_keys``, in order, as they arrived
        self._taken: set[str] = set()
        self._prepared, self._expected = False, 0
        self._writer = GroupWriter(store)

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._writer.close()  # lets computed batches land, also when the job is failing
        if kind is None:
            self._writer.check()

    def add(self, keys: Sequence[str], pixels: torch.Tensor) -> None:
        """``pixels[i]`` is the image of ``keys[i]``; content already added in this run is dropped."""
        fresh = []
        for row, key in enumerate(keys):
            if key not in self._taken:
                self._taken.add(key)
                fresh.append(row)
        if fresh:
            self._keys.extend(keys[row] for row in fresh)
            self._chunks.append(
                pixels
                if len(fresh) == len(pixels)
                else pixels.index_select(0, device_index(fresh, pixels.device))
            )

    def commit_full(self, expected: int) -> None:
        """Commit every full batch; ``expected`` estimates how many images this job computes in all (the
        network compiles, or not, for that number before its first batch)."""
        self._expected = expected
        while len(self._keys) >= self.batch_size:
            self._commit(self.batch_size)

    def commit_all(self) -> None:
        """Commit what is left and wait until every commit has landed."""
        while self._keys:
            self._commit(self.batch_size)
        self._writer.flush()

    def _commit(self, n: int) -> None:
        if not self._prepared:
            self.network.prepare(max(self._expected, len(self._keys)), self.batch_size)
            self._prepared = True
        keys = self._keys[:n]
        del self._keys[:n]
        self._writer.put(keys, self.network.submit(self._take(len(keys))))
        self.computed += len(keys)

    def _take(self, n: int) -> torch.Tensor:
        """The next ``n`` rows: a worker's batch as it came (pinned, no copy) when it is exactly one."""
        pieces = []
        while n:
            chunk = self._chunks.popleft()
            if len(chunk) > n:
                self._chunks.appendleft(chunk[n:])
                chunk = chunk[:n]
            pieces.append(chunk)
            n -= len(chunk)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)


class GroupWriter:
    """A thread that commits every batch waiting for it as one shard. ``put`` blocks only while more than
    ``MAX_WAITING_BYTES`` wait; a failed commit is raised in the job's thread by the next call."""

    def __init__(self, store: Store):
        self._store = store
        self._waiting: list[tuple[Sequence[str], PendingVectors]] = []
        self._busy = self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        # started at the first batch, once the DataLoader has forked its workers from a single-threaded process
        self._thread = threading.Thread(target=self._run, name="featx-commit", daemon=True)

    def put(self, keys: Sequence[str], vectors: PendingVectors) -> None:
        if self._thread.ident is None:
            self._thread.start()
        with self._changed:
            while self._waiting and self._error is None and self._waiting_bytes() >= MAX_WAITING_BYTES:
                self._changed.wait()
            self.check()
            self._waiting.append((keys, vectors))
            self._changed.notify_all()

    def flush(self) -> None:
        """Wait until everything put so far is committed."""
        with self._changed:
            while (self._waiting or self._busy) and self._error is None:
                self._changed.wait()
            self.check()

    def close(self) -> None:
        """Commit what waits, then stop the thread (a failed commit stays for :meth:`check`)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._thread.ident is not None:
            self._thread.join()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def _waiting_bytes(self) -> int:
        return sum(vectors.nbytes for _, vectors in self._waiting)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._waiting and not self._closed:
                    self._changed.wait()
                if not self._waiting:
                    return
                group, self._waiting, self._busy = self._waiting, [], True
                self._changed.notify_all()
            try:
                self._store.write(
                    [key for keys, _ in group for key in keys],
                    np.concatenate([vectors.result() for _, vectors in group]),
                )
            except BaseException as error:  # handed to the job's thread, which raises it
                with self._changed:
                    self._error, self._busy = error, False
                    self._changed.notify_all()
                return
            with self._changed:
                self._busy = False
                self._changed.notify_all()
