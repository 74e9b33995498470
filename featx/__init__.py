"""featx: transfer learning by feature extraction with frozen pretrained CNNs."""

from featx import zoo  # noqa: F401  (registers the bundled backbones)
from featx.cache import FeatureCache
from featx.errors import (
    FeatxError,
    ImageError,
    OutputError,
    ParameterError,
    WeightsUnavailableError,
)
from featx.extract import extract_features
from featx.feature_files import load_features
from featx.network import FrozenNetwork, NetworkSpec, feature_size, list_nodes
from featx.pixels import RawPixels
from featx.preprocessing import Preprocessing
from featx.probe import LinearProbe
from featx.registry import Backbone, get_backbone, list_backbones, register_backbone
from featx.transformer import PretrainedFeatures
from featx.weights import PretrainedWeights

__all__ = [
    "Backbone",
    "FeatureCache",
    "FeatxError",
    "FrozenNetwork",
    "ImageError",
    "NetworkSpec",
    "OutputError",
    "ParameterError",
    "LinearProbe",
    "Preprocessing",
    "PretrainedFeatures",
    "PretrainedWeights",
    "RawPixels",
    "WeightsUnavailableError",
    "extract_features",
    "feature_size",
    "get_backbone",
    "list_backbones",
    "list_nodes",
    "load_features",
    "register_backbone",
]

__version__ = "0.1.0"
