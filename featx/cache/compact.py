"""Merging a namespace's many small shards (one per batch) into few large ones.

Each job commits about one shard per batch, so a million images leave thousands of files; every process that
opens the namespace reads every keys file once. Compaction writes the merged shards first (each commit is
atomic, as any writer's) and only then removes the shards it merged, keys file first. So at every moment
each vector is readable from at least one committed shard: readers that still point at a removed shard
look it up again (:meth:`Namespace.read`), writers never touch old shards, and a compaction killed midway
leaves duplicates, which the next one merges. Two compactions of one namespace exclude each other by a
lock file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from featx.cache.checksums import unbound, vector_checksums
from featx.cache.files import KEY_DTYPE, KEYS_SUFFIX, VECTORS_SUFFIX, load_array
from featx.cache.namespace import Namespace
from featx.errors import OutputError

SHARD_BYTES = 256 << 20  # vectors per merged shard: few files, and a bounded memory while merging
LOCK_NAME = ".compact.lock"


@dataclass
class Compaction:
    """What one compaction did."""

    merged_shards: int = 0
    written_shards: int = 0
    rows: int = 0
    duplicates: int = 0
    corrupt: int = 0

    def __str__(self) -> str:
        return (
            f"merged {self.merged_shards} shard(s) into {self.written_shards}: {self.rows} vectors kept, "
            f"{self.duplicates} duplicate(s) and {self.corrupt} corrupt row(s) dropped"
        )


def compact(namespace: Namespace, shard_bytes: int = SHARD_BYTES) -> Compaction:
    """Merge the shards smaller than half of ``shard_bytes`` into shards of about ``shard_bytes``.

    Rows whose checksum fails are dropped (they are recomputed on demand), among them a shard copied in
    from another extractor's namespace; a key stored twice is kept once. Unreadable shards are left for
    ``featx cache verify``, and a namespace whose ``namespace.json`` is unreadable for a job to prove.
    """
    report = Compaction()
    with _exclusive(namespace.path / LOCK_NAME):
        small = [s for s in namespace.shard_names() if _vectors_bytes(namespace, s) < shard_bytes // 2]
        if len(small) < 2:
            return report
        seen: set[bytes] = set()
        group_keys: list[np.ndarray] = []
        group_vectors: list[np.ndarray] = []
        group_bytes, merged = 0, []
        for shard in small:
            loaded = _load(namespace, shard)
            if loaded is None:
                continue
            keys, vectors = loaded
            good = vector_checksums(vectors) == unbound(keys, namespace.tag)
            report.corrupt += int((~good).sum())
            fresh = np.array(
                [ok and key not in seen for key, ok in zip(keys["key"].tolist(), good)], dtype=bool
            )
            report.duplicates += int((good & ~fresh).sum())
            seen.update(keys["key"][fresh].tolist())
            group_keys.append(keys["key"][fresh]), group_vectors.append(vectors[fresh])
            group_bytes += vectors[fresh].nbytes
            merged.append(shard)
            if group_bytes >= shard_bytes:
                report.written_shards += _write(namespace, group_keys, group_vectors)
                group_keys, group_vectors, group_bytes = [], [], 0
        report.written_shards += _write(namespace, group_keys, group_vectors)
        for shard in merged:
            namespace.remove_shard(shard)
        namespace.refresh()
        report.merged_shards, report.rows = len(merged), len(seen)
    return report


def _write(namespace: Namespace, keys: list[np.ndarray], vectors: list[np.ndarray]) -> int:
    if not keys or not sum(len(k) for k in keys):
        return 0
    namespace.write([k.decode() for k in np.concatenate(keys).tolist()], np.concatenate(vectors))
    return 1


def _load(namespace: Namespace, shard: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        keys = load_array(namespace.path / f"{shard}{KEYS_SUFFIX}")
        vectors = load_array(namespace.vectors_path(shard))
    except (OSError, ValueError, EOFError):
        return None
    if keys.dtype != KEY_DTYPE or vectors.ndim != 2 or len(vectors) != len(keys):
        return None
    return keys, vectors


def _vectors_bytes(namespace: Namespace, shard: str) -> int:
    try:
        return os.stat(namespace.path / f"{shard}{VECTORS_SUFFIX}").st_size
    except OSError:
        return 0


@contextmanager
def _exclusive(lock_path: os.PathLike) -> Iterator[None]:
    try:
        handle = open(lock_path, "a")  # noqa: SIM115  (closed by the `with` below, once opening is checked)
    except OSError as error:
        raise OutputError(f"cannot compact {os.path.dirname(lock_path)}: {error.strerror or error}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(
                f"another `featx cache compact` is running on {os.path.dirname(lock_path)}; "
                "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
