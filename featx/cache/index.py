"""Where each key of a namespace lives (shard, row), held as sorted arrays: 24 bytes per key, shared by
every :class:`~featx.cache.Namespace` of one folder in a process, and brought up to date by reading only
the keys files of shards it has not seen (and forgetting shards that are gone).

A key is indexed by the first 128 bits of its digest (content keys are sha256 hex; any other string is
hashed to 128 bits). Lookups search the high 64 bits and confirm the low 64; the reader still compares the
full key stored beside the vector before it trusts a row.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_HEX_VALUES = np.full(256, 255, dtype=np.uint8)
_HEX_VALUES[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX_VALUES[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX_VALUES[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def digests(keys: np.ndarray | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) uint64 halves of each key's 128-bit digest; ``keys`` as (ASCII) str or fixed-width bytes."""
    raw = np.ascontiguousarray(keys, dtype="S64")
    if raw.size == 0:
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    chars = raw.view(np.uint8).reshape(len(raw), 64)
    nibbles = _HEX_VALUES[chars[:, :32]]
    hexadecimal = (nibbles != 255).all(axis=1) & (chars[:, 63] != 0)  # 64 hex characters: a content key
    packed = (nibbles[:, 0::2] << 4) | (nibbles[:, 1::2] & 15)  # 16 bytes: the digest's first half
    halves = np.ascontiguousarray(packed).view(">u8").astype(np.uint64)
    high, low = halves[:, 0].copy(), halves[:, 1].copy()
    for i in np.flatnonzero(~hexadecimal):  # rare: keys that are not sha256 hex
        digest = hashlib.blake2b(bytes(raw[i]), digest_size=16).digest()
        high[i], low[i] = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")
    return high, low


def _sorted_search(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """``np.searchsorted`` for many needles, searched in sorted order: memory-friendly, twice as fast at 1M."""
    if len(needles) < 1024:
        return np.searchsorted(haystack, needles)
    order = np.argsort(needles)
    positions = np.empty(len(needles), dtype=np.intp)
    positions[order] = np.searchsorted(haystack, needles[order])
    return positions


class DigestSet:
    """A snapshot of the keys an index holds, 16 bytes a key and quick to pickle: what decoding workers
    test ``key in known`` against to skip decoding what the cache has."""

    def __init__(self, high: np.ndarray, low: np.ndarray):
        order = np.lexsort((low, high))
        self._high, self._low = high[order], low[order]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:  # a content key (sha256 hex): no array work for one key
            high, low = np.uint64(int(key[:16], 16)), np.uint64(int(key[16:32], 16))
            if len(key) != 64:
                raise ValueError
        except ValueError:
            highs, lows = digests([key])
            high, low = highs[0], lows[0]
        start = int(np.searchsorted(self._high, high))
        while start < len(self._high) and self._high[start] == high:
            if self._low[start] == low:
                return True
            start += 1
        return False

    def __len__(self) -> int:
        return len(self._high)


class KeyIndex:
    """key -> (shard, row) of one namespace folder. Thread-safe; see :func:`shared_index`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shard_ids: dict[str, int] = {}
        self._shard_names: list[str] = []
        self._high = np.empty(0, np.uint64)
        self._low = np.empty(0, np.uint64)
        self._shard = np.empty(0, np.int32)
        self._row = np.empty(0, np.int32)
        self._forgotten: dict[int, set[int]] = {}  # shard id -> rows no longer trusted

    def __len__(self) -> int:
        """Distinct live keys."""
        live = self._shard >= 0
        return (
            len(np.unique(np.stack([self._high[live], self._low[live]], axis=1), axis=0)) if live.any() else 0
        )

    @property
    def shards(self) -> int:
        """Shards indexed now."""
        return len(self._shard_ids)

    @property
    def nbytes(self) -> int:
        return self._high.nbytes + self._low.nbytes + self._shard.nbytes + self._row.nbytes

    def sync(self, shards: Sequence[str], load_keys: Callable[[str], np.ndarray | None]) -> None:
        """Match the committed ``shards``: read the keys of new ones, forget vanished ones."""
        with self._lock:
            present = set(shards)
            gone = [self._shard_ids[name] for name in self._shard_ids if name not in present]
            if gone:
                keep = ~np.isin(self._shard, gone)
                self._take(keep)
                for shard_id in gone:
                    del self._shard_ids[self._shard_names[shard_id]]
                    self._forgotten.pop(shard_id, None)
            new = [
                (name, keys)
                for name in shards
                if name not in self._shard_ids
                if (keys := load_keys(name)) is not None
            ]
            if new:
                self._add(new)

    def add(self, shard: str, keys: np.ndarray) -> None:
        """Index a shard this process has just committed."""
        with self._lock:
            if shard not in self._shard_ids:
                self._add([(shard, keys)])

    def locate(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The shard id (-1 if absent; see :meth:`shard_name`) and row of each key."""
        high, low = digests(keys)
        with self._lock:
            n = len(self._high)
            positions = np.minimum(_sorted_search(self._high, high), max(n - 1, 0))
            shards = np.full(len(high), -1, dtype=np.int32)
            rows = np.full(len(high), -1, dtype=np.int64)
            if n == 0:
                return shards, rows
            same_high = self._high[positions] == high
            hit = same_high & (self._low[positions] == low) & (self._shard[positions] >= 0)
            shards[hit], rows[hit] = self._shard[positions[hit]], self._row[positions[hit]]
            for i in np.flatnonzero(same_high & ~hit):  # a shared high half, or a forgotten duplicate: scan
                stop = positions[i]
                while stop < n and self._high[stop] == high[i]:
                    if self._low[stop] == low[i] and self._shard[stop] >= 0:
                        shards[i], rows[i] = self._shard[stop], self._row[stop]
                        break
                    stop += 1
        return shards, rows

    def snapshot(self) -> DigestSet:
        """The keys held now (those whose rows are trusted)."""
        with self._lock:
            live = self._shard >= 0
            return DigestSet(self._high[live], self._low[live])

    def shard_name(self, shard_id: int) -> str:
        return self._shard_names[shard_id]

    def forget(self, shard: str, rows: Sequence[int]) -> None:
        """Stop trusting these rows: their vectors failed a checksum (and will be computed again)."""
        with self._lock:
            shard_id = self._shard_ids.get(shard)
            if shard_id is not None:
                self._shard[(self._shard == shard_id) & np.isin(self._row, rows)] = -1
                self._forgotten.setdefault(shard_id, set()).update(np.asarray(rows).tolist())

    def forgotten(self, shard_id: int) -> np.ndarray:
        """The rows of a shard that :meth:`forget` stopped trusting (readers that skip the index check)."""
        with self._lock:
            return np.fromiter(self._forgotten.get(shard_id, ()), dtype=np.int64)

    def _add(self, shards: list[tuple[str, np.ndarray]]) -> None:
        highs, lows, ids, rows = [self._high], [self._low], [self._shard], [self._row]
        for name, keys in shards:
            self._shard_ids[name] = len(self._shard_names)
            self._shard_names.append(name)
            high, low = digests(keys)
            highs.append(high), lows.append(low)
            (
                ids.append(np.full(len(keys), self._shard_ids[name], np.int32)),
                rows.append(np.arange(len(keys), dtype=np.int32)),
            )
        self._high, self._low = np.concatenate(highs), np.concatenate(lows)
        self._shard, self._row = np.concatenate(ids), np.concatenate(rows)
        self._take(np.argsort(self._high, kind="stable"))

    def _take(self, selection: np.ndarray) -> None:
        self._high, self._low = self._high[selection], self._low[selection]
        self._shard, self._row = self._shard[selection], self._row[selection]


_SHARED: dict[Path, KeyIndex] = {}
_SHARED_LOCK = threading.Lock()


def shared_index(folder: Path) -> KeyIndex:
    """The one index of ``folder`` in this process, so that repeated opens (every ``transform`` call of a
    grid search) pay only for shards committed since."""
    with _SHARED_LOCK:
        return _SHARED.setdefault(folder.resolve(), KeyIndex())
