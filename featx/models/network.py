"""The network that runs: uint8 batches in, pooled float32 vectors out, in the precision it was given.

:class:`Network` is what the engines depend on; :class:`FrozenNetwork` runs in this process and Ray's
``RemoteNetwork`` on a cluster. Neither decides anything: :func:`featx.models.build.build_network`
resolves a :class:`~featx.models.spec.NetworkSpec` (weights, device, measured precision and decoding)
and hands the result to :class:`FrozenNetwork`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from featx.models._registry import Backbone
from featx.models.pending import PendingVectors
from featx.models.pooling import Pool
from featx.models.preprocessing import Normalise, Preprocessing
from featx.models.spec import NetworkSpec

# torch.compile costs 3-20 s once per network and process on 2 CPU cores and saves 1.3 ms (ResNet-18) to
# 9 ms (ResNet-50) per image: it pays back after a few thousand (benchmarks/speed.py). "auto" compiles
# only on the CPU: on a GPU it is unmeasured.
COMPILE_MIN_IMAGES = 10_000
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["COMPILE_MIN_IMAGES", "FrozenNetwork", "Network", "Pipelines"]


class Network(Protocol):
    """What an engine needs of a network: what it is (for the cache and the messages) and a way to run it."""

    @property
    def spec(self) -> NetworkSpec: ...
    @property
    def backbone(self) -> Backbone: ...
    @property
    def node(self) -> str: ...
    @property
    def pooling(self) -> str: ...
    @property
    def n_features(self) -> int: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def preprocessing(self) -> Preprocessing: ...
    @property
    def precision(self) -> str: ...
    @property
    def fingerprint(self) -> dict[str, Any]: ...
    @property
    def weights_description(self) -> str: ...

    def prepare(self, n_images: int, batch_size: int) -> None:
        """Before a job of ``n_images`` in batches of ``batch_size`` (compile, where that pays)."""

    def submit(self, batch: torch.Tensor) -> PendingVectors:
        """Start a (B, 3, crop, crop) uint8 batch; its vectors when the result is asked for."""
        ...

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, crop, crop) uint8 images -> (B, n_features) float32 vectors."""
        ...


class Pipelines:
    """One truncated network as it runs in each precision: the float pipeline, and the int8 one built on
    first use by ``quantizer`` (from the float network and its input normalisation)."""

    def __init__(
        self,
        module: nn.Module,
        preprocessing: Preprocessing,
        pool: Pool,
        device: torch.device,
        quantizer: Callable[[nn.Module, Normalise], nn.Module],
    ):
        self.module, self.device, self._quantizer = module, device, quantizer
        self._float = _Pipeline(module, Normalise(preprocessing), pool).to(device)
        self._int8: nn.Module | None = None

    def get(self, precision: str) -> nn.Module:
        if precision != "int8":
            return self._float
        if self._int8 is None:
            quantized = self._quantizer(self.module, self._float.normalise)
            self._int8 = _Pipeline(quantized, self._float.normalise, self._float.pool)
        return self._int8

    def forward(self, precision: str, batch: torch.Tensor) -> np.ndarray:
        """The eager network in ``precision``: what the precision trial times and compares."""
        return self.run(self.get(precision), batch, precision).cpu().numpy()

    def run(self, module: nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
        # moved outside inference mode: an inference tensor fails a compiled graph's guards (H200: a
        # recompilation per batch, then eager)
        batch, dtype = batch.to(self.device, non_blocking=True), _AUTOCAST_DTYPES.get(precision)
        autocast = torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            return module(batch)


class FrozenNetwork:
    """A backbone with its weights, truncated at one node, frozen, on a device, in one precision: batches
    in, vectors out. Built by [`build_network`][featx.build_network]; ``fingerprint`` names everything that changes
    the output and selects the cache namespace."""

    def __init__(
        self,
        spec: NetworkSpec,
        backbone: Backbone,
        pipelines: Pipelines,
        *,
        preprocessing: Preprocessing,
        node: str,
        pooling: str,
        n_features: int,
        precision: str,
        fingerprint: dict[str, Any],
        weights_description: str,
        precision_choice: dict[str, Any],
        decoding_choice: dict[str, Any],
    ):
        self.spec, self.backbone, self.pipelines = spec, backbone, pipelines
        self.device = pipelines.device
        self.preprocessing, self.node, self.pooling, self.n_features = (
            preprocessing,
            node,
            pooling,
            n_features,
        )
        self.precision, self.fingerprint, self.weights_description = (
            precision,
            fingerprint,
            weights_description,
        )
        self.precision_choice, self.decoding_choice = precision_choice, decoding_choice
        self.compile = spec.compile
        self._compiled: tuple[nn.Module, int] | None = None

    def prepare(self, n_images: int, batch_size: int) -> None:
        """Before a job of ``n_images``: compile the network if ``compile`` asks for it (once per process).

        The compiled graph has a static batch size; smaller batches are padded to it. If compiling fails
        (no C compiler, an untraceable model), featx warns and runs eagerly.
        """
        auto = self.device.type == "cpu" and n_images >= COMPILE_MIN_IMAGES
        wanted = self.compile is True or (self.compile == "auto" and auto)
        if not wanted or self._compiled is not None:
            return
        compiled = torch.compile(
            self.pipelines.get(self.precision), dynamic=False, options={"freezing": True}
        )
        crop = self.preprocessing.crop
        try:  # compiles now, or fails
            self.pipelines.run(
                compiled, torch.zeros(batch_size, 3, crop, crop, dtype=torch.uint8), self.precision
            )
        except Exception as error:  # torch.compile raises many kinds of errors, all of which mean "not here"
            warnings.warn(
                f"torch.compile failed for {self.backbone.name} ({type(error).__name__}: "
                f"{str(error)[:200]}); running eagerly (compile=False silences this)",
                stacklevel=2,
            )
            self.compile = False
            return
        self._compiled = (compiled, batch_size)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, crop, crop) uint8 images (resized and cropped) -> (B, n_features) float32 numpy array."""
        return self.submit(batch).result()

    def submit(self, batch: torch.Tensor) -> PendingVectors:
        """As calling the network, without waiting for the device (see `featx.models.pending`)."""
        n = len(batch)
        if self._compiled is not None and n <= self._compiled[1]:
            module, size = self._compiled
            if n < size:  # the compiled graph's static shape: pad, then drop the padding's rows
                batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])
            return PendingVectors.copied(self.pipelines.run(module, batch, self.precision)[:n])
        if n == 1:  # one image alone takes other kernels (GEMV, not GEMM) and other rounding: forward it
            batch = torch.cat([batch, batch])  # twice, so its vector is the one it gets in any batch
        return PendingVectors.copied(
            self.pipelines.run(self.pipelines.get(self.precision), batch, self.precision)[:n]
        )


class _Pipeline(nn.Module):
    """uint8 batch -> scaled and normalised -> truncated network -> pooled float32: one graph to compile."""

    def __init__(self, network: nn.Module, normalise: Normalise, pool: Pool):
        super().__init__()
        self.normalise, self.network, self.pool = normalise, network, pool

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.pool(self.network(self.normalise(batch))["features"].float())
