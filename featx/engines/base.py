"""The engine seam: one small interface (as httpx's transports have), and what an engine returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from featx.cache.store import key_strings
from featx.errors import ImageError
from featx.inputs.images import MAX_PIXELS

if TYPE_CHECKING:
    import pandas as pd

    from featx.cache import Store
    from featx.models.network import FrozenNetwork, NetworkSpec


@dataclass
class Filled:
    """The outcome of :meth:`Engine.fill`: each input's content key, the failures, hit and compute counts.

    ``keys`` holds each key as 64 ASCII bytes (``b""`` for an input that could not be read): a compact
    array of 64 bytes an input, not a Python string each, so that millions of inputs stay cheap to hold.
    """

    keys: np.ndarray
    errors: list[ImageError]
    n_cached: int
    n_computed: int

    def good(self) -> np.ndarray:
        """Indices of the inputs whose vector is in the store, in input order."""
        stored = np.ones(len(self.keys), dtype=bool)
        stored[[e.index for e in self.errors]] = False
        return np.flatnonzero(stored)

    def key_strings(self, rows: np.ndarray) -> list[str]:
        """The keys of ``rows`` as strings (stores also read them as they are, an S64 array)."""
        return key_strings(self.keys[rows])


def no_keys(n: int) -> np.ndarray:
    """Room for ``n`` content keys, each ``b""`` until an engine keys that input."""
    return np.zeros(n, dtype="S64")


@dataclass(frozen=True)
class RunOptions:
    """How an engine runs one fill or stream, as one value: every engine takes the same options.

    ``batch_size`` images per forward pass; ``num_workers`` decoding processes (None: chosen from the job
    size and the cores; 0: decode in this process); ``progress`` a bar for a person watching;
    ``fail_fast`` raises the first failure once the vectors decoded before it are stored; images over
    ``max_pixels``, decoded or resized, fail one by one. ``forward_batch`` images per forward pass where
    it differs from the ``batch_size`` the workers decode in (None: the same), e.g. decode 64, forward 256.
    """

    batch_size: int = 64
    num_workers: int | None = None
    progress: bool = False
    fail_fast: bool = False
    max_pixels: int = MAX_PIXELS
    forward_batch: int | None = None


DEFAULTS = RunOptions()


class Engine(Protocol):
    """Key every input, compute what ``store`` lacks (once per distinct content), commit it batch by batch.

    Inputs sharing a failed content all fail. With ``fail_fast`` the first failure is raised once the
    vectors decoded before it are stored. Each input is read once (where the engine runs its decoders) and
    decoded only if the store lacks its content. Images over
    ``max_pixels``, decoded or resized, fail one by one (kinds ``decompression_bomb`` and ``too_large``).
    """

    def network(self, spec: NetworkSpec) -> FrozenNetwork:
        """The network of ``spec``, resolved (device, precision, weights) where this engine will run it."""
        ...

    def fill(
        self,
        images: Sequence[Any],
        network: FrozenNetwork,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> Filled: ...

    def stream(
        self,
        shards: Sequence[str],
        network: FrozenNetwork,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> tuple[pd.DataFrame, Filled]:
        """:meth:`fill` for WebDataset shards, each streamed once by one decoder: returns the manifest the
        decoders found (path, sample, shard, label; samples without an image in ``attrs["skipped"]``) and the
        outcome for its rows. A shard that cannot be read, or ends early, is one failed row naming it."""
        ...
