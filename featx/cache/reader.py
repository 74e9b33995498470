"""Reading many vectors out of a namespace's shards at once: found, copied and verified at file-read speed.

- **Found.** Keys asked in the order they were stored (a whole cache, or a job's manifest read back) are
  recognised by looking up one key in ``STRIDE`` in the index and comparing the stored keys in between;
  only the others are searched for.
- **Copied.** Keys that fill consecutive rows of the output from consecutive rows of one shard form a run,
  read by ``preadv`` straight into the output; the rest are gathered through the shard's memory map.
- **Verified.** Each piece of about ``PIECE_BYTES`` is checked by one crc32 against the crc32 its rows' stored
  checksums combine to (:func:`~featx.cache.checksums.combined_checksums`); only a piece that fails is checked
  row by row. File reads and ISA-L's crc32 release the GIL, so pieces run on a few threads.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from featx.cache.checksums import block_checksum, combined_checksums, key_tags, vector_checksums
from featx.cache.files import KEY_DTYPE, OPEN_SHARDS
from featx.cache.index import KeyIndex
from featx.cache.store import Keys


class Shards(Protocol):
    """What a bulk read needs of a namespace: its index and its shard files (the reader never imports
    :class:`~featx.cache.namespace.Namespace`, which imports the reader)."""

    tag: int  # the namespace's fingerprint tag, bound into every stored checksum

    def index(self) -> KeyIndex: ...

    def shard_keys(self, shard: str) -> np.ndarray: ...

    def shard_vectors(self, shard: str, width: int | None) -> np.ndarray | None: ...

    def vectors_path(self, shard: str) -> Path: ...

    def committed(self, shard: str) -> bool: ...

    def warn_unreadable(self, shard: str, error: Exception) -> None: ...


STRIDE = 16  # keys in storage order: one in STRIDE is looked up
RUN_ROWS = 8  # shorter runs are gathered through the memory map
PIECE_BYTES = 4 << 20  # copied and verified at once
PARALLEL_BYTES = 16 << 20  # smaller reads stay on the calling thread
FIRST_CHUNK_KEYS, CHUNK_KEYS = 1 << 12, 1 << 16  # keys found while the previous chunk is copied
THREADS = 4


@dataclass
class Piece:
    """Rows of one shard bound for rows of the output: a run (two slices) or a gather (two index arrays)."""

    shard: str
    rows: slice | np.ndarray
    targets: slice | np.ndarray
    stored_checksums: np.ndarray
    expected: int = 0


@dataclass
class Located:
    """Where each of the keys asked sits: shard name id (-1: not found), row, and whether the stored key was
    already compared with the key asked."""

    shards: np.ndarray
    rows: np.ndarray
    compared: np.ndarray


class BulkRead:
    """One :meth:`Namespace.read`: the output, filled chunk by chunk, and the positions that failed.

    Each :meth:`attempt` finds a chunk of keys and plans its pieces on the calling thread while the pieces
    of earlier chunks are being copied, so finding the keys costs a bulk read little beyond the copy.
    """

    def __init__(self, namespace: Shards, keys: Keys):
        self.namespace, self.keys = namespace, keys
        if isinstance(keys, np.ndarray):  # already encoded
            self.encoded, self._encoded = keys.astype(KEY_DTYPE["key"], copy=False), len(keys)
        else:  # encoded chunk by chunk, as first asked
            self.encoded, self._encoded = np.empty(len(keys), dtype=KEY_DTYPE["key"]), 0
        self.out: np.ndarray | None = None
        self.corrupt: list[int] = []  # positions in the keys asked
        self._files = ExitStack()
        self._handles: dict[str, int] = {}
        self._maps: dict[str, np.ndarray] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._copying: list[tuple[Piece, Future]] = []

    def __enter__(self) -> BulkRead:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        self._close_files()

    def _close_files(self) -> None:
        self._files.close()
        self._handles.clear()
        self._maps.clear()

    def attempt(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start reading the keys at ``positions``; return those not found and those whose shard vanished.
        The vectors are in :attr:`out` once :meth:`wait` returns."""
        if len(positions) and positions[-1] >= self._encoded:
            self.encoded[self._encoded : positions[-1] + 1] = self.keys[self._encoded : positions[-1] + 1]
            self._encoded = int(positions[-1]) + 1
        located = locate(self.namespace, self.encoded[positions])
        found = located.shards >= 0
        vanished: list[np.ndarray] = []
        groups = _group(located.shards[found], np.flatnonzero(found))
        for batch in range(0, len(groups), OPEN_SHARDS):  # at most OPEN_SHARDS files open at once
            if len(self._handles) + len(groups[batch : batch + OPEN_SHARDS]) > OPEN_SHARDS:
                self.wait()
                self._close_files()
            pieces: list[Piece] = []
            for shard_id, members in groups[batch : batch + OPEN_SHARDS]:
                shard = self.namespace.index().shard_name(shard_id)
                here, rows = positions[members], located.rows[members]
                try:
                    mapped = self._open(shard)
                except FileNotFoundError as missing:
                    if not self.namespace.committed(shard):
                        vanished.append(here)  # merged away by a compaction: look the keys up again
                        continue
                    self.namespace.warn_unreadable(shard, missing)  # keys without vectors: damage
                    mapped = None
                if mapped is None:
                    self._fail(shard, here, rows)
                    continue
                stored = self.namespace.shard_keys(shard)
                unchecked = ~located.compared[members]
                wrong = np.zeros(len(members), dtype=bool)
                wrong[unchecked] = stored["key"][rows[unchecked]] != self.encoded[here[unchecked]]
                self._fail(shard, here[wrong], rows[wrong])
                rows, here = rows[~wrong], here[~wrong]
                # the vectors' own crc32s: the stored ones unbound from the keys asked (== the keys stored)
                # and from this namespace's fingerprint (a shard copied from another fails here)
                expected = (
                    stored["crc32"][rows] ^ key_tags(self.encoded[here]) ^ np.uint32(self.namespace.tag)
                )
                pieces.extend(_plan(shard, rows, here, expected, mapped.shape[1]))
            if pieces:
                self._copy(pieces)
        return positions[~found], np.concatenate(vanished) if vanished else np.empty(0, np.int64)

    def wait(self) -> None:
        """Let every piece started finish, and mark the rows that failed."""
        copying, self._copying = self._copying, []
        warned: set[str] = set()
        for piece, future in copying:
            result = future.result()
            rows, targets = _indices(piece.rows), _indices(piece.targets)
            if isinstance(result, Exception):
                if piece.shard not in warned:
                    self.namespace.warn_unreadable(piece.shard, result)
                    warned.add(piece.shard)
                self._fail(piece.shard, targets, rows)
            elif len(result):
                self._fail(piece.shard, targets[result], rows[result])

    def _open(self, shard: str) -> np.ndarray | None:
        """The shard's vectors, mapped and opened for ``preadv`` (None if unreadable); the output is
        allocated at the first shard, whose width every other must have."""
        if shard not in self._maps:
            mapped = self.namespace.shard_vectors(shard, None if self.out is None else self.out.shape[1])
            if mapped is None:
                return None
            self._handles[shard] = os.open(self.namespace.vectors_path(shard), os.O_RDONLY)
            self._files.callback(os.close, self._handles[shard])
            self._maps[shard] = mapped
            if self.out is None:
                self.out = np.empty((len(self.encoded), mapped.shape[1]), dtype=np.float32)
        return self._maps[shard]

    def _copy(self, pieces: list[Piece]) -> None:
        """Copy and verify ``pieces``: runs on a few threads (preadv and crc32 release the GIL), gathers on
        this one (numpy's fancy indexing holds the GIL, so threads would only contend for it)."""
        row_bytes = self.out.shape[1] * 4
        flat = np.concatenate([piece.stored_checksums for piece in pieces])
        starts = np.cumsum([0] + [len(piece.stored_checksums) for piece in pieces[:-1]])
        for piece, expected in zip(pieces, combined_checksums(flat, starts, row_bytes)):
            piece.expected = int(expected)
        threads = min(THREADS, len(os.sched_getaffinity(0)))
        if self._pool is None and threads > 1 and len(self.encoded) * row_bytes >= PARALLEL_BYTES:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="featx-read")
        for piece in pieces:
            if self._pool is not None and isinstance(piece.rows, slice):
                self._copying.append((piece, self._pool.submit(self._copy_piece, piece)))
            else:
                done: Future = Future()
                done.set_result(self._copy_piece(piece))
                self._copying.append((piece, done))

    def _copy_piece(self, piece: Piece) -> np.ndarray | Exception:
        try:
            return _copy_and_verify(piece, self.out, self._handles[piece.shard], self._maps[piece.shard])
        except (OSError, EOFError) as error:
            return error

    def _fail(self, shard: str, positions: np.ndarray, rows: np.ndarray) -> None:
        """Untrust these rows (they will be computed again) and report their keys."""
        if len(positions):
            self.corrupt.extend(positions.tolist())
            self.namespace.index().forget(shard, rows)


def chunks(positions: np.ndarray, shards: int) -> list[np.ndarray]:
    """``positions`` cut into chunks that double from ``FIRST_CHUNK_KEYS`` to ``CHUNK_KEYS``: the copying
    starts soon, and the finding of later chunks overlaps it. Not across more than ``OPEN_SHARDS`` shards,
    though: each chunk could need every shard opened again."""
    if shards > OPEN_SHARDS:
        return [positions]
    bounds, size = [], FIRST_CHUNK_KEYS
    while (bounds[-1] if bounds else 0) + size < len(positions):
        bounds.append((bounds[-1] if bounds else 0) + size)
        size = min(2 * size, CHUNK_KEYS)
    return np.split(positions, bounds)


def locate(namespace: Shards, encoded: np.ndarray) -> Located:
    """Find every key: runs in storage order by comparing stored keys, the rest through the index."""
    index = namespace.index()
    n = len(encoded)
    shards, rows = np.full(n, -1, dtype=np.int32), np.full(n, -1, dtype=np.int64)
    compared = np.zeros(n, dtype=bool)
    heads = np.arange(0, n, STRIDE)
    head_shards, head_rows = index.locate(encoded[heads])
    shards[heads], rows[heads] = head_shards, head_rows
    # span j runs from head j to head j + 1 (the last one to the end): in storage order when both heads
    # sit STRIDE rows apart in one shard (the last one: when its head was found)
    apart = (head_shards[:-1] == head_shards[1:]) & (head_rows[1:] - head_rows[:-1] == STRIDE)
    spans = np.flatnonzero(np.append(apart, True) & (head_shards >= 0))
    for run in np.split(spans, np.flatnonzero(np.diff(spans) != 1) + 1) if len(spans) else []:
        start, stop = heads[run[0]], heads[run[-1] + 1] if run[-1] + 1 < len(heads) else n
        first_row = head_rows[run[0]]
        try:
            stored = namespace.shard_keys(index.shard_name(head_shards[run[0]]))["key"]
            stored = stored[first_row : first_row + stop - start]
        except (OSError, ValueError, EOFError):
            continue  # left to the index; the read reports the shard
        same = np.zeros(stop - start, dtype=bool)
        same[: len(stored)] = stored == encoded[start : start + len(stored)]
        untrusted = index.forgotten(head_shards[run[0]])  # rows that failed a checksum: found again elsewhere
        if len(untrusted):
            same[np.isin(np.arange(first_row, first_row + len(same)), untrusted)] = False
        shards[start:stop][same] = head_shards[run[0]]
        rows[start:stop][same] = first_row + np.flatnonzero(same)
        compared[start:stop] = same
    rest = np.flatnonzero(~compared)
    rest = rest[rest % STRIDE != 0]  # heads are looked up already
    shards[rest], rows[rest] = index.locate(encoded[rest])
    return Located(shards, rows, compared)


def _group(shards: np.ndarray, members: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``members`` grouped by shard id, each group in ascending order."""
    order = np.argsort(shards, kind="stable")
    ids, starts = np.unique(shards[order], return_index=True)
    return list(zip(ids.tolist(), np.split(members[order], starts[1:])))


def _plan(
    shard: str, rows: np.ndarray, targets: np.ndarray, checksums: np.ndarray, width: int
) -> list[Piece]:
    """Pieces for one shard (``checksums[i]``: the crc32 row ``rows[i]`` must have): its runs (consecutive rows into consecutive targets) of at least ``RUN_ROWS``,
    cut at ``PIECE_BYTES``, then every other row gathered in row order (the shard is read forward and the
    output written at random, not both at random), in pieces of the same size."""
    if not len(rows):
        return []
    per_piece = max(1, PIECE_BYTES // (width * 4))
    bounds = np.concatenate(
        [[0], np.flatnonzero((np.diff(rows) != 1) | (np.diff(targets) != 1)) + 1, [len(rows)]]
    )
    lengths = np.diff(bounds)
    pieces = []
    for run in np.flatnonzero(lengths >= RUN_ROWS):
        for cut in range(bounds[run], bounds[run + 1], per_piece):
            size = min(per_piece, bounds[run + 1] - cut)
            first_row, first_target = int(rows[cut]), int(targets[cut])
            pieces.append(
                Piece(
                    shard,
                    slice(first_row, first_row + size),
                    slice(first_target, first_target + size),
                    checksums[cut : cut + size],
                )
            )
    scattered = np.flatnonzero(np.repeat(lengths < RUN_ROWS, lengths))
    scattered = scattered[np.argsort(rows[scattered], kind="stable")]
    for cut in range(0, len(scattered), per_piece):
        chosen = scattered[cut : cut + per_piece]
        pieces.append(Piece(shard, rows[chosen], targets[chosen], checksums[chosen]))
    return pieces


def _copy_and_verify(piece: Piece, out: np.ndarray, handle: int, mapped: np.ndarray) -> np.ndarray:
    """Copy one piece into ``out``; return the offsets (within the piece) of rows that fail their checksum.

    A file cut short since it was mapped raises EOFError: a gather through the map would die of SIGBUS.
    """
    row_bytes = mapped.strides[0]
    if isinstance(piece.rows, slice):
        copied = out[piece.targets]
        wanted, offset = memoryview(copied).cast("B"), mapped.offset + piece.rows.start * row_bytes
        while len(wanted):
            read = os.preadv(handle, [wanted], offset)
            if not read:
                raise EOFError("the file ends before its last vector")
            wanted, offset = wanted[read:], offset + read
    else:
        if os.fstat(handle).st_size < mapped.offset + (int(piece.rows.max()) + 1) * row_bytes:
            raise EOFError("the file ends before its last vector")
        copied = np.asarray(mapped[piece.rows])  # only the rows asked are touched
        out[piece.targets] = copied
    if block_checksum(copied) == piece.expected:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(vector_checksums(copied) != piece.stored_checksums)


def _indices(selection: slice | np.ndarray) -> np.ndarray:
    return np.arange(selection.start, selection.stop) if isinstance(selection, slice) else selection
