"""A content-addressed store of feature vectors on disk: crash-safe, multi-process safe, never pickled.

Layout::

    CACHE_DIR/
      <backbone>-<node>-<fingerprint hash>/     one namespace per extractor fingerprint
        namespace.json                          the fingerprint, human-readable
        <shard>.vectors.npy                     float32 (n, d), memory-mapped on read
        <shard>.keys.npy                        (content key, crc32 of the vector) per row

Each shard is written by one process under a unique name: the vectors first, then the keys, each to a
temporary file that is fsynced and renamed into place. The keys file is the commit marker: a shard without
it (a writer killed mid-way) is invisible to readers and removed by ``prune``. Nothing is ever modified in
place, so any number of processes may write at once, and a killed job loses at most its unfinished batch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from featx.errors import ParameterError

FORMAT_VERSION = 1
KEY_DTYPE = np.dtype([("key", "S64"), ("crc32", "<u4")])
_KEYS_SUFFIX = ".keys.npy"
_VECTORS_SUFFIX = ".vectors.npy"
_TMP_PREFIX = ".tmp-"
_OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)


def fingerprint_id(fingerprint: Mapping[str, Any]) -> str:
    """A stable, readable directory name for a fingerprint: backbone, node and a hash of everything."""
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    node = str(fingerprint.get("node", "node")).replace(".", "_").replace(os.sep, "_")
    return f"{fingerprint.get('backbone', 'model')}-{node}-{digest}"


def vector_checksums(vectors: np.ndarray) -> np.ndarray:
    """crc32 of each row's float32 bytes."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.fromiter((zlib.crc32(row.tobytes()) for row in rows), dtype=np.uint32, count=len(rows))


class Store(Protocol):
    """Where vectors live, by content key: the seam every engine and door writes and reads through.

    :class:`Namespace` (on disk, shared between processes) and :class:`MemoryNamespace` (no cache) fill it.
    """

    fingerprint: Mapping[str, Any]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys that have no vector here, in first-seen order."""

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> object:
        """Store ``vectors`` (len(keys), d) under ``keys``, all or nothing."""

    def read(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Vectors for ``keys`` (all present), and the keys whose vector failed its checksum."""


def open_store(fingerprint: Mapping[str, Any], cache_dir: str | os.PathLike | None) -> Store:
    """The namespace of ``fingerprint`` under ``cache_dir``; an in-memory one when there is no cache."""
    if cache_dir is None:
        return MemoryNamespace(fingerprint)
    return FeatureCache(cache_dir).namespace(fingerprint)


@dataclass
class MemoryNamespace:
    """The in-memory stand-in used when no cache directory is given: same interface, nothing persists."""

    fingerprint: Mapping[str, Any]
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [key for key in dict.fromkeys(keys) if key not in self._vectors]

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, np.asarray(vectors, dtype=np.float32)):
            self._vectors[key] = vector

    def read(self, keys: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        return np.stack([self._vectors[key] for key in keys]), []


class Namespace:
    """The vectors of one extractor fingerprint inside a :class:`FeatureCache`."""

    def __init__(self, path: Path, fingerprint: Mapping[str, Any] | None = None):
        self.path = path
        if fingerprint is not None:
            path.mkdir(parents=True, exist_ok=True)
            meta = path / "namespace.json"
            if not meta.exists():
                text = json.dumps(fingerprint, indent=2, sort_keys=True).encode()
                _atomic_write(meta, lambda handle: handle.write(text))
        self._index: dict[str, tuple[str, int]] | None = None
        # Per-instance LRU of open memory maps: each holds a file descriptor, so keep a bounded number.
        self._vectors = functools.lru_cache(maxsize=_OPEN_SHARDS)(self._load_vectors)
        self._keys = functools.lru_cache(maxsize=_OPEN_SHARDS)(self._load_keys)

    @property
    def fingerprint(self) -> dict[str, Any]:
        return json.loads((self.path / "namespace.json").read_text())

    # -- reading ------------------------------------------------------------------------------------------

    def shard_names(self) -> list[str]:
        """Committed shards (those whose keys file exists), oldest first."""
        return sorted(p.name[: -len(_KEYS_SUFFIX)] for p in self.path.glob(f"*{_KEYS_SUFFIX}")
                      if not p.name.startswith(_TMP_PREFIX))

    def index(self) -> dict[str, tuple[str, int]]:
        """key -> (shard, row), built from the small keys files only; later shards win for duplicates."""
        if self._index is None:
            index: dict[str, tuple[str, int]] = {}
            for shard in self.shard_names():
                try:
                    keys = self._keys(shard)["key"]
                except (OSError, ValueError):
                    continue  # an unreadable shard is reported by verify(), not trusted here
                for row, key in enumerate(keys):
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

        Corrupt keys are dropped from this process's index so that the caller can recompute them.
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
            vectors = np.asarray(self._vectors(shard)[rows], dtype=np.float32)
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

    def _load_vectors(self, shard: str) -> np.ndarray:
        return np.load(self.path / f"{shard}{_VECTORS_SUFFIX}", mmap_mode="r", allow_pickle=False)

    def _load_keys(self, shard: str) -> np.ndarray:
        return np.load(self.path / f"{shard}{_KEYS_SUFFIX}", allow_pickle=False)

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
        _atomic_write(self.path / f"{shard}{_VECTORS_SUFFIX}", lambda f: np.save(f, vectors, allow_pickle=False))
        # The keys file is the commit marker, so it is written last.
        _atomic_write(self.path / f"{shard}{_KEYS_SUFFIX}", lambda f: np.save(f, key_rows, allow_pickle=False))
        if self._index is not None:
            for row, key in enumerate(keys):
                self._index[key] = (shard, row)
        return shard

    # -- maintenance --------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        files = [p for p in self.path.iterdir() if p.is_file()]
        shards = self.shard_names()
        return {
            "namespace": self.path.name,
            "vectors": len(self.index()),
            "stored_rows": sum(len(self._keys(shard)) for shard in shards),
            "shards": len(shards),
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
                vectors = np.load(self.path / f"{shard}{_VECTORS_SUFFIX}", allow_pickle=False)
                if keys.dtype != KEY_DTYPE or vectors.ndim != 2 or len(vectors) != len(keys):
                    raise ParameterError(f"{len(keys)} keys but vectors of shape {vectors.shape}")
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
            uncommitted = path.name.endswith(_VECTORS_SUFFIX) and path.name[: -len(_VECTORS_SUFFIX)] not in committed
            if (path.name.startswith(_TMP_PREFIX) or uncommitted) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def remove_shards_older_than(self, seconds: float) -> int:
        cutoff, removed = time.time() - seconds, 0
        for shard in self.shard_names():
            if (self.path / f"{shard}{_KEYS_SUFFIX}").stat().st_mtime < cutoff:
                self._remove_shard(shard)
                removed += 1
        self._forget()
        return removed

    def _remove_shard(self, shard: str) -> None:
        (self.path / f"{shard}{_KEYS_SUFFIX}").unlink(missing_ok=True)  # uncommit first
        (self.path / f"{shard}{_VECTORS_SUFFIX}").unlink(missing_ok=True)

    def _forget(self) -> None:
        self._index = None
        self._vectors.cache_clear()
        self._keys.cache_clear()


class FeatureCache:
    """A directory of namespaces. Cheap to create; safe to share between processes and machines."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def namespace(self, fingerprint: Mapping[str, Any]) -> Namespace:
        """The namespace for ``fingerprint``, created on first use."""
        return Namespace(self.root / fingerprint_id(fingerprint), fingerprint)

    def namespaces(self) -> list[Namespace]:
        if not self.root.is_dir():
            return []
        return [Namespace(p) for p in sorted(self.root.iterdir()) if (p / "namespace.json").is_file()]

    def remove_namespace(self, name: str) -> None:
        path = self.root / name
        if not (path / "namespace.json").is_file():
            raise ParameterError(f"{path} is not a featx cache namespace; see `featx cache info {self.root}`")
        shutil.rmtree(path)


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temporary sibling, fsync, then rename: readers see the whole file or none of it."""
    tmp = path.with_name(f"{_TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
