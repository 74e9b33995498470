"""The store seam: where vectors live by content key, and the in-memory store used without a cache."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

Keys = Sequence[str] | np.ndarray  # strings, or the S64 array engines hold them in (read without re-encoding)


class Store(Protocol):
    """Where vectors live, by content key: the seam every engine and door writes and reads through.

    :class:`Namespace` (on disk, shared between processes) and :class:`MemoryNamespace` (no cache) fill it.
    """

    fingerprint: Mapping[str, Any]

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The distinct keys that have no vector here, in first-seen order."""

    def known(self) -> Container[str]:
        """The keys stored now, as a small picklable snapshot that decoding workers test with ``in``."""

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> object:
        """Store ``vectors`` (len(keys), d) under ``keys``, all or nothing."""

    def read(self, keys: Keys) -> tuple[np.ndarray, list[str]]:
        """Vectors for ``keys``, and the keys it could not serve (a vector that failed its checksum, or that
        is no longer stored): their rows are undefined, for the caller to compute again."""


@dataclass
class MemoryNamespace:
    """The in-memory stand-in used when no cache directory is given: same interface, nothing persists."""

    fingerprint: Mapping[str, Any]
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [key for key in dict.fromkeys(keys) if key not in self._vectors]

    def known(self) -> frozenset[str]:
        return frozenset(self._vectors)

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, np.asarray(vectors, dtype=np.float32)):
            self._vectors[key] = vector

    def read(self, keys: Keys) -> tuple[np.ndarray, list[str]]:
        return np.stack([self._vectors[key] for key in key_strings(keys)]), []


def key_strings(keys: Keys) -> list[str]:
    """``keys`` as strings, however they came."""
    return [key.decode() if isinstance(key, bytes) else key for key in keys]


class Keeping:
    """A store seen through: every write goes to ``store`` and is also kept here, so that vectors
    computed again for a read are served even if the cache loses them once more (a ``featx cache prune``
    running beside the job)."""

    def __init__(self, store: Store):
        self.store, self.kept = store, MemoryNamespace(store.fingerprint)
        self.fingerprint = store.fingerprint

    def missing(self, keys: Iterable[str]) -> list[str]:
        return self.store.missing(keys)

    def known(self) -> Container[str]:
        return self.store.known()

    def write(self, keys: Sequence[str], vectors: np.ndarray) -> object:
        self.kept.write(keys, vectors)
        return self.store.write(keys, vectors)

    def read(self, keys: Keys) -> tuple[np.ndarray, list[str]]:
        return self.store.read(keys)
