"""featx: transfer learning by feature extraction with frozen pretrained CNNs."""

from featx.backbones import Backbone, get_backbone, list_backbones, register_backbone
from featx.cache import FeatureCache
from featx.extract import FrozenNetwork, extract_features, feature_size, list_nodes
from featx.feature_files import load_features
from featx.images import ImageError
from featx.pixels import RawPixels
from featx.preprocessing import Preprocessing
from featx.transformer import PretrainedFeatures
from featx.weights import PretrainedWeights, WeightsUnavailableError

__all__ = [
    "Backbone",
    "FeatureCache",
    "FrozenNetwork",
    "ImageError",
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
