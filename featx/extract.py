"""The engine call every door comes through: :func:`extract`, a network and a store in, vectors and
failures out (the transformer, ``extract_features``, the batch job's output, notebooks).

Only what the store lacks is computed (one forward pass per distinct image content), and failed inputs get
NaN rows and an :class:`~featx.errors.ImageError` each instead of invented vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from featx import engines
from featx.cache import MemoryNamespace, Store
from featx.cache.store import Keys, key_strings
from featx.engines.base import DEFAULTS, RunOptions
from featx.engines.local.engine import compute_missing
from featx.errors import ImageError
from featx.inputs.images import ImageInput
from featx.models.network import Network

__all__ = ["Extraction", "extract", "read_vectors"]


@dataclass
class Extraction:
    """What one run produced: vectors in input order (NaN rows where an input failed) and the failures."""

    features: np.ndarray
    errors: list[ImageError] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0


def read_vectors(
    images: Sequence[ImageInput], keys: Keys, network: Network, store: Store, options: RunOptions = DEFAULTS
) -> tuple[np.ndarray, int]:
    """Stored vectors for ``keys`` (all present, ``images`` aligned with them), and how many were recomputed:
    a vector that fails its checksum is computed again rather than returned."""
    vectors, corrupt = store.read(keys)
    if not corrupt:
        return vectors, 0
    recomputed = compute_missing(images, key_strings(keys), network, store, options)
    vectors, _ = store.read(keys)
    return vectors, recomputed


def extract(
    images: Sequence[ImageInput],
    network: Network,
    store: Store | None = None,
    options: RunOptions = DEFAULTS,
    *,
    engine: engines.Engine | None = None,
) -> Extraction:
    """Features for ``images`` in input order, computing only what ``store`` lacks (default: in memory).

    Failed inputs get NaN rows and an :class:`ImageError` each (inputs sharing a failed content all fail).
    """
    store = store if store is not None else MemoryNamespace(network.fingerprint)
    engine = engine or engines.get("local")
    filled = engine.fill(images, network, store, options)
    features = np.full((len(images), network.n_features), np.nan, dtype=np.float32)
    good = filled.good()
    recomputed = 0
    if len(good):
        features[good], recomputed = read_vectors(
            [images[i] for i in good], filled.keys[good], network, store, options
        )
    return Extraction(
        features, filled.errors, n_cached=filled.n_cached, n_computed=filled.n_computed + recomputed
    )
