"""The frozen network: one description (:class:`NetworkSpec`) resolved into a module that turns uint8
batches into pooled float32 vectors, and the ``fingerprint`` that names everything changing its output."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as fuse_conv_bn

from featx.cache.files import FORMAT_VERSION
from featx.errors import ParameterError
from featx.models import quantize, tuning
from featx.models._registry import Backbone, get_backbone
from featx.models.decoding import choose_decoding
from featx.models.devices import resolve_device
from featx.models.memory import fitting_in_memory
from featx.models.pending import PendingVectors
from featx.models.pooling import Pool, pool, resolve_pooling
from featx.models.precision import Trial, choose_precision
from featx.models.preprocessing import Normalise, Preprocessing
from featx.models.weights import resolve_weights
from featx.options import COMPILES, COSINE, DECODINGS, MIN_COSINE, POOLINGS, PRECISIONS, check

# torch.compile costs 3-20 s once per network and process on 2 CPU cores and saves 1.3 ms (ResNet-18) to
# 9 ms (ResNet-50) per image: it pays back after a few thousand (benchmarks/speed.py). "auto" compiles
# only on the CPU: on a GPU it is unmeasured.
COMPILE_MIN_IMAGES = 10_000
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "COMPILE_MIN_IMAGES",
    "FrozenNetwork",
    "NetworkSpec",
    "feature_size",
    "list_nodes",
]


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything that picks a frozen network, as one value (like timm's ``PretrainedCfg``).

    The transformer, the command line, the engines' worker processes and the fingerprint all start from
    it. ``device`` and ``precision`` may be "auto" here; :class:`FrozenNetwork` resolves them where the
    network runs.
    """

    backbone: str | Backbone = "resnet50"
    _: dataclasses.KW_ONLY
    weights: Any = "DEFAULT"
    layer: str | None = None
    pooling: str | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool | str = "auto"
    decoding: str = "auto"
    min_cosine: float = MIN_COSINE
    calibration: str | None = None

    def __post_init__(self) -> None:
        check("precision", self.precision, PRECISIONS, "NetworkSpec")
        check("decoding", self.decoding, DECODINGS, "NetworkSpec")
        check("compile", self.compile, COMPILES, "NetworkSpec")
        check("min_cosine", self.min_cosine, COSINE, "NetworkSpec")
        if self.pooling is not None:
            check("pooling", self.pooling, POOLINGS, "NetworkSpec")
        object.__setattr__(self, "device", str(self.device))

    def replace(self, **changes: Any) -> NetworkSpec:
        return dataclasses.replace(self, **changes)


@functools.lru_cache(maxsize=64)
def _meta_output_shape(backbone: Backbone, node: str, crop: int) -> tuple[int, ...]:
    extractor = backbone.create_extractor(backbone.skeleton(), node).eval()
    with torch.device("meta"):  # tensors the forward creates (position ids, masks) stay data-free too
        output = extractor(torch.empty(2, 3, crop, crop))["features"]
    if not isinstance(output, torch.Tensor) or output.ndim < 2 or output.shape[0] != 2:
        found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ParameterError(
            f"layer={node!r} of {backbone.name} is not one output per image (it gives {found}: a weight, a "
            f"size or an index); choose a module's output such as {list(backbone.stages)[-2:] or backbone.node!r}"
        )
    return tuple(output.shape[1:])


def feature_size(backbone: str | Backbone, layer: str | None = None, pooling: str | None = None) -> int:
    """The length of the feature vector, computed on PyTorch's meta device: no weights, no images."""
    spec = get_backbone(backbone)
    shape = _output_shape(spec, layer or spec.node)
    pooled = pool(
        torch.empty((1, *shape), device="meta"),
        resolve_pooling(spec, layer, pooling, shape),
        spec.prefix_tokens,
    )
    return int(pooled.shape[1])


def _output_shape(spec: Backbone, node: str) -> tuple[int, ...]:
    try:
        return _meta_output_shape(spec, node, spec.preprocessing.crop)
    except Exception as error:  # FX raises assorted errors for unknown nodes
        names = list_nodes(spec)
        if node not in names:
            raise ParameterError(
                f"layer={node!r} is not a node of {spec.name}; choose from featx.list_nodes({spec.name!r}), "
                f"e.g. {names[-6:]}"
            ) from None
        raise error


def list_nodes(backbone: str | Backbone) -> list[str]:
    """The node names ``layer=`` accepts for this backbone, input to output."""
    spec = get_backbone(backbone)
    return spec.node_names(spec.skeleton())


class FrozenNetwork:
    """A backbone with its weights, truncated at one node, frozen, on a device: batches in, vectors out.

    ``FrozenNetwork(NetworkSpec(...))`` or ``FrozenNetwork("resnet50", weights=None, ...)`` (the spec's
    fields as keywords). ``fingerprint`` names everything that changes the output; it selects the cache
    namespace.
    """

    def __init__(self, backbone: NetworkSpec | str | Backbone = "resnet50", **settings: Any):
        self.spec = backbone if isinstance(backbone, NetworkSpec) else NetworkSpec(backbone, **settings)
        self.compile = self.spec.compile
        self._compiled: tuple[nn.Module, int] | None = None
        self.backbone = get_backbone(self.spec.backbone)
        self.node = self.spec.layer or self.backbone.node
        self.pooling = resolve_pooling(self.backbone, self.spec.layer, self.spec.pooling)
        self.n_features = feature_size(
            self.backbone, self.spec.layer, self.spec.pooling
        )  # also validates the node
        # int8 on a GPU is refused as such, whether or not this machine has the GPU asked for
        asked = self.spec.device if self.spec.device != "auto" else None
        try:
            device_type = resolve_device("auto").type if asked is None else torch.device(asked).type
        except RuntimeError:  # not a device at all: resolve_device below says so
            device_type = "cpu"
        if self.spec.precision == "int8" and device_type != "cpu":
            raise ParameterError(
                f"precision='int8' runs on the CPU only (here: {asked or device_type}); on a GPU use "
                "'fp16', 'bf16' or 'auto'"
            )
        self.device = resolve_device(self.spec.device)
        resolved = resolve_weights(self.backbone, self.spec.weights)
        self.decoding_choice = choose_decoding(self.spec.decoding, self.device, resolved.preprocessing)
        self.preprocessing: Preprocessing = dataclasses.replace(
            resolved.preprocessing, decoding=self.decoding_choice["decoding"]
        )
        self.weights_description = resolved.description
        with fitting_in_memory(self.backbone.name, self.backbone.skeleton, self.device):
            self.module = self._load(resolved.state_dict)  # built, then moved to the device
        self._pool = Pool(self.pooling, self.backbone.prefix_tokens)
        self._pipelines = {"float": _Pipeline(self.module, self.preprocessing, self._pool).to(self.device)}
        identity = {
            "format": FORMAT_VERSION,
            "backbone": self.backbone.name,
            "weights": resolved.digest,
            "node": self.node,
            "pooling": self.pooling,
            "preprocessing": self.preprocessing.as_dict(),
        }
        self._tuning_key = tuning.tuning_key(self.device, identity, self.spec.min_cosine)
        self.trial = Trial(self.preprocessing, self.device, self.spec.calibration, self._forward_in)
        self.precision_choice = choose_precision(
            self.spec.precision,
            self._tuning_key,
            self.device,
            self.trial,
            self.spec.min_cosine,
            self.backbone.name,
        )
        self.precision: str = self.precision_choice["precision"]
        self.fingerprint = {**identity, "precision": self.precision}
        if self.precision == "int8":
            self.fingerprint["quantization"] = {
                "scheme": quantize.SCHEME,
                "torch": torch.__version__,
                "calibration": self.trial.digest(),
            }

    def _pipeline_for(self, precision: str) -> nn.Module:
        """The float pipeline, or (built on first use) the int8 one, calibrated on real images or read
        from its stored calibration."""
        if precision != "int8":
            return self._pipelines["float"]
        if "int8" not in self._pipelines:
            calibration = self._pipelines["float"].normalise(self.trial.batches()[0].to(self.device))
            stored = quantize.stored_calibration_path(
                tuning.tuning_path().parent, self._tuning_key, self.trial.digest()
            )
            self._pipelines["int8"] = _Pipeline(
                quantize.quantize(self.module, calibration, stored),
                self.preprocessing,
                self._pool,
            )
        return self._pipelines["int8"]

    @property
    def _pipeline(self) -> nn.Module:
        return self._pipeline_for(self.precision)

    def _load(self, state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
        extractor = self.backbone.truncated(state_dict, self.node).requires_grad_(False)
        if isinstance(extractor, torch.fx.GraphModule) and any(
            type(m) is nn.BatchNorm2d for m in extractor.modules()
        ):
            # Fold each BatchNorm into its convolution: frozen statistics make it an affine map of the
            # weights (fp32 features change by ~1e-6 relative; ResNet-50 runs 1.25x faster in bf16 here).
            # Only where there is a plain BatchNorm2d to fold: regenerating timm's graph for nothing slows it.
            extractor = fuse_conv_bn(extractor, inplace=True, no_trace=True).eval()
        return extractor.to(self.device, memory_format=torch.channels_last)

    def prepare(self, n_images: int, batch_size: int) -> None:
        """Before a job of ``n_images``: compile the network if ``compile`` asks for it (once per process).

        The compiled graph has a static batch size; smaller batches are padded to it. If compiling fails
        (no C compiler, an untraceable model), featx warns and runs eagerly.
        """
        auto = self.device.type == "cpu" and n_images >= COMPILE_MIN_IMAGES
        wanted = self.compile is True or (self.compile == "auto" and auto)
        if not wanted or self._compiled is not None:
            return
        compiled = torch.compile(self._pipeline, dynamic=False, options={"freezing": True})
        crop = self.preprocessing.crop
        try:
            self._forward(
                compiled, torch.zeros(batch_size, 3, crop, crop, dtype=torch.uint8)
            )  # compiles now, or fails
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
        """As calling the network, without waiting for the device (see :mod:`featx.models.pending`)."""
        n = len(batch)
        if self._compiled is not None and n <= self._compiled[1]:
            module, size = self._compiled
            if n < size:  # the compiled graph's static shape: pad, then drop the padding's rows
                batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])
            return PendingVectors.copied(self._forward(module, batch)[:n])
        return PendingVectors.copied(self._forward(self._pipeline, batch))

    def _forward_in(self, precision: str, batch: torch.Tensor) -> np.ndarray:
        """The eager network in ``precision``: what the precision trial times and compares."""
        return self._forward(self._pipeline_for(precision), batch, precision).cpu().numpy()

    def _forward(self, module: nn.Module, batch: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        # moved outside inference mode: an inference tensor fails a compiled graph's guards (H200: a
        # recompilation per batch, then eager)
        batch, dtype = (
            batch.to(self.device, non_blocking=True),
            _AUTOCAST_DTYPES.get(precision or self.precision),
        )
        autocast = torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
        with torch.inference_mode(), autocast:
            return module(batch)


class _Pipeline(nn.Module):
    """uint8 batch -> scaled and normalised -> truncated network -> pooled float32: one graph to compile."""

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, pool: Pool):
        super().__init__()
        self.normalise, self.network, self.pool = Normalise(preprocessing), network, pool

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.pool(self.network(self.normalise(batch))["features"].float())
