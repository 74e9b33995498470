"""One namespace of the on-disk cache: the vectors of one extractor fingerprint, as immutable shards.

Nothing is ever modified in place, so any number of processes may write at once, and a killed job loses
at most its unfinished batch. Where each key lives comes from the small keys files, read once per process
(:mod:`featx.cache.index`); a shard merged away by ``featx cache compact`` is looked up again, not lost.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from featx._files import TMP_PREFIX, writer_tag
from featx.cache.checksums import entry_checksums, unbound, vector_checksums
from featx.cache.files import (
    KEY_DTYPE,
    KEYS_SUFFIX,
    OPEN_SHARDS,
    VECTORS_SUFFIX,
    atomic_write,
    claim_namespace,
    fingerprint_tag,
    leftovers,
    load_array,
    read_fingerprint,
)
from featx.cache.index import DigestSet, KeyIndex, shared_index
from featx.cache.reader import BulkRead, chunks
from featx.cache.store import Keys, key_strings
from featx.errors import OutputError, ParameterError

LOOKUPS = 10
WRITE_ATTEMPTS = 3  # of a shard whose namespace folder was removed under its writer
MAPPED_KEYS_BYTES = 1 << 20


class Namespace:
    """The vectors of one extractor fingerprint inside a :class:`FeatureCache`."""

    def __init__(self, path: Path, fingerprint: Mapping[str, Any] | None = None):
        self.path = path
        self._tag = None if fingerprint is None else fingerprint_tag(fingerprint)
        self._fingerprint = fingerprint
        if fingerprint is not None:
            _make_folder(path)  # before resolving it: a link to itself would be a RuntimeError there
        self._shared_index = shared_index(path)
        self._synced = False
        # Per-instance LRU of open memory maps: each holds a file descriptor, so keep a bounded number.
        self._vectors = functools.lru_cache(maxsize=OPEN_SHARDS)(self._load_vectors)
        self._keys = functools.lru_cache(maxsize=OPEN_SHARDS)(self._load_keys)
        if fingerprint is not None:
            claim_namespace(path, fingerprint, self._foreign_shards)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """The job's own (so a namespace removed under it still knows whose it is), else the file's."""
        return dict(self._fingerprint) if self._fingerprint is not None else read_fingerprint(self.path)

    @property
    def tag(self) -> int:
        """The fingerprint's tag bound into every stored checksum: the job's own, or (for the cache
        commands) ``namespace.json``'s; ValueError or OSError where that cannot be read."""
        if self._tag is None:
            self._tag = fingerprint_tag(self.fingerprint)
        return self._tag

    # -- reading ------------------------------------------------------------------------------------------

    def shard_names(self) -> list[str]:
        """Committed shards (those whose keys file exists), oldest first."""
        return sorted(
            p.name[: -len(KEYS_SUFFIX)]
            for p in self.path.glob(f"*{KEYS_SUFFIX}")
            if not p.name.startswith(TMP_PREFIX)
        )

    def index(self) -> KeyIndex:
        """Where each key lives, brought up to date with the shards on disk once per instance (and on
        :meth:`refresh`); later shards win for duplicates."""
        if not self._synced:
            self._shared_index.sync(self.shard_names(), self._readable_keys)
            self._synced = True
        return self._shared_index

    def refresh(self) -> None:
        """See shards other processes committed (or merged away) since this instance last looked."""
        self._synced = False

    def __len__(self) -> int:
        return len(self.index())

    def __contains__(self, key: str) -> bool:
        return not self.missing([key])

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys that have no vector here, in first-seen order."""
        distinct = list(dict.fromkeys(keys))
        shards, _ = self.index().locate(distinct)
        return [distinct[i] for i in np.flatnonzero(shards < 0)]

    def known(self) -> DigestSet:
        """The keys stored now, as a snapshot decoding workers can test with ``in``."""
        return self.index().snapshot()

    def read(self, keys: Keys) -> tuple[np.ndarray, list[str]]:
        """Vectors for ``keys`` (strings, or an S64 array read as it is), and the keys it could not serve:
        those whose stored vector failed its checksum, and those no longer here (removed beside this
        process, by ``featx cache prune`` or by hand). Their rows of the output are undefined.

        Corrupt keys are dropped from this process's index so that the caller can recompute them. A shard
        whose vectors cannot be read at all (a garbled header, a truncated or reshaped file) counts as
        corrupt for every key it holds, with a warning: it is recomputed, never trusted and never fatal.
        A shard that vanished (merged by a compaction) is looked up again in the shards now on disk, up to
        ``LOOKUPS`` times. How a read finds, copies and verifies: :mod:`featx.cache.reader`.
        """
        with BulkRead(self, keys) as reading:
            pending = np.arange(len(keys))
            for _ in range(LOOKUPS):
                retry = [reading.attempt(chunk) for chunk in chunks(pending, self.index().shards)]
                reading.wait()
                pending = np.sort(
                    np.concatenate([np.empty(0, np.int64)] + [p for pair in retry for p in pair])
                )
                if not len(pending):
                    break
                self.refresh()  # a listing taken while a compaction commits and removes can miss both copies
        lost = sorted(set(reading.corrupt) | set(pending.tolist()))
        out = reading.out if reading.out is not None else np.empty((0, 0), dtype=np.float32)
        if out.shape[0] != len(keys):  # nothing was found: the caller fills every row
            out = np.empty((len(keys), out.shape[1]), dtype=np.float32)
        return out, key_strings([keys[position] for position in lost])

    def shard_vectors(self, shard: str, width: int | None) -> np.ndarray | None:
        """A shard's vectors, memory-mapped, or None (with a warning) if the file is unreadable or its header
        is not the one featx writes (:func:`_check_header`; the width of the other shards read)."""
        try:
            vectors = self._vectors(shard)
            _check_header(vectors, len(self._keys(shard)), width)
            return vectors
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError) as error:
            self.warn_unreadable(shard, error)
            return None

    def shard_keys(self, shard: str) -> np.ndarray:
        """A shard's (key, crc32) rows; kept open for the ``OPEN_SHARDS`` shards used last."""
        return self._keys(shard)

    def vectors_path(self, shard: str) -> Path:
        return self.path / f"{shard}{VECTORS_SUFFIX}"

    def committed(self, shard: str) -> bool:
        """Whether the shard's keys file (its commit marker) is on disk."""
        return (self.path / f"{shard}{KEYS_SUFFIX}").exists()

    def warn_unreadable(self, shard: str, error: Exception) -> None:
        warnings.warn(
            f"feature cache shard {self.path / shard} is unreadable ({error}); its vectors will be "
            "recomputed (`featx cache verify --drop` removes it)",
            stacklevel=5,
        )

    def _load_vectors(self, shard: str) -> np.ndarray:
        return load_array(self.vectors_path(shard), mmap=True)

    def _load_keys(self, shard: str) -> np.ndarray:
        """A job's small keys file is read whole (quicker than mapping it); a compacted one is mapped, so
        that an open namespace keeps no copy of its keys beside the index."""
        path = self.path / f"{shard}{KEYS_SUFFIX}"
        return load_array(path, mmap=path.stat().st_size > MAPPED_KEYS_BYTES)

    def _readable_keys(self, shard: str) -> np.ndarray | None:
        """A shard's keys, or None if its keys file is unreadable (reported by verify(), not trusted)."""
        try:
            rows = self._keys(shard)
        except (OSError, ValueError, EOFError):
            return None
        return rows["key"] if rows.dtype == KEY_DTYPE and rows.ndim == 1 else None

    # -- writing ------------------------------------------------------------------------------------------

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> str:
        """Store one shard atomically and return its name. ``vectors`` is (len(keys), d) float32."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(keys):
            raise ParameterError(f"expected ({len(keys)}, d) vectors, got shape {vectors.shape}")
        shard = f"{time.time_ns():020d}-{writer_tag()}-{uuid.uuid4().hex[:8]}"
        key_rows = np.empty(len(keys), dtype=KEY_DTYPE)
        key_rows["key"] = [key.encode() for key in keys]
        key_rows["crc32"] = entry_checksums(key_rows["key"], vectors, self.tag)
        for attempt in range(WRITE_ATTEMPTS):
            try:
                self._write_files(shard, vectors, key_rows)
                break
            except OutputError:
                if attempt + 1 == WRITE_ATTEMPTS or self._fingerprint is None or self.path.is_dir():
                    raise
                # `featx cache prune --namespace` removed the folder under this writer: make it again
                _make_folder(self.path)
                claim_namespace(self.path, self._fingerprint, self._foreign_shards)
        self._shared_index.add(shard, key_rows["key"])
        return shard

    def _write_files(self, shard: str, vectors: np.ndarray, key_rows: np.ndarray) -> None:
        atomic_write(
            self.path / f"{shard}{VECTORS_SUFFIX}", lambda f: np.save(f, vectors, allow_pickle=False)
        )
        # The keys file is the commit marker, so it is written last.
        atomic_write(self.path / f"{shard}{KEYS_SUFFIX}", lambda f: np.save(f, key_rows, allow_pickle=False))

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
                vectors = load_array(self.vectors_path(shard))
                if keys.dtype != KEY_DTYPE:
                    raise ValueError(f"a keys file of dtype {keys.dtype}")
                _check_header(vectors, len(keys), None)
            except (OSError, ValueError, EOFError) as error:
                problems.append({"shard": shard, "key": None, "problem": f"unreadable shard: {error}"})
                if drop:
                    self.remove_shard(shard)
                continue
            bad = np.flatnonzero(vector_checksums(vectors) != unbound(keys, self.tag))
            problems.extend(
                {"shard": shard, "key": keys["key"][row].decode(), "problem": "checksum mismatch"}
                for row in bad
            )
            if drop and len(bad):
                good = np.setdiff1d(np.arange(len(keys)), bad)
                if len(good):
                    self.write([k.decode() for k in keys["key"][good]], vectors[good])
                self.remove_shard(shard)
        self._forget()
        return problems

    def remove_debris(self, older_than_s: float = 600) -> list[tuple[str, int]]:
        """Delete temporary files and uncommitted vectors left by killed writers (never a live writer's:
        :func:`~featx.cache.files.leftovers`); their names and sizes."""
        return leftovers(self.path, set(self.shard_names()), older_than_s)

    def _foreign_shards(self) -> tuple[int, int]:
        """(shards sampled, shards whose first row's checksum is bound to another fingerprint), for a
        namespace whose ``namespace.json`` cannot say whose it is: one row read per shard."""
        sampled = foreign = 0
        for shard in self.shard_names():
            try:
                rows = self._keys(shard)[:1]
                vectors = self._vectors(shard)[:1]
                if not len(rows) or rows.dtype != KEY_DTYPE or vectors.ndim != 2 or vectors.dtype != "<f4":
                    continue
                sampled += 1
                foreign += int(vector_checksums(vectors)[0] != unbound(rows, self.tag)[0])
            except (OSError, ValueError, EOFError):  # unreadable: recomputed on read, proves nothing
                continue
        self._forget()
        return sampled, foreign

    def remove_shards_older_than(self, seconds: float) -> int:
        cutoff, removed = time.time() - seconds, 0
        for shard in self.shard_names():
            if (self.path / f"{shard}{KEYS_SUFFIX}").stat().st_mtime < cutoff:
                self.remove_shard(shard)
                removed += 1
        self._forget()
        return removed

    def remove_shard(self, shard: str) -> None:
        """Uncommit (keys file first), then delete a shard's vectors."""
        (self.path / f"{shard}{KEYS_SUFFIX}").unlink(missing_ok=True)  # uncommit first
        (self.path / f"{shard}{VECTORS_SUFFIX}").unlink(missing_ok=True)

    def _forget(self) -> None:
        self._synced = False
        self._vectors.cache_clear()
        self._keys.cache_clear()


def _make_folder(path: Path) -> None:
    """Create a namespace's folder; OutputError in one line where it cannot be, naming what is in its
    place when something is (a file, or a link to nowhere or to itself, which ``mkdir`` calls "File
    exists")."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        what = f"a link to {os.readlink(path)}" if path.is_symlink() else "a file"
        raise OutputError(
            f"cannot create the feature cache folder {path}: {what} is in its place, not a folder; "
            "move it away or remove it"
        ) from None
    except OSError as error:
        raise OutputError(
            f"cannot create the feature cache folder {path}: {error.strerror or error}"
        ) from None


def _check_header(vectors: np.ndarray, n_keys: int, width: int | None) -> None:
    """Raise ValueError unless a shard's vectors are what featx writes: little-endian float32 in C order,
    2-D, one row per key (and ``width`` wide). A header changed by one byte would keep every checksum
    valid while every value read is wrong, so it must make the shard damaged."""
    if vectors.dtype.str != "<f4" or (vectors.ndim == 2 and not vectors.flags.c_contiguous):
        order = "C" if vectors.flags.c_contiguous else "Fortran"
        raise ValueError(f"a {vectors.dtype.str} array in {order} order, not <f4 in C order")
    if vectors.ndim != 2 or len(vectors) != n_keys or (width is not None and vectors.shape[1] != width):
        raise ValueError(f"vectors of shape {vectors.shape} for {n_keys} keys")
