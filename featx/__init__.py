"""featx: transfer learning by feature extraction with frozen pretrained CNNs."""

from featx.cache import FeatureCache
from featx.errors import (
    FeatxError,
    ImageError,
    OutputError,
    ParameterError,
    WeightsUnavailableError,
)
from featx.estimators.adapt import CORAL
from featx.estimators.finetune import FineTunedClassifier
from featx.estimators.pixels import RawPixels
from featx.estimators.probe import LinearProbe
from featx.estimators.transformer import PretrainedFeatures
from featx.extract import extract_features
from featx.feature_files import load_features
from featx.job import JobSummary, run_job
from featx.models import zoo  # noqa: F401  (registers the bundled backbones)
from featx.models._registry import Backbone, get_backbone, list_backbones, register_backbone
from featx.models.network import FrozenNetwork, NetworkSpec, feature_size, list_nodes
from featx.models.preprocessing import Preprocessing
from featx.models.weights import PretrainedWeights

__all__ = [
    "Backbone",
    "CORAL",
    "FineTunedClassifier",
    "JobSummary",
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
    "run_job",
]

__version__ = "0.1.0"
