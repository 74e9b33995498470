"""What picks a frozen network, declared once: :class:`NetworkSpec`'s fields carry their vocabulary or
range (:mod:`featx.options`) and the words the command line shows for them.

Every door builds one spec and so validates alike: ``PretrainedFeatures`` and ``extract_features`` from
their flat parameters (:meth:`NetworkSpec.from_params`), the batch job and the report from keywords, the
command line from the arguments it derives from these same fields (:mod:`featx.cli._network`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from featx.models._registry import get_backbone
from featx.options import (
    COMPILES,
    COSINE,
    DECODINGS,
    DEVICES,
    MIN_COSINE,
    POOLINGS,
    PRECISIONS,
    check_fields,
    chosen_fields,
    declared,
)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything that picks a frozen network, as one value (like timm's ``PretrainedCfg``).

    The transformer, the command line, the engines' worker processes and the fingerprint all start from
    it. ``device`` and ``precision`` may be "auto" here; [`build_network`][featx.build_network] resolves
    them where the network runs. Parameters are those of [`PretrainedFeatures`][featx.PretrainedFeatures].
    """

    backbone: Any = declared("resnet50", "a name from `featx backbones`")
    _: dataclasses.KW_ONLY
    weights: Any = declared(
        "DEFAULT", "DEFAULT, a weights name, a local file, or none (random init)", metavar="W"
    )
    layer: str | None = declared(None, "graph node to read (default: the last pooling layer)", metavar="NODE")
    pooling: str | None = declared(
        None, "how a map or tokens become a vector (default: the backbone's own)", POOLINGS
    )
    device: str = declared("auto", "auto, cpu, cuda, cuda:1, mps", DEVICES)
    precision: str = declared(
        "auto", "auto: measured here (see featx tune); int8: CPU only, checked against fp32", PRECISIONS
    )
    compile: bool | str = declared(
        "auto",
        "torch.compile the network (auto: when >= 10000 images need computing)",
        COMPILES,
        words={"auto": "auto", "on": True, "off": False},
    )
    decoding: str = declared(
        "auto",
        "reduced: big JPEGs decoded on the CPU at a reduced DCT scale (never below the resize); full: every "
        "pixel; device: JPEGs decoded on the network's device (nvJPEG on a GPU); dali: NVIDIA DALI on the GPU "
        "(featx[dali]); auto: measured on a GPU, reduced elsewhere",
        DECODINGS,
    )
    min_cosine: float = declared(
        MIN_COSINE, f"fidelity to fp32 that auto and int8 must keep (default {MIN_COSINE})", COSINE
    )
    calibration: str | None = declared(
        None,
        "int8: calibrate and check fidelity on these images (a folder, manifest, shards or table; default: "
        "bundled real photos)",
        metavar="SOURCE",
    )

    def __post_init__(self) -> None:
        check_fields(NetworkSpec, vars(self), "NetworkSpec")
        get_backbone(self.backbone)  # an unknown name is refused here, naming the closest ones
        object.__setattr__(self, "device", str(self.device))

    @classmethod
    def from_params(cls, params: Mapping[str, Any], owner: str) -> NetworkSpec:
        """The spec of a door's flat parameters (an estimator's ``get_params()``): its own fields are taken
        from ``params`` and checked in the name of ``owner``; other parameters are the door's business."""
        return cls(**chosen_fields(cls, params, owner))

    def replace(self, **changes: Any) -> NetworkSpec:
        return dataclasses.replace(self, **changes)


def field_names() -> tuple[str, ...]:
    """The spec's fields, in declaration order: what every door that builds a network accepts."""
    return tuple(field.name for field in dataclasses.fields(NetworkSpec))
