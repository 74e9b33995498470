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

import glob
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featx._files import TMP_PREFIX, local_path, writer_tag
from featx.cache.checksums import entry_checksums, vector_checksums
from featx.cache.files import (
    FORMAT_VERSION,
    KEY_DTYPE,
    KEYS_SUFFIX,
    STAT_MEMO,
    fingerprint_id,
    leftovers,
    read_fingerprint,
)
from featx.cache.namespace import Namespace
from featx.cache.store import MemoryNamespace, Store
from featx.errors import ParameterError

__all__ = [
    "FORMAT_VERSION",
    "KEY_DTYPE",
    "FeatureCache",
    "MemoryNamespace",
    "Namespace",
    "Store",
    "fingerprint_id",
    "open_store",
    "entry_checksums",
    "vector_checksums",
]


class FeatureCache:
    """A directory of namespaces. Cheap to create; safe to share between processes and machines."""

    def __init__(self, root: str | os.PathLike):
        self.root = local_path(root, "the cache folder")

    def namespace(self, fingerprint: Mapping[str, Any]) -> Namespace:
        """The namespace for ``fingerprint``, created on first use."""
        return Namespace(self.root / fingerprint_id(fingerprint), fingerprint)

    def namespaces(self) -> list[Namespace]:
        """Every namespace folder of this cache. Symbolic links are not followed (see [`links`][featx.FeatureCache.links]), so
        what maintains the cache touches nothing outside its folder."""
        if not self.root.is_dir():
            return []
        return [
            Namespace(p)
            for p in sorted(self.root.iterdir())
            if not p.is_symlink() and not p.name.startswith(TMP_PREFIX) and _is_namespace(p)
        ]

    def links(self) -> list[Path]:
        """Entries of the cache folder that are symbolic links: never followed by [`namespaces`][featx.FeatureCache.namespaces]."""
        return sorted(p for p in self.root.iterdir() if p.is_symlink()) if self.root.is_dir() else []

    def remove_namespace(self, name: str) -> None:
        """Remove one namespace of this cache, by its folder name (as ``featx cache info`` lists it);
        a name that is a path, or that leads outside the cache, is refused before anything is touched."""
        if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
            raise ParameterError(
                f"namespace {name!r} is not a namespace name: give a folder name that "
                f"`featx cache info {self.root}` lists, not a path"
            )
        path = self.root / name
        if path.is_symlink():
            raise ParameterError(
                f"{path} is a symbolic link (to {os.readlink(path)}), and featx cache commands touch nothing "
                f"outside {self.root}: remove the link itself (rm {path})"
            )
        if not _is_namespace(path):
            raise ParameterError(f"{path} is not a featx cache namespace; see `featx cache info {self.root}`")
        # Renamed away first: a job writing into it cannot add files while it is removed ("Directory not
        # empty"), and makes the namespace again under its own name (Namespace.write)
        doomed = self.root / f"{TMP_PREFIX}{writer_tag()}-{uuid.uuid4().hex[:8]}-{name}"
        os.rename(path, doomed)
        shutil.rmtree(doomed)

    def older_formats(self, fingerprint: Mapping[str, Any]) -> list[str]:
        """Namespaces of this extractor written by an older cache format: not read (their checksums are
        bound otherwise), so a job recomputes their vectors; named so that it can say so and how to
        remove them."""
        prefix = fingerprint_id(fingerprint).rsplit("-", 1)[0] + "-"
        same = {key: value for key, value in fingerprint.items() if key != "format"}
        older = []
        for folder in sorted(self.root.glob(f"{glob.escape(prefix)}*")) if self.root.is_dir() else []:
            try:
                stored = read_fingerprint(folder)
            except (OSError, ValueError):
                continue
            if stored.get("format") != fingerprint.get("format") and all(
                stored.get(key) == json.loads(json.dumps(value)) for key, value in same.items()
            ):
                older.append(folder.name)
        return older

    def remove_leftovers(self, older_than_s: float = 600) -> list[tuple[str, int]]:
        """What killed writers left beside the namespaces (the cache folder, the stat memo's): removed as
        `Namespace.remove_debris` removes a namespace's; their paths within the cache and sizes."""
        removed = []
        for folder in (self.root, self.root / STAT_MEMO):
            if folder.is_dir() and not folder.is_symlink():
                prefix = "" if folder == self.root else f"{folder.name}/"
                removed += [(prefix + name, size) for name, size in leftovers(folder, set(), older_than_s)]
        return removed


def _is_namespace(folder: Path) -> bool:
    """A folder holding a ``namespace.json`` (of whatever kind: a damaged one is still a namespace) or
    committed shards."""
    return folder.is_dir() and (
        os.path.lexists(folder / "namespace.json") or next(folder.glob(f"*{KEYS_SUFFIX}"), None) is not None
    )


def open_store(fingerprint: Mapping[str, Any], cache_dir: str | os.PathLike | None) -> Store:
    """The namespace of ``fingerprint`` under ``cache_dir``; an in-memory one when there is no cache."""
    if cache_dir is None:
        return MemoryNamespace(fingerprint)
    return FeatureCache(cache_dir).namespace(fingerprint)
