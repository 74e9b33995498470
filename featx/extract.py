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
from featx.cache.store import Keeping, Keys, key_strings
from featx.engines.base import DEFAULTS, RunOptions
from featx.engines.local.engine import compute_missing
from featx.errors import ImageError, OutputError
from featx.inputs.images import ImageInput, describe
from featx.models.network import Network

__all__ = ["Extraction", "extract", "read_vectors"]


@dataclass
class Extraction:
    """What one run produced: vectors in input order (NaN rows where an input failed), the failures, and
    how many vectors were found cached, computed, and computed again (as the batch job's summary)."""

    features: np.ndarray
    errors: list[ImageError] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0
    n_recomputed: int = 0  # found in the cache, then vanished from it before they were read: computed again


def read_vectors(
    images: Sequence[ImageInput], keys: Keys, network: Network, store: Store, options: RunOptions = DEFAULTS
) -> tuple[np.ndarray, int]:
    """Stored vectors for ``keys`` (``images`` aligned with them), and how many were recomputed: a vector
    that fails its checksum, or that vanished from the cache since it was stored (a ``featx cache prune``
    beside the job), is computed again rather than returned; one that cannot be is one OutputError."""
    vectors, lost = store.read(keys)
    if not lost:
        return vectors, 0
    if vectors.shape != (len(keys), network.n_features):  # nothing was left to read
        vectors = np.empty((len(keys), network.n_features), dtype=np.float32)
    strings, lost = key_strings(keys), set(lost)
    rows = [i for i, key in enumerate(strings) if key in lost]
    kept = Keeping(store)
    recomputed = compute_missing(
        [images[i] for i in rows],
        [strings[i] for i in rows],
        network,
        kept,
        options,
    )
    computed = set(kept.kept.known())
    again = [i for i in rows if strings[i] not in computed]  # written by another process, or failing now
    if again:
        reread, still = store.read([strings[i] for i in again])
        if still:
            first = images[strings.index(still[0])]
            raise OutputError(
                f"{len(still)} vectors (first: {describe(first)}) vanished from the feature cache "
                f"{getattr(store, 'path', '')} while this job read them, and could not be computed again: "
                "run the same command again, not beside `featx cache prune`"
            )
        vectors[again] = reread
    done = [i for i in rows if strings[i] in computed]
    if done:
        vectors[done] = kept.kept.read([strings[i] for i in done])[0]
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
    return Extraction(features, filled.errors, filled.n_cached, filled.n_computed, n_recomputed=recomputed)
