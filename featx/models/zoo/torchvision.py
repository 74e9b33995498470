"""torchvision's ImageNet classifiers: VGG at its last max-pool, ResNet at its global average pool.

Their weights download through torchvision's own cache (``$TORCH_HOME/hub/checkpoints``); offline, a
missing file fails at once with a message that says where to put it.
"""

from __future__ import annotations

import functools
import urllib.error
from pathlib import Path
from typing import Any

import torch

from featx.errors import WeightsUnavailableError
from featx.models._registry import Backbone, register_backbone
from featx.models.preprocessing import Preprocessing
from featx.models.weights import PretrainedWeights, StateDict


def torchvision_weights(enum_member: Any) -> PretrainedWeights:
    """Wrap a torchvision weights enum member so it downloads through torchvision's own cache."""
    url: str = enum_member.url
    file_name = url.rsplit("/", 1)[-1]

    def load() -> StateDict:
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        try:
            return enum_member.get_state_dict(progress=True, check_hash=True)
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
    )


def _entry(name: str, node: str, description: str, stages: tuple[str, ...]) -> Backbone:
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
    register_backbone(_entry(_name, _node, "VGG: last max-pool, 512x7x7", tuple(_stages)))
for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_backbone(_entry(_name, "avgpool", "ResNet: global average pool", ("layer1", "layer2", "layer3")))
