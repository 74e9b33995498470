"""One namespace of the on-disk cache: the vectors of one extractor fingerprint, as immutable shards.

Nothing is ever modified in place, so any number of processes may write at once, and a killed job loses
at most its unfinished batch. The index is rebuilt from the small keys files on open.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from featx.cache.files import (
    KEY_DTYPE,
    KEYS_SUFFIX,
    OPEN_SHARDS,
    TMP_PREFIX,
    VECTORS_SUFFIX,
    atomic_write,
    vector_checksums,
)
from featx.errors import OutputError, ParameterError


class Namespace:
    """The vectors of one extractor fingerprint inside a :class:`FeatureCache`."""

    def __init__(self, path: Path, fingerprint: Mapping[str, Any] | None = None):
        self.path = path
        if fingerprint is not None:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise OutputError(f"cannot create the feature cache folder {path}: {error.strerror or error}") from None
            meta = path / "namespace.json"
            if not meta.exists():
                text = json.dumps(fingerprint, indent=2, sort_keys=True).encode()
                atomic_write(meta, lambda handle: handle.write(text))
        self._index: dict[str, tuple[str, int]] | None = None
        # Per-instance LRU of open memory maps: each holds a file descriptor, so keep a bounded number.
        self._vectors = functools.lru_cache(maxsize=OPEN_SHARDS)(self._load_vectors)
        self._keys = functools.lru_cache(maxsize=OPEN_SHARDS)(self._load_keys)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return json.loads((self.path / "namespace.json").read_text())

    # -- reading ------------------------------------------------------------------------------------------

    def shard_names(self) -> list[str]:
        """Committed shards (those whose keys file exists), oldest first."""
        return sorted(p.name[: -len(KEYS_SUFFIX)] for p in self.path.glob(f"*{KEYS_SUFFIX}")
                      if not p.name.startswith(TMP_PREFIX))

    def index(self) -> dict[str, tuple[str, int]]:
        """key -> (shard, row), built from the small keys files only; later shards win for duplicates."""
        if self._index is None:
            index: dict[str, tuple[str, int]] = {}
            for shard in self.shard_names():
                try:
                    rows = self._keys(shard)
                except (OSError, ValueError, EOFError):
                    continue  # an unreadable shard is reported by verify(), not trusted here
                if rows.dtype != KEY_DTYPE or rows.ndim != 1:
                    continue
                for row, key in enumerate(rows["key"]):
                    index[key.decode()] = (shard, row)
            self._index = index
        return self._index

    def refresh(self) -> None:
        """Forget the index, so the next lookup sees shards other processes committed since (Ray actors)."""
        self._index = None

    def __len__(self) -> int:
        return len(self.index())

    def __contains__(self, key: str) -> bool:
        return key in self.index()

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys that have no vector here, in first-seen order."""
        index = self.index()
        return [key for key in dict.fromkeys(keys) if key not in index]

    def read(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Vectors for ``keys`` (all present), and the keys whose stored vector failed its checksum.

        Corrupt keys are dropped from this process's index so that the caller can recompute them. A shard
        whose vectors cannot be read at all (a garbled header, a truncated or reshaped file) counts as
        corrupt for every key it holds, with a warning: it is recomputed, never trusted and never fatal.
        """
        index = self.index()
        locations = [index[key] for key in keys]
        out: np.ndarray | None = None
        corrupt: list[str] = []
        by_shard: dict[str, list[int]] = {}
        for position, (shard, _) in enumerate(locations):
            by_shard.setdefault(shard, []).append(position)
        for shard, positions in by_shard.items():
            rows = np.array([locations[p][1] for p in positions])
            vectors = self._shard_rows(shard, rows, None if out is None else out.shape[1])
            if vectors is None:
                corrupt.extend(keys[p] for p in positions)
                continue
            expected = self._keys(shard)["crc32"][rows]
            if out is None:
                out = np.empty((len(keys), vectors.shape[1]), dtype=np.float32)
            out[positions] = vectors
            for position, ok in zip(positions, vector_checksums(vectors) == expected):
                if not ok:
                    corrupt.append(keys[position])
        for key in corrupt:
            index.pop(key, None)
        if out is None:
            out = np.empty((0, 0), dtype=np.float32)
        return out, corrupt

    def _shard_rows(self, shard: str, rows: np.ndarray, width: int | None) -> np.ndarray | None:
        """``rows`` of a shard's vectors, or None (with a warning) if the vectors file is unreadable or its
        shape does not match its keys file (and the width of the other shards read)."""
        try:
            vectors = self._vectors(shard)
            n_keys = len(self._keys(shard))
            if vectors.ndim != 2 or len(vectors) != n_keys or (width is not None and vectors.shape[1] != width):
                raise ValueError(f"vectors of shape {vectors.shape} for {n_keys} keys")
            return np.asarray(vectors[rows], dtype=np.float32)
        except (OSError, ValueError, EOFError) as error:
            warnings.warn(f"feature cache shard {self.path / shard} is unreadable ({error}); its vectors will be "
                          "recomputed (`featx cache verify --drop` removes it)", stacklevel=3)
            return None

    def _load_vectors(self, shard: str) -> np.ndarray:
        return np.load(self.path / f"{shard}{VECTORS_SUFFIX}", mmap_mode="r", allow_pickle=False)

    def _load_keys(self, shard: str) -> np.ndarray:
        return np.load(self.path / f"{shard}{KEYS_SUFFIX}", allow_pickle=False)

    # -- writing ------------------------------------------------------------------------------------------

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> str:
        """Store one shard atomically and return its name. ``vectors`` is (len(keys), d) float32."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ParameterError(f"expected ({len(keys)}, d) vectors, got shape {vectors.shape}")
        shard = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        key_rows = np.empty(len(keys), dtype=KEY_DTYPE)
        key_rows["key"] = [key.encode() for key in keys]
        key_rows["crc32"] = vector_checksums(vectors)
        atomic_write(self.path / f"{shard}{VECTORS_SUFFIX}", lambda f: np.save(f, vectors, allow_pickle=False))
        # The keys file is the commit marker, so it is written last.
        atomic_write(self.path / f"{shard}{KEYS_SUFFIX}", lambda f: np.save(f, key_rows, allow_pickle=False))
        if self._index is not None:
            for row, key in enumerate(keys):
                self._index[key] = (shard, row)
        return shard

    # -- maintenance --------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for ``featx cache info``; unreadable shards are counted, not fatal."""
        files = [p for p in self.path.iterdir() if p.is_file()]
        shards = self.shard_names()
        rows, unreadable = 0, 0
        for shard in shards:
            try:
                rows += len(self._keys(shard))
            except (OSError, ValueError, EOFError):
                unreadable += 1
        return {
            "namespace": self.path.name,
            "vectors": len(self.index()),
            "stored_rows": rows,
            "shards": len(shards),
            "unreadable_shards": unreadable,
            "bytes": sum(p.stat().st_size for p in files),
        }

    def verify(self, drop: bool = False) -> list[dict[str, Any]]:
        """Check every shard's readability and every vector's checksum; with ``drop``, remove what is bad.

        A shard with some corrupt rows is rewritten (atomically) without them; an unreadable one is deleted.
        """
        problems: list[dict[str, Any]] = []
        for shard in self.shard_names():
            try:
                keys = self._keys(shard)
                vectors = np.load(self.path / f"{shard}{VECTORS_SUFFIX}", allow_pickle=False)
                if keys.dtype != KEY_DTYPE or vectors.ndim != 2 or len(vectors) != len(keys):
                    raise ValueError(f"{len(keys)} keys but vectors of shape {vectors.shape}")
            except (OSError, ValueError, EOFError) as error:
                problems.append({"shard": shard, "key": None, "problem": f"unreadable shard: {error}"})
                if drop:
                    self._remove_shard(shard)
                continue
            bad = np.flatnonzero(vector_checksums(vectors) != keys["crc32"])
            problems.extend({"shard": shard, "key": keys["key"][row].decode(), "problem": "checksum mismatch"}
                            for row in bad)
            if drop and len(bad):
                good = np.setdiff1d(np.arange(len(keys)), bad)
                if len(good):
                    self.write([k.decode() for k in keys["key"][good]], vectors[good])
                self._remove_shard(shard)
        self._forget()
        return problems

    def remove_debris(self, older_than_s: float = 600) -> int:
        """Delete temporary files and uncommitted vectors left by killed writers (not by live ones)."""
        committed = set(self.shard_names())
        cutoff, removed = time.time() - older_than_s, 0
        for path in self.path.iterdir():
            uncommitted = path.name.endswith(VECTORS_SUFFIX) and path.name[: -len(VECTORS_SUFFIX)] not in committed
            if (path.name.startswith(TMP_PREFIX) or uncommitted) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove_shards_older_than(self, seconds: float) -> int:
        cutoff, removed = time.time() - seconds, 0
        for shard in self.shard_names():
            if (self.path / f"{shard}{KEYS_SUFFIX}").stat().st_mtime < cutoff:
                self._remove_shard(shard)
                removed += 1
        self._forget()
        return removed

    def _remove_shard(self, shard: str) -> None:
        (self.path / f"{shard}{KEYS_SUFFIX}").unlink(missing_ok=True)  # uncommit first
        (self.path / f"{shard}{VECTORS_SUFFIX}").unlink(missing_ok=True)

    def _forget(self) -> None:
        self._index = None
        self._vectors.cache_clear()
        self._keys.cache_clear()
