# featx's public names: read by type checkers, and by lazy_loader to load each one on first use.
# The packages by role load on first use too, so `import featx; featx.evaluate.compare_classifiers` works.
from . import cache, cli, engines, estimators, evaluate, inputs, models
from .cache import FeatureCache
from .errors import FeatxError, ImageError, OutputError, ParameterError, WeightsUnavailableError
from .estimators.adapt import CORAL
from .estimators.finetune import FineTunedClassifier
from .estimators.pixels import RawPixels
from .estimators.probe import LinearProbe
from .estimators.transformer import PretrainedFeatures, extract_features
from .feature_files import load_features
from .job import JobSummary, run_job
from .models._registry import Backbone, get_backbone, list_backbones, register_backbone
from .models.build import build_network
from .models.network import FrozenNetwork, Network
from .models.nodes import feature_size, list_nodes
from .models.preprocessing import Preprocessing
from .models.spec import NetworkSpec
from .models.weights import PretrainedWeights

__version__: str

__all__ = [
    "cache",
    "cli",
    "engines",
    "estimators",
    "evaluate",
    "inputs",
    "models",
    "Backbone",
    "CORAL",
    "FeatureCache",
    "FeatxError",
    "FineTunedClassifier",
    "FrozenNetwork",
    "ImageError",
    "JobSummary",
    "LinearProbe",
    "Network",
    "NetworkSpec",
    "OutputError",
    "ParameterError",
    "Preprocessing",
    "PretrainedFeatures",
    "PretrainedWeights",
    "RawPixels",
    "WeightsUnavailableError",
    "build_network",
    "extract_features",
    "feature_size",
    "get_backbone",
    "list_backbones",
    "list_nodes",
    "load_features",
    "register_backbone",
    "run_job",
]
