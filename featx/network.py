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

from featx import quantize, tuning
from featx.errors import ImageError, ParameterError
from featx.options import COMPILES, DECODINGS, POOLINGS, PRECISIONS, check_option
from featx.preprocessing import Normalise, Preprocessing
from featx.registry import Backbone, get_backbone
from featx.weights import resolve_weights

# torch.compile costs 3-20 s once per network and process on 2 CPU cores (less from inductor's on-disk
# cache) and saves 1.3 ms (ResNet-18) to 9 ms (ResNet-50) per image here: it pays back after a few
# thousand images. See benchmarks/speed.py.
COMPILE_MIN_IMAGES = 10_000
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = ["COMPILE_MIN_IMAGES", "FrozenNetwork", "NetworkSpec", "feature_size", "list_nodes", "pool",
           "resolve_device", "resolve_pooling"]


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything that picks a frozen network, as one value (like timm's ``PretrainedCfg``).

    The transformer, the command line, the engines' worker processes and the fingerprint all start from
    it. ``device`` and ``precision`` may be "auto" here; :class:`FrozenNetwork` resolves them where the
    network runs.
    """

    backbone: str | Backbone = "resnet50"
    weights: Any = "DEFAULT"
    layer: str | None = None
    pooling: str | None = None
    device: str = "auto"
    precision: str = "auto"
    compile: bool | str = "auto"
    decoding: str = "reduced"
    min_cosine: float = tuning.MIN_COSINE
    calibration: str | None = None

    def __post_init__(self) -> None:
        check_option("precision", self.precision, PRECISIONS, "NetworkSpec")
        check_option("decoding", self.decoding, DECODINGS, "NetworkSpec")
        check_option("compile", self.compile, COMPILES, "NetworkSpec")
        if self.pooling is not None:
            check_option("pooling", self.pooling, POOLINGS, "NetworkSpec")
        object.__setattr__(self, "device", str(self.device))

    def replace(self, **changes: Any) -> "NetworkSpec":
        return dataclasses.replace(self, **changes)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else goes to ``torch.device``."""
    if str(device) != "auto":
        try:
            return torch.device(device)
        except RuntimeError as error:
            raise ParameterError(f"device={device!r} is not a torch device ({error}); use auto, cpu, cuda, cuda:N or mps") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_pooling(backbone: Backbone, layer: str | None, pooling: str | None) -> str:
    """The backbone's own pooling for its default node; global average for any other named node."""
    if pooling is None:
        return backbone.pooling if layer in (None, backbone.node) else "avg"
    return check_option("pooling", pooling, POOLINGS)


def pool(features: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce a node's output to one vector per image: (B, C, H, W) or (B, tokens, C) -> (B, d)."""
    if features.ndim <= 2 or pooling == "flatten":
        return features.flatten(1)
    spatial = tuple(range(2, features.ndim)) if features.ndim == 4 else (1,)
    return features.mean(spatial) if pooling == "avg" else features.amax(spatial)


@functools.lru_cache(maxsize=64)
def _meta_output_shape(backbone: Backbone, node: str, crop: int) -> tuple[int, ...]:
    with torch.device("meta"):
        extractor = backbone.create_extractor(backbone.build().eval(), node).eval()
        return tuple(extractor(torch.empty(1, 3, crop, crop))["features"].shape[1:])


def feature_size(backbone: str | Backbone, layer: str | None = None, pooling: str | None = None) -> int:
    """The length of the feature vector, computed on PyTorch's meta device: no weights, no images."""
    spec = get_backbone(backbone)
    shape = _output_shape(spec, layer or spec.node)
    pooled = pool(torch.empty((1, *shape), device="meta"), resolve_pooling(spec, layer, pooling))
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
    with torch.device("meta"):
        return spec.node_names(spec.build().eval())


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
        self.n_features = feature_size(self.backbone, self.spec.layer, self.spec.pooling)  # also validates the node
        self.device = resolve_device(self.spec.device)
        if self.spec.precision == "int8" and self.device.type != "cpu":
            raise ParameterError(f"precision='int8' runs on the CPU only (here: {self.device}); on a GPU use "
                                 "'fp16', 'bf16' or 'auto'")
        resolved = resolve_weights(self.backbone, self.spec.weights)
        self.preprocessing: Preprocessing = dataclasses.replace(resolved.preprocessing, decoding=self.spec.decoding)
        self.weights_description = resolved.description
        self.module = self._load(resolved.state_dict)
        self._pipelines = {"float": _Pipeline(self.module, self.preprocessing, self.pooling).to(self.device)}
        identity = {"format": 1, "backbone": self.backbone.name, "weights": resolved.digest, "node": self.node,
                    "pooling": self.pooling, "preprocessing": self.preprocessing.as_dict()}
        self._tuning_key = tuning.tuning_key(self.device, identity, self.spec.min_cosine)
        self.precision_choice = self._choose_precision(self._tuning_key)
        self.precision: str = self.precision_choice["precision"]
        self.fingerprint = {**identity, "precision": self.precision}
        if self.precision == "int8":
            self.fingerprint["quantization"] = {"scheme": quantize.SCHEME, "torch": torch.__version__,
                                                "calibration": self._calibration_digest()}

    def _choose_precision(self, key: str) -> dict[str, Any]:
        """Explicit: honoured (int8 after its fidelity check). "auto": measured, see :mod:`featx.tuning`."""
        candidates = tuning.precision_candidates(self.device)
        if self.spec.precision == "int8":
            try:
                cosine = tuning.min_cosine(self._forward(self._pipeline_for("int8"), self._calibration()[1], "int8"),
                                           self._forward(self._pipeline_for("fp32"), self._calibration()[1], "fp32"))
                problem = None if cosine >= self.spec.min_cosine else (
                    f"int8 features reach cosine {cosine:.4f} to fp32 on held-out {self._held_out_name()}, under the bound "
                    f"{self.spec.min_cosine}")
            except quantize.Int8Unavailable as error:
                problem = f"int8 is unavailable for {self.backbone.name} here ({error})"
            if problem is None:
                return {"precision": "int8",
                        "why": f"given explicitly; cosine {cosine:.4f} to fp32 on held-out {self._held_out_name()}"}
            fallback = tuning.choose_precision(key, [c for c in candidates if c != "int8"], self._trial,
                                               self.spec.min_cosine)
            tuning.remember(key, "int8_refused", problem)
            warnings.warn(f"{problem}; using {fallback['precision']} instead (precision='auto' would choose it)",
                          stacklevel=3)
            return {**fallback, "why": f"{problem}; fell back to {fallback['precision']}"}
        if self.spec.precision != "auto":
            return {"precision": self.spec.precision, "why": "given explicitly"}
        return tuning.choose_precision(key, candidates, self._trial, self.spec.min_cosine)

    def _calibration(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(calibration batch, held-out batch) of uint8 images: the bundled photos, and the same photos
        mirrored and upside down; or alternate images of the user's ``calibration`` set."""
        if getattr(self, "_calibration_batches", None) is None:
            if self.spec.calibration is None:  # held out: the photos mirrored, and upside down
                photos = tuning.sample_images()
                held_out = [p[:, ::-1] for p in photos] + [p[::-1] for p in photos]
                decoded = [torch.stack([self.preprocessing.decode(p.copy()) for p in images])
                           for images in (photos, held_out)]
            else:
                images = [self._decode_calibration_image(source)
                          for source in quantize.calibration_sources(self.spec.calibration)]
                decoded = [torch.stack(images[0::2]), torch.stack(images[1::2])]
            self._calibration_batches = (decoded[0], decoded[1])
        return self._calibration_batches

    def _decode_calibration_image(self, source: Any) -> torch.Tensor:
        try:
            return self.preprocessing.decode(source)
        except ImageError as error:
            raise ParameterError(f"calibration={self.spec.calibration!r}: {error}; remove that image or choose "
                                 "another calibration set") from None

    def _calibration_digest(self) -> str:
        return quantize.calibration_digest(self._calibration()[0])

    def _held_out_name(self) -> str:
        return "photos" if self.spec.calibration is None else f"images of {self.spec.calibration}"

    def _pipeline_for(self, precision: str) -> nn.Module:
        """The float pipeline, or (built on first use) the int8 one, calibrated on real images or read
        from its stored calibration."""
        if precision != "int8":
            return self._pipelines["float"]
        if "int8" not in self._pipelines:
            calibration = self._pipelines["float"].normalise(self._calibration()[0].to(self.device))
            stored = quantize.stored_calibration_path(tuning.tuning_path().parent, self._tuning_key,
                                                      self._calibration_digest())
            self._pipelines["int8"] = _Pipeline(quantize.quantize(self.module, calibration, stored),
                                                self.preprocessing, self.pooling)
        return self._pipelines["int8"]

    @property
    def _pipeline(self) -> nn.Module:
        return self._pipeline_for(self.precision)

    def _load(self, state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
        extractor = self.backbone.truncated(state_dict, self.node).requires_grad_(False)
        if isinstance(extractor, torch.fx.GraphModule) and any(type(m) is nn.BatchNorm2d for m in extractor.modules()):
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
        wanted = self.compile is True or (self.compile == "auto" and n_images >= COMPILE_MIN_IMAGES)
        if not wanted or self._compiled is not None:
            return
        compiled = torch.compile(self._pipeline, dynamic=False, options={"freezing": True})
        crop = self.preprocessing.crop
        try:
            self._forward(compiled, torch.zeros(batch_size, 3, crop, crop, dtype=torch.uint8))  # compiles now, or fails
        except Exception as error:  # torch.compile raises many kinds of errors, all of which mean "not here"
            warnings.warn(f"torch.compile failed for {self.backbone.name} ({type(error).__name__}: "
                          f"{str(error)[:200]}); running eagerly (compile=False silences this)", stacklevel=2)
            self.compile = False
            return
        self._compiled = (compiled, batch_size)

    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 3, crop, crop) uint8 images (resized and cropped) -> (B, n_features) float32 numpy array."""
        n = len(batch)
        if self._compiled is not None and n <= self._compiled[1]:
            module, size = self._compiled
            if n < size:  # the compiled graph's static shape: pad, then drop the padding's rows
                batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])
            return self._forward(module, batch)[:n]
        return self._forward(self._pipeline, batch)

    def _trial(self, precision: str) -> tuple[float, float]:
        """(images per second, min cosine to fp32) of the eager network in ``precision`` on sample photos."""
        batch = torch.cat(self._calibration())
        if getattr(self, "_trial_reference", None) is None:
            self._trial_reference = self._forward(self._pipeline_for("fp32"), batch, "fp32")
        try:
            pipeline = self._pipeline_for(precision)
        except quantize.Int8Unavailable:
            return 0.0, 0.0  # never chosen
        timing = self._trial_batch(batch)
        warmed = self.__dict__.setdefault("_trial_warmed", set())
        seconds, output = tuning.timed(lambda: self._forward(pipeline, timing, precision),
                                       warm_up=precision not in warmed)
        warmed.add(precision)
        return len(timing) / seconds, tuning.min_cosine(output[:len(batch)], self._trial_reference)

    def _trial_batch(self, photos: torch.Tensor) -> torch.Tensor:
        """What the trial times: on a GPU the photos tiled to ``tuning.GPU_TRIAL_IMAGES`` unless fp32 OOMs."""
        if self.device.type != "cuda":
            return photos
        if getattr(self, "_trial_tiled", None) is None:
            tiled = photos.repeat(-(-tuning.GPU_TRIAL_IMAGES // len(photos)), 1, 1, 1)[:tuning.GPU_TRIAL_IMAGES]
            try:  # this forward is also fp32's warm-up at the tiled size
                self._forward(self._pipeline_for("fp32"), tiled, "fp32")
                self._trial_tiled = tiled
                self.__dict__.setdefault("_trial_warmed", set()).add("fp32")
            except torch.cuda.OutOfMemoryError:  # the allocator keeps what it freed for the photos alone
                self._trial_tiled = photos
        return self._trial_tiled

    @torch.inference_mode()
    def _forward(self, module: nn.Module, batch: torch.Tensor, precision: str | None = None) -> np.ndarray:
        batch = batch.to(self.device, non_blocking=True)
        dtype = _AUTOCAST_DTYPES.get(precision or self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return module(batch).cpu().numpy()


class _Pipeline(nn.Module):
    """uint8 batch -> scaled and normalised -> truncated network -> pooled float32: one graph to compile."""

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, pooling: str):
        super().__init__()
        self.normalise, self.network, self.pooling = Normalise(preprocessing), network, pooling

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return pool(self.network(self.normalise(batch))["features"].float(), self.pooling)
