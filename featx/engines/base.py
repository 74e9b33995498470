"""The engine seam: one small interface (as httpx's transports have), and what an engine returns."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from featx.cache.store import key_strings
from featx.errors import ImageError
from featx.inputs.images import MAX_PIXELS
from featx.options import COUNT, POSITIVE_INT, WORKERS, check_fields, chosen_fields, declared

if TYPE_CHECKING:
    import pandas as pd

    from featx.cache import Store
    from featx.models.network import Network
    from featx.models.spec import NetworkSpec


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

    batch_size: int = declared(
        64, "images decoded and handed over together, and per forward pass", POSITIVE_INT, metavar="N"
    )
    num_workers: int | None = declared(
        None, "decoding processes (default: from the job's size and the cores)", WORKERS, metavar="N"
    )
    progress: bool = False
    fail_fast: bool = False
    max_pixels: int = declared(
        MAX_PIXELS,
        "refuse images with more pixels, decoded or resized (default: PIL's bomb limit)",
        POSITIVE_INT,
        metavar="N",
    )
    forward_batch: int | None = declared(
        None,
        "images per forward pass, where it differs from --batch-size (default: the same)",
        COUNT,
        metavar="N",
    )

    def __post_init__(self) -> None:
        check_fields(RunOptions, vars(self), "RunOptions")
        for name in ("batch_size", "num_workers", "max_pixels", "forward_batch"):
            value = getattr(self, name)  # numpy's integers pass the check; torch's DataLoader wants int
            if value is not None:
                object.__setattr__(self, name, int(value))
        for name in ("batch_size", "forward_batch"):  # past sys.maxsize torch's sampler fails (islice); a
            value = getattr(self, name)  # batch that large is every image at once, as sys.maxsize is
            if value is not None:
                object.__setattr__(self, name, min(value, sys.maxsize))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], owner: str, **fixed: Any) -> RunOptions:
        """The options among a door's flat parameters, checked in the name of ``owner``; ``fixed`` are the
        door's own (``fail_fast`` from its ``on_error``, say)."""
        return cls(**chosen_fields(cls, params, owner), **fixed)


DEFAULTS = RunOptions()


class Engine(Protocol):
    """Key every input, compute what ``store`` lacks (once per distinct content), commit it batch by batch.

    Inputs sharing a failed content all fail. With ``fail_fast`` the first failure is raised once the
    vectors decoded before it are stored. Each input is read once (where the engine runs its decoders) and
    decoded only if the store lacks its content. Images over
    ``max_pixels``, decoded or resized, fail one by one (kinds ``decompression_bomb`` and ``too_large``).
    """

    def network(self, spec: NetworkSpec) -> Network:
        """The network of ``spec``, resolved (device, precision, weights) where this engine will run it."""
        ...

    def fill(
        self,
        images: Sequence[Any],
        network: Network,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> Filled: ...

    def stream(
        self,
        shards: Sequence[str],
        network: Network,
        store: Store,
        options: RunOptions = DEFAULTS,
    ) -> tuple[pd.DataFrame, Filled]:
        """:meth:`fill` for WebDataset shards, each streamed once by one decoder: returns the manifest the
        decoders found (path, sample, shard, label; samples without an image in ``attrs["skipped"]``) and the
        outcome for its rows. A shard that cannot be read, or ends early, is one failed row naming it."""
        ...
