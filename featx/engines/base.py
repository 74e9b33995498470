"""The engine seam: one small interface (as httpx's transports have), and what an engine returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from featx.errors import ImageError

if TYPE_CHECKING:
    import pandas as pd

    from featx.cache import Store
    from featx.network import FrozenNetwork, NetworkSpec


@dataclass
class Filled:
    """The outcome of :meth:`Engine.fill`: each input's content key, the failures, hit and compute counts."""

    keys: list[str | None]
    errors: list[ImageError]
    n_cached: int
    n_computed: int

    def good(self) -> list[int]:
        """Indices of the inputs whose vector is in the store, in input order."""
        failed = {e.index for e in self.errors}
        return [i for i in range(len(self.keys)) if i not in failed]


class Engine(Protocol):
    """Key every input, compute what ``store`` lacks (once per distinct content), commit it batch by batch.

    Inputs sharing a failed content all fail. With ``fail_fast`` the first failure is raised once the
    vectors decoded before it are stored. Each input is read once (where the engine runs its decoders) and
    decoded only if the store lacks its content. Images over
    ``max_pixels``, decoded or resized, fail one by one (kinds ``decompression_bomb`` and ``too_large``).
    """

    def network(self, spec: "NetworkSpec") -> "FrozenNetwork":
        """The network of ``spec``, resolved (device, precision, weights) where this engine will run it."""
        ...

    def fill(
        self,
        images: Sequence[Any],
        network: "FrozenNetwork",
        store: "Store",
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        progress: bool = False,
        fail_fast: bool = False,
        max_pixels: int = ...,
    ) -> Filled: ...

    def stream(
        self,
        shards: Sequence[str],
        network: "FrozenNetwork",
        store: "Store",
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        progress: bool = False,
        fail_fast: bool = False,
        max_pixels: int = ...,
    ) -> "tuple[pd.DataFrame, Filled]":
        """:meth:`fill` for WebDataset shards, each streamed once by one decoder: returns the manifest the
        decoders found (path, sample, shard, label; samples without an image in ``attrs["skipped"]``) and the
        outcome for its rows. A shard that cannot be read, or ends early, is one failed row naming it."""
        ...
