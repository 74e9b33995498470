"""``PretrainedFeatures``: a frozen ImageNet network as a scikit-learn transformer, and
``extract_features``, the same in one call."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from featx.cache import open_store
from featx.engines.base import RunOptions
from featx.errors import ImageError, ParameterError
from featx.estimators._pickling import PicklesLight
from featx.extract import extract
from featx.inputs.batches import as_image_list
from featx.inputs.images import MAX_PIXELS
from featx.models._registry import Backbone, get_backbone
from featx.models.build import build_network
from featx.models.network import FrozenNetwork
from featx.models.nodes import feature_size
from featx.models.spec import NetworkSpec
from featx.options import MIN_COSINE, ON_ERROR, validate


class PretrainedFeatures(PicklesLight, TransformerMixin, BaseEstimator):
    """Turn images into the activations of a frozen pretrained network at one node.

    ``fit`` learns nothing (the network is pretrained); ``transform`` returns an (n_images, n_features)
    float32 array. The network loads lazily on the first ``transform`` and is never pickled: a pickled
    estimator reloads it; clones share it (a grid search loads it once per network candidate). With ``cache_dir`` every vector is stored by image content, so repeated
    transforms (cross-validation folds, grid-search candidates, a notebook re-run) compute nothing twice.

    Parameters
    ----------
    backbone : str or Backbone, default="resnet50"
        A name from [`featx.list_backbones`][featx.list_backbones] or a [`featx.Backbone`][featx.Backbone].
    weights : str, path or None, default="DEFAULT"
        "DEFAULT", a weights name ("IMAGENET1K_V2"), a local state-dict file, or None for random init.
    layer : str or None, default=None
        The node to read (see [`featx.list_nodes`][featx.list_nodes]); None is the backbone's last pooling layer.
    pooling : str or None, default=None
        How the node's output becomes one vector: "flatten", "avg" or "max"; for a vision transformer's
        tokens also "cls" (the class token) or "tokens_avg" (the mean of the patch tokens). None keeps the
        backbone's choice for its default node; at another node, "avg" for a feature map and the model's
        own rule ("cls" or "tokens_avg") for tokens.
    batch_size : int, default=64
        Images decoded and handed to the network together, and per forward pass unless ``forward_batch``.
    device : str, default="auto"
        "auto" (cuda, then mps, then cpu), or any torch device string.
    precision : {"auto", "fp32", "bf16", "fp16", "int8"}, default="auto"
        "auto" picks, by a timed trial on this machine remembered on disk, the fastest precision whose
        features keep cosine >= ``min_cosine`` to fp32 (the manual's "Devices, precision and speed"). "int8"
        (CPU only) quantizes the
        network and falls back, with a warning, when its fidelity on held-out photos is under the bound.
    cache_dir : path or None, default=None
        On-disk feature cache shared with ``featx extract --cache``.
    num_workers : int or None, default=None
        DataLoader decoding processes; None picks from the job size and core count.
    on_error : {"raise", "nan"}, default="raise"
        A bad image raises (naming it), or yields a NaN row with a warning; failures of the last
        ``transform`` are kept in ``errors_``. Rows are never dropped, so ``y`` stays aligned.
    progress : bool, default=False
        Show a progress bar.
    compile : {"auto", True, False}, default="auto"
        ``torch.compile`` the network; "auto" does when a transform computes at least 10,000 images, where
        the one-off compile pays back (features equal within float rounding).
    max_pixels : int, default=featx.inputs.images.MAX_PIXELS (about 89 million)
        An image with more pixels, as decoded or once its short side is resized, fails (kind
        ``decompression_bomb`` or ``too_large``) before anything that size is allocated.
    decoding : {"auto", "reduced", "full", "device", "dali"}, default="auto"
        "reduced" decodes a JPEG at least twice the size the resize needs at a reduced DCT scale (never
        below that size; about 3x faster on phone photos, cosine >= 0.99 to full decoding); "full" decodes
        every pixel; "device" decodes JPEGs on the network's device (nvJPEG on a GPU), other images on
        the CPU; "dali" decodes, resizes and crops JPEGs with NVIDIA DALI on the GPU (the ``featx[dali]``
        extra); "auto" times the GPU decoders against the CPU ones on a GPU (remembered in the tuning
        file) and is "reduced" elsewhere. Modes never share cache entries (the mode is in the fingerprint).
    min_cosine : float, default=0.99
        The fidelity to fp32 features that ``precision="auto"`` and ``"int8"`` must keep.
    calibration : str or None, default=None
        For int8: a folder, manifest, shard set or table of images like yours; up to 32 of them, evenly
        spread, are split into a half that calibrates and a half on which fidelity is checked. None uses
        bundled real photos. Its digest is in the fingerprint; the calibration is kept on disk.
    forward_batch : int or None, default=None
        Images per forward pass where that differs from ``batch_size`` (a GPU runs 256 at once better
        than 64; the decoders still hand over ``batch_size``). The vectors are the same.

    Attributes
    ----------
    n_features_out_ : int
        Length of each feature vector.
    errors_ : list of ImageError
        Failures of the most recent ``transform`` (empty when all images were read).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> clf = make_pipeline(PretrainedFeatures("efficientnet_lite0"), LogisticRegression(max_iter=2000))
    >>> clf.fit(train_paths, y_train).score(test_paths, y_test)  # doctest: +SKIP
    """

    # its own parameters; the network's are NetworkSpec's, how it runs RunOptions', each declared there
    _parameter_constraints = {"on_error": ON_ERROR}

    # the network reloads after unpickling (weights are never pickled), into a slot of its own
    _TRANSIENT = ("_loaded", "_shared")

    def __init__(
        self,
        backbone: str | Backbone = "resnet50",
        *,
        weights: Any = "DEFAULT",
        layer: str | None = None,
        pooling: str | None = None,
        batch_size: int = 64,
        device: str = "auto",
        precision: str = "auto",
        cache_dir: Any = None,
        num_workers: int | None = None,
        on_error: str = "raise",
        progress: bool = False,
        compile: bool | str = "auto",
        max_pixels: int = MAX_PIXELS,
        decoding: str = "auto",
        min_cosine: float = MIN_COSINE,
        calibration: str | None = None,
        forward_batch: int | None = None,
    ):
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.cache_dir = cache_dir
        self.num_workers = num_workers
        self.on_error = on_error
        self.progress = progress
        self.compile = compile
        self.max_pixels = max_pixels
        self.decoding = decoding
        self.min_cosine = min_cosine
        self.calibration = calibration
        self.forward_batch = forward_batch

    def fit(self, X: Any, y: Any = None) -> PretrainedFeatures:
        """Validate the parameters and the input; nothing is learned from X."""
        self._validate()
        as_image_list(X)
        self.n_features_out_ = feature_size(self.backbone, self.layer, self.pooling)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Feature vectors of the images in X, one row per image, in order."""
        check_is_fitted(self, "n_features_out_")
        images = as_image_list(X)
        network = self._network()
        options = RunOptions.from_params(self.get_params(deep=False), type(self).__name__)
        result = extract(images, network, open_store(network.fingerprint, self.cache_dir), options)
        self.errors_: list[ImageError] = result.errors
        if result.errors:
            if self.on_error == "raise":
                raise result.errors[0]
            warnings.warn(
                f"{len(result.errors)} of {len(images)} images failed and are NaN rows "
                f"(first: {result.errors[0]}); see errors_ for all",
                stacklevel=2,
            )
        return result.features

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names like ``resnet50_avgpool_0``: backbone, node, (pooling if reduced), index; any character
        that is not a letter, digit or underscore (``timm/vit.tag``) becomes ``_``."""
        check_is_fitted(self, "n_features_out_")
        spec = get_backbone(self.backbone)
        node = self.layer or spec.node
        pooling = self.pooling if self.pooling not in (None, "flatten") and node != spec.node else None
        prefix = re.sub(r"\W", "_", "_".join(part for part in (spec.name, node, pooling) if part))
        return np.asarray([f"{prefix}_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_clone__(self) -> PretrainedFeatures:
        """scikit-learn's clone, sharing one network slot with this transformer: a grid search clones it
        for every fold and candidate (candidate by candidate), and each clone would load the same frozen
        weights again (about a second for a ResNet, more for large models, even when every vector is
        cached). The slot holds the last network any of them loaded, so memory holds one network."""
        copy = super().__sklearn_clone__()
        copy._shared = self.__dict__.setdefault("_shared", _NetworkSlot())
        return copy

    def _network(self) -> FrozenNetwork:
        """The loaded network, built on first use and kept (not pickled) for later calls; taken from the
        slot shared with the transformers this one was cloned from or with, when it is the same network."""
        spec = NetworkSpec.from_params(self.get_params(deep=False), type(self).__name__)
        cached = getattr(self, "_loaded", None)
        if cached is None or cached.spec != spec:
            slot = self.__dict__.setdefault("_shared", _NetworkSlot())
            if slot.network is None or slot.network.spec != spec:
                slot.network = build_network(spec)
            self._loaded = slot.network
        return self._loaded

    def _validate(self, owner: str | None = None) -> None:
        """Every parameter, checked in the name of ``owner`` (this estimator's): its own, the network's and
        how it runs."""
        params, owner = self.get_params(deep=False), owner or type(self).__name__
        validate(owner, params, self._parameter_constraints)
        NetworkSpec.from_params(params, owner)
        RunOptions.from_params(params, owner)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a sequence of images, not a feature matrix
        tags.requires_fit = True
        tags.non_deterministic = False
        return tags


class _NetworkSlot:
    """The network last loaded by a transformer or any of its clones (shared by reference, never pickled)."""

    network: FrozenNetwork | None = None


def extract_features(images: Any, backbone: str | Backbone = "resnet50", **params: Any) -> np.ndarray:
    """Feature vectors of a sequence of images: an (n_images, n_features) float32 array, input order.

    ``PretrainedFeatures(backbone, **params).fit_transform(images)`` in one call: ``params`` are the
    transformer's, checked the same way. ``on_error="raise"`` (the default) raises the first failure,
    naming the input's index, path and reason; ``on_error="nan"`` returns NaN rows for failed inputs.
    With ``cache_dir``, vectors are read from and written to the on-disk cache shared with
    ``featx extract``.
    """
    transformer = checked_transformer("extract_features", {"backbone": backbone, **params})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\d+ of \d+ images failed and are NaN rows")
        return transformer.fit_transform(images)


def checked_transformer(owner: str, params: Mapping[str, Any]) -> PretrainedFeatures:
    """The transformer of ``params`` for a door that takes its parameters (``owner``): an unknown name or a
    value not accepted is refused in the door's name, before any image is read."""
    names = PretrainedFeatures._get_param_names()
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise ParameterError(
            f"{owner} got {', '.join(map(repr, unknown))}: it takes the parameters of PretrainedFeatures "
            f"({', '.join(names)})"
        )
    transformer = PretrainedFeatures(**params)
    transformer._validate(owner)
    return transformer
