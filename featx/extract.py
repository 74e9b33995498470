"""The public engine calls: :func:`extract` (a network and a store in, vectors and failures out) and
:func:`extract_features` (the one-line function). Every door (transformer, batch job, notebooks) comes here.

Only what the store lacks is computed (one forward pass per distinct image content), and failed inputs get
NaN rows and an :class:`~featx.errors.ImageError` each instead of invented vectors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featx import engines
from featx.cache import MemoryNamespace, Store, open_store
from featx.cache.store import Keeping, Keys, key_strings
from featx.engines.base import RunOptions
from featx.engines.local.engine import compute_missing
from featx.errors import ImageError, OutputError
from featx.inputs.batches import as_image_list
from featx.inputs.images import MAX_PIXELS, ImageInput, describe
from featx.models._registry import Backbone
from featx.models.network import FrozenNetwork, NetworkSpec
from featx.options import MIN_COSINE, ON_ERROR, POSITIVE_INT, check

__all__ = ["Extraction", "extract", "extract_features", "read_vectors"]


@dataclass
class Extraction:
    """What one run produced: vectors in input order (NaN rows where an input failed) and the failures."""

    features: np.ndarray
    errors: list[ImageError] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0


def read_vectors(
    images: Sequence[ImageInput],
    keys: Keys,
    network: FrozenNetwork,
    store: Store,
    *,
    batch_size: int = 64,
    max_pixels: int = MAX_PIXELS,
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
        batch_size=batch_size,
        max_pixels=max_pixels,
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
    network: FrozenNetwork,
    store: Store | None = None,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = False,
    engine: engines.Engine | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Extraction:
    """Features for ``images`` in input order, computing only what ``store`` lacks (default: in memory).

    Failed inputs get NaN rows and an :class:`ImageError` each (inputs sharing a failed content all fail).
    """
    store = store if store is not None else MemoryNamespace(network.fingerprint)
    engine = engine or engines.get("local")
    options = RunOptions(
        batch_size=batch_size, num_workers=num_workers, progress=progress, max_pixels=max_pixels
    )
    filled = engine.fill(images, network, store, options)
    features = np.full((len(images), network.n_features), np.nan, dtype=np.float32)
    good = filled.good()
    recomputed = 0
    if len(good):
        features[good], recomputed = read_vectors(
            [images[i] for i in good],
            filled.keys[good],
            network,
            store,
            batch_size=batch_size,
            max_pixels=max_pixels,
        )
    return Extraction(
        features, filled.errors, n_cached=filled.n_cached, n_computed=filled.n_computed + recomputed
    )


def extract_features(
    images: Any,
    backbone: str | Backbone = "resnet50",
    *,
    weights: Any = "DEFAULT",
    layer: str | None = None,
    pooling: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    on_error: str = "raise",
    progress: bool = False,
    compile: bool | str = "auto",
    max_pixels: int = MAX_PIXELS,
    decoding: str = "auto",
    min_cosine: float = MIN_COSINE,
    calibration: str | None = None,
) -> np.ndarray:
    """Feature vectors of a sequence of images: an (n_images, n_features) float32 array, input order.

    ``on_error='raise'`` raises the first failure (it names the input's index, path and reason);
    ``on_error='nan'`` returns NaN rows for failed inputs. With ``cache_dir``, vectors are read from and
    written to the on-disk cache shared with ``featx extract``. ``compile='auto'`` runs ``torch.compile``
    when at least ``featx.models.network.COMPILE_MIN_IMAGES`` images need computing. Images with more than
    ``max_pixels`` pixels, decoded or once resized, fail (kinds ``decompression_bomb``, ``too_large``).
    ``min_cosine`` and ``calibration`` are those of :class:`featx.PretrainedFeatures`.
    """
    check("on_error", on_error, ON_ERROR, "extract_features")
    check("max_pixels", max_pixels, POSITIVE_INT, "extract_features")
    images = as_image_list(images)
    network = FrozenNetwork(
        NetworkSpec(
            backbone,
            weights=weights,
            layer=layer,
            pooling=pooling,
            device=device,
            precision=precision,
            compile=compile,
            decoding=decoding,
            min_cosine=min_cosine,
            calibration=calibration,
        )
    )
    result = extract(
        images,
        network,
        open_store(network.fingerprint, cache_dir),
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        max_pixels=max_pixels,
    )
    if result.errors and on_error == "raise":
        raise result.errors[0]
    return result.features
