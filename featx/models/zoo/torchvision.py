"""torchvision's ImageNet classifiers, every one by its own name (``list_models(module=torchvision.models)``).

The vector is the input of the final classifier (the pre-logits), found by tracing the model; the four
VGGs keep their last max-pool (512x7x7, the vector the first featx users cached) and the ResNets their
global average pool. Weights download through torchvision's own cache (``$TORCH_HOME/hub/checkpoints``)
and load through torchvision's own builder (DenseNet's renamed keys included); offline, a missing file
fails at once with a message that says where to put it. The architecture is the one torchvision's builder
makes for the weights (:func:`builder_args`).
"""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featx.errors import WeightsUnavailableError
from featx.models._registry import (
    Backbone,
    ChannelsFirst,
    Family,
    meta_skeleton,
    register_backbone,
    register_family,
    torchvision_fx_extractor,
)
from featx.models.preprocessing import Preprocessing
from featx.models.weights import PretrainedWeights, StateDict


def builder_args(name: str, enum_member: Any) -> dict[str, Any]:
    """The arguments torchvision's builder sets from ``enum_member`` when it is given the weights, where
    they differ from its ``weights=None`` defaults: Google's Inception ports normalise their input their
    own way (``transform_input``), ViTs and MaxViT take the weights' input size. featx builds with
    ``weights=None`` and loads afterwards, so it passes them itself (the audit in tests/test_peers.py
    checks every builder and weights enum against torchvision's own)."""
    if name in ("inception_v3", "googlenet"):  # GoogLeNet drops its auxiliary heads after loading
        return {"transform_input": True, "aux_logits": name == "inception_v3", "init_weights": False}
    size = enum_member.meta["min_size"]
    if name.startswith("vit_") and size[0] != 224:
        return {"image_size": size[0]}
    if name.startswith("maxvit_") and tuple(size) != (224, 224):
        return {"input_size": tuple(size)}
    return {}


def torchvision_weights(enum_member: Any, name: str) -> PretrainedWeights:
    """Wrap a torchvision weights enum member so it downloads through torchvision's own cache and loads
    through its builder (``get_model(name, weights=member)``), which knows each file's quirks."""
    url: str = enum_member.url
    file_name = url.rsplit("/", 1)[-1]

    def load() -> StateDict:
        import torchvision.models as tvm

        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        try:
            return tvm.get_model(name, weights=enum_member).state_dict()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            if checkpoint.exists():
                raise
            raise WeightsUnavailableError(
                f"Could not download {enum_member} from {url} ({error}). On an offline machine, copy the file "
                f"{file_name} into {checkpoint.parent}/ (set TORCH_HOME to move that folder), or pass "
                f"weights='/path/to/{file_name}', or weights=None for random init."
            ) from error

    return PretrainedWeights(
        name=enum_member.name,
        digest=file_name.rsplit(".", 1)[0],
        preprocessing=Preprocessing.from_torchvision(enum_member.transforms()),
        load=load,
        source=url,
        build_args=builder_args(name, enum_member),
    )


def _entry(name: str, node: str, description: str, stages: tuple[str, ...], **fields: Any) -> Backbone:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    weights = {member.name: torchvision_weights(member, name) for member in enum}
    default = enum.DEFAULT.name
    return Backbone(
        name=name,
        build=functools.partial(tvm.get_model, name, weights=None),
        build_args=builder_args(name, enum.DEFAULT),
        node=node,
        preprocessing=weights[default].preprocessing,
        weights=weights,
        default_weights=default,
        description=description,
        stages=stages,
        family="torchvision",
        **{"pooling": "flatten", **fields},
    )


def pre_logits_node(model: nn.Module) -> str:
    """The graph node whose output enters the model's last classifier layer (Linear, or SqueezeNet's 1x1
    convolution), named as ``layer=`` names it."""
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer()
    graph = tracer.trace(model)
    classifiers = [
        node
        for node in graph.nodes
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), (nn.Linear, nn.Conv2d))
    ]
    return tracer.node_to_qualname[classifiers[-1].args[0]]


def _channels_first_extractor(model: nn.Module, node: str) -> nn.Module:
    return ChannelsFirst(torchvision_fx_extractor(model, node))


def _resolve(name: str) -> Backbone:
    import torchvision.models as tvm

    default = tvm.get_model_weights(name).DEFAULT
    skeleton = meta_skeleton(
        functools.partial(tvm.get_model, name, weights=None, **builder_args(name, default))
    )
    node = pre_logits_node(skeleton)
    with torch.device("meta"):
        crop = default.transforms().crop_size[0]
        output = torchvision_fx_extractor(skeleton, node)(torch.empty(1, 3, crop, crop))["features"]
    transformer = name.startswith("vit_")  # (B, 1 + patches, C) blocks; Swin's stages are NHWC maps
    return _entry(
        name,
        node,
        "torchvision: input of the final classifier",
        (),
        pooling="flatten" if output.ndim == 2 else "avg",
        layer_pooling="cls" if transformer else "avg",
        prefix_tokens=1 if transformer else 0,
        **({"create_extractor": _channels_first_extractor} if name.startswith("swin") else {}),
    )


def _names(pretrained: bool) -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)  # each has ImageNet weights


def _owns(name: str) -> bool:
    import torchvision.models as tvm

    return name in tvm.list_models(module=tvm)


# Each VGG's max-pool nodes, the last one first: it is the default node, the others are its stages.
_VGG_POOLS = {
    "vgg16": ("features.30", "features.4", "features.9", "features.16", "features.23"),
    "vgg16_bn": ("features.43", "features.6", "features.13", "features.23", "features.33"),
    "vgg19": ("features.36", "features.4", "features.9", "features.18", "features.27"),
    "vgg19_bn": ("features.52", "features.6", "features.13", "features.26", "features.39"),
}

for _name, (_node, *_stages) in _VGG_POOLS.items():
    register_backbone(_entry(_name, _node, "VGG: last max-pool, 512x7x7", tuple(_stages)))
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(_entry(_name, "avgpool", "ResNet: global average pool", ("layer1", "layer2", "layer3")))


def _default_weights(name: str) -> str:
    import torchvision.models as tvm

    return tvm.get_model_weights(name).DEFAULT.name


register_family(
    Family("torchvision", owns=_owns, resolve=_resolve, names=_names, default_weights=_default_weights)
)
