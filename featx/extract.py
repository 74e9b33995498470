"""The engine: decode in DataLoader workers, run the frozen network batched, store vectors, return them.

One engine serves every door. It computes only what the store lacks (one forward pass per distinct image
content), writes each finished batch at once (so an interrupted job keeps its work), and reports the inputs
that failed instead of inventing vectors for them.
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse as fuse_conv_bn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from featx.backbones import POOLINGS, Backbone, get_backbone
from featx.cache import FeatureCache, MemoryNamespace, Namespace
from featx.images import ImageError, ImageInput, as_image_list, content_key, load_rgb
from featx.preprocessing import Preprocessing
from featx.weights import RANDOM_INIT_SEED, resolve_weights

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILES = ("auto", True, False)
# torch.compile costs 3-20 s once per network and process on 2 CPU cores (less from inductor's on-disk
# cache) and saves 1.3 ms (ResNet-18) to 9 ms (ResNet-50) per image here: it pays back after a few
# thousand images. See benchmarks/speed.py.
COMPILE_MIN_IMAGES = 10_000
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
Store = Namespace | MemoryNamespace


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else goes to ``torch.device``."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto': bf16 autocast on CPUs with native bf16 (measured faithful: see tests/test_transfer.py),
    fp16 autocast on CUDA, fp32 elsewhere. Explicit values are honoured as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; use one of {PRECISIONS}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_pooling(backbone: Backbone, layer: str | None, pooling: str | None) -> str:
    """The backbone's own pooling for its default node; global average for any other named node."""
    if pooling is None:
        return backbone.pooling if layer in (None, backbone.node) else "avg"
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; use one of {POOLINGS} or None")
    return pooling


def pool(features: torch.Tensor, pooling: str) -> torch.Tensor:
    """Reduce a node's output to one vector per image: (B, C, H, W) or (B, tokens, C) -> (B, d)."""
    if features.ndim <= 2 or pooling == "flatten":
        return features.flatten(1)
    spatial = tuple(range(2, features.ndim)) if features.ndim == 4 else (1,)
    return features.mean(spatial) if pooling == "avg" else features.amax(spatial)


@functools.lru_cache(maxsize=64)
def _meta_output_shape(backbone: Backbone, node: str, crop: int) -> tuple[int, ...]:
    with torch.device("meta"):
        model = backbone.build().eval()
        extractor = backbone.create_extractor(model, node).eval()
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
            raise ValueError(
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

    ``fingerprint`` names everything that changes the output; it selects the cache namespace.
    """

    def __init__(
        self,
        backbone: str | Backbone = "resnet50",
        weights: Any = "DEFAULT",
        layer: str | None = None,
        pooling: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        compile: bool | str = "auto",
    ):
        if compile not in COMPILES:
            raise ValueError(f"compile={compile!r}; use True, False or 'auto' (when >= {COMPILE_MIN_IMAGES} images)")
        self.compile = compile
        self._compiled: tuple[nn.Module, int] | None = None
        # what rebuilds this network in another process (a Ray actor): picklable by value
        self.settings = {"backbone": backbone, "weights": weights, "layer": layer, "pooling": pooling,
                         "device": str(device), "precision": precision, "compile": compile}
        self.backbone = get_backbone(backbone)
        self.node = layer or self.backbone.node
        self.pooling = resolve_pooling(self.backbone, layer, pooling)
        self.n_features = feature_size(self.backbone, layer, pooling)  # also validates the node
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        resolved = resolve_weights(self.backbone, weights)
        self.preprocessing: Preprocessing = resolved.preprocessing
        self.weights_description = resolved.description
        self.fingerprint = {
            "format": 1,
            "backbone": self.backbone.name,
            "weights": resolved.digest,
            "node": self.node,
            "pooling": self.pooling,
            "preprocessing": self.preprocessing.as_dict(),
            "precision": self.precision,
        }
        self.module = self._load(resolved.state_dict)
        self._pipeline = _Pipeline(self.module, self.preprocessing, self.pooling).to(self.device)

    def _load(self, state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)  # weights=None must mean the same network every time
            model = self.backbone.build()
        if state_dict is not None:
            model.load_state_dict(state_dict)
        extractor = self.backbone.create_extractor(model.eval(), self.node).eval().requires_grad_(False)
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

    @torch.inference_mode()
    def _forward(self, module: nn.Module, batch: torch.Tensor) -> np.ndarray:
        batch = batch.to(self.device, non_blocking=True)
        dtype = _AUTOCAST_DTYPES.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return module(batch).cpu().numpy()


class _Pipeline(nn.Module):
    """uint8 batch -> scaled and normalised -> truncated network -> pooled float32: one graph to compile.

    Scaling on the whole batch, on the device, costs a tenth of doing it image by image in the workers.
    """

    def __init__(self, network: nn.Module, preprocessing: Preprocessing, pooling: str):
        super().__init__()
        self.network, self.pooling = network, pooling
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))
        self.register_buffer("shift", torch.tensor(preprocessing.mean).view(1, 3, 1, 1) / std)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.contiguous(memory_format=torch.channels_last).float() * self.scale - self.shift
        return pool(self.network(x)["features"].float(), self.pooling)


@dataclass
class Extraction:
    """What one run produced: vectors in input order (NaN rows where an input failed) and the failures."""

    features: np.ndarray
    errors: list[ImageError] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0


@dataclass
class Filled:
    """The outcome of :func:`fill_store`: each input's content key, the failures, hit and compute counts."""

    keys: list[str | None]
    errors: list[ImageError]
    n_cached: int
    n_computed: int

    def good(self) -> list[int]:
        """Indices of the inputs whose vector is in the store, in input order."""
        failed = {e.index for e in self.errors}
        return [i for i in range(len(self.keys)) if i not in failed]


class _Decode(Dataset):
    """Decoding, resizing and cropping (to uint8), run in DataLoader workers so the network never waits on PIL."""

    def __init__(self, items: Sequence[tuple[int, ImageInput]], preprocessing: Preprocessing):
        self.items, self.transform = items, preprocessing.geometry()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[int, torch.Tensor | ImageError]:
        index, image = self.items[position]
        try:
            return index, self.transform(load_rgb(image, index))
        except ImageError as error:
            return index, error


def _collate(samples: list[tuple[int, Any]]) -> tuple[list[int], torch.Tensor | None, list[ImageError]]:
    good = [(i, t) for i, t in samples if isinstance(t, torch.Tensor)]
    errors = [t for _, t in samples if isinstance(t, ImageError)]
    batch = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], batch, errors


def content_keys(images: Sequence[ImageInput], progress: bool = False) -> tuple[list[str | None], list[ImageError]]:
    """The content key of every input (None where the input cannot even be read)."""
    keys: list[str | None] = []
    errors: list[ImageError] = []
    for index, image in enumerate(tqdm(images, disable=not progress, unit="img", desc="hashing", leave=False)):
        try:
            keys.append(content_key(image, index))
        except ImageError as error:
            keys.append(None)
            errors.append(error)
    return keys, errors


def default_num_workers(n_images: int, batch_size: int) -> int:
    """No worker processes for a batch or two (start-up would dominate); otherwise half the cores, up to 4."""
    if n_images <= 2 * batch_size:
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def compute_missing(
    images: Sequence[ImageInput],
    keys: Sequence[str | None],
    network: FrozenNetwork,
    store: Store,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: tqdm | None = None,
    fail_fast: bool = False,
) -> tuple[int, list[ImageError]]:
    """Run the network on the inputs whose key the store lacks (once per distinct key), storing each batch.

    Returns the number of vectors computed and the decoding failures, each naming its input. With
    ``fail_fast`` the first failure is raised, after the good vectors of its batch are stored.
    """
    first_index: dict[str, int] = {}
    for index, key in enumerate(keys):
        if key is not None:
            first_index.setdefault(key, index)
    todo = [(first_index[key], images[first_index[key]]) for key in store.missing(first_index)]
    if not todo:
        return 0, []
    network.prepare(len(todo), batch_size)
    workers = default_num_workers(len(todo), batch_size) if num_workers is None else num_workers
    loader = DataLoader(
        _Decode(todo, network.preprocessing),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=network.device.type == "cuda",
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=_decode_worker_init,
    )
    computed, errors = 0, []
    for indices, batch, batch_errors in _iterate(loader):
        errors.extend(batch_errors)
        if batch is not None:
            store.write([keys[i] for i in indices], network(batch))
            computed += len(indices)
        if fail_fast and batch_errors:
            raise batch_errors[0]
        if progress is not None:
            progress.update(len(indices) + len(batch_errors))
            progress.set_postfix(computed=computed, failed=len(errors), refresh=False)
    return computed, errors


def _decode_worker_init(worker_id: int) -> None:
    """Decoders yield the CPU to the network: on a machine without spare cores a decoder competing at equal
    priority slows the network's thread pool more than its decoding gains (see benchmarks/speed.py)."""
    os.nice(10)


def _iterate(loader: DataLoader) -> Iterator[Any]:
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        # Shut worker processes down at once, also on Ctrl-C, so nothing lingers or half-writes.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def spread_failures(decode_errors: list[ImageError], keys: Sequence[str | None]) -> list[ImageError]:
    """A decoding failure of one content is a failure of every input with that content."""
    by_key = {keys[e.index]: e for e in decode_errors}
    return [
        e if e.index == i else ImageError(i, e.source, e.kind, e.reason)
        for i, key in enumerate(keys)
        if (e := by_key.get(key)) is not None
    ]


def open_store(network: FrozenNetwork, cache_dir: str | os.PathLike | None) -> Store:
    """The cache namespace of ``network`` under ``cache_dir``; an in-memory one when there is no cache."""
    if cache_dir is None:
        return MemoryNamespace(network.fingerprint)
    return FeatureCache(cache_dir).namespace(network.fingerprint)


def fill_store(
    images: Sequence[ImageInput],
    network: FrozenNetwork,
    store: Store,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = False,
    fail_fast: bool = False,
) -> Filled:
    """Key every input, then compute and store what ``store`` lacks, with a progress bar.

    Inputs sharing a failed content all fail. With ``fail_fast`` the first failure is raised (unreadable
    inputs before any computing; a decoding failure after its batch's good vectors are stored).
    """
    keys, errors = content_keys(images, progress=progress)
    if fail_fast and errors:
        raise errors[0]
    missing = set(store.missing(key for key in keys if key is not None))
    n_cached = sum(1 for key in keys if key is not None and key not in missing)
    with tqdm(total=len(images), disable=not progress, unit="img", desc=network.backbone.name) as bar:
        bar.update(n_cached + len(errors))
        bar.set_postfix(cached=n_cached, refresh=False)
        n_computed, decode_errors = compute_missing(
            images, keys, network, store, batch_size=batch_size, num_workers=num_workers,
            progress=bar, fail_fast=fail_fast,
        )
    errors = sorted(errors + spread_failures(decode_errors, keys), key=lambda e: e.index)
    return Filled(keys, errors, n_cached, n_computed)


def read_vectors(
    images: Sequence[ImageInput], keys: Sequence[str], network: FrozenNetwork, store: Store, *, batch_size: int = 64
) -> tuple[np.ndarray, int]:
    """Stored vectors for ``keys`` (all present, ``images`` aligned with them), and how many were recomputed:
    a vector that fails its checksum is computed again rather than returned."""
    vectors, corrupt = store.read(keys)
    if not corrupt:
        return vectors, 0
    recomputed, _ = compute_missing(images, keys, network, store, batch_size=batch_size, num_workers=0)
    vectors, _ = store.read(keys)
    return vectors, recomputed


def extract(
    images: Sequence[ImageInput],
    network: FrozenNetwork,
    store: Store | None = None,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = False,
) -> Extraction:
    """Features for ``images`` in input order, computing only what ``store`` lacks (default: in memory).

    Failed inputs get NaN rows and an :class:`ImageError` each (inputs sharing a failed content all fail).
    """
    store = store if store is not None else MemoryNamespace(network.fingerprint)
    filled = fill_store(images, network, store, batch_size=batch_size, num_workers=num_workers, progress=progress)
    features = np.full((len(images), network.n_features), np.nan, dtype=np.float32)
    good = filled.good()
    recomputed = 0
    if good:
        features[good], recomputed = read_vectors(
            [images[i] for i in good], [filled.keys[i] for i in good], network, store, batch_size=batch_size
        )
    return Extraction(features, filled.errors, n_cached=filled.n_cached, n_computed=filled.n_computed + recomputed)


ON_ERROR = ("raise", "nan")


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
) -> np.ndarray:
    """Feature vectors of a sequence of images: an (n_images, n_features) float32 array, input order.

    ``on_error='raise'`` raises the first failure (it names the input's index, path and reason);
    ``on_error='nan'`` returns NaN rows for failed inputs. With ``cache_dir``, vectors are read from and
    written to the on-disk cache shared with ``featx extract``. ``compile='auto'`` runs ``torch.compile``
    when at least ``COMPILE_MIN_IMAGES`` images need computing.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}; use one of {ON_ERROR}")
    images = as_image_list(images)
    network = FrozenNetwork(backbone, weights, layer, pooling, device, precision, compile)
    result = extract(images, network, open_store(network, cache_dir), batch_size=batch_size, num_workers=num_workers, progress=progress)
    if result.errors and on_error == "raise":
        raise result.errors[0]
    return result.features
