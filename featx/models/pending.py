"""A batch's vectors on their way from the device to the host, without a host synchronisation per batch:
an asynchronous copy into pinned memory (cached by torch's host allocator), waited for by whoever needs
the numbers (the engine's commit thread), so the network's thread queues the next batch meanwhile."""

from __future__ import annotations

import numpy as np
import torch


class PendingVectors:
    """A batch's vectors on their way to the host: :meth:`result` waits for the copy (the commit thread
    calls it, so the network's thread never does)."""

    def __init__(self, host: torch.Tensor, done: torch.cuda.Event | None = None):
        self._host, self._done = host, done

    @classmethod
    def copied(cls, vectors: torch.Tensor) -> PendingVectors:
        if vectors.device.type != "cuda":
            return cls(vectors.cpu())
        host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)  # cached by torch
        host.copy_(vectors, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return cls(host, done)

    @property
    def nbytes(self) -> int:
        return self._host.nelement() * self._host.element_size()

    def result(self) -> np.ndarray:
        if self._done is not None:
            self._done.synchronize()
        return self._host.numpy()
