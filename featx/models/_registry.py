"""The backbone registry: one :class:`Backbone` entry per network, as data, and nothing else.

Like torchvision's ``models/_api.py``, the mechanism knows no model: each family registers its entries
from its own file under :mod:`featx.models.zoo`, and users add theirs with :func:`register_backbone`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from featx.errors import ParameterError
from featx.models.preprocessing import Preprocessing
from featx.models.weights import RANDOM_INIT_SEED, PretrainedWeights, StateDict
from featx.options import POOLINGS, check

ExtractorFactory = Callable[[nn.Module, str], nn.Module]

__all__ = ["Backbone", "get_backbone", "list_backbones", "register_backbone"]


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
        check("pooling", self.pooling, POOLINGS, f"Backbone {self.name!r}")
        if self.default_weights is not None and self.default_weights not in self.weights:
            raise ParameterError(
                f"default_weights={self.default_weights!r} is not among {list(self.weights)}"
            )

    def truncated(self, state_dict: StateDict | None, node: str | None = None) -> nn.Module:
        """The network with ``state_dict`` loaded (None: seeded random init), cut at ``node``, in eval mode.

        The one place a network is built: the frozen extractor and fine-tuning both start here, so
        ``weights=None`` means the same network for both.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = self.build()
        if state_dict is not None:
            _load_matching(model, state_dict, self.name)
        return self.create_extractor(model.eval(), node or self.node).eval()


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(backbone: Backbone, *, overwrite: bool = False) -> Backbone:
    """Add a backbone to the registry so ``PretrainedFeatures(backbone=name)`` and the CLI find it."""
    if backbone.name in _REGISTRY and not overwrite:
        raise ParameterError(f"a backbone named {backbone.name!r} is already registered; pass overwrite=True")
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
        raise ParameterError(
            f"backbone={backbone!r} is not registered; choose one of {sorted(_REGISTRY)} "
            "or add yours with featx.register_backbone"
        ) from None


def _import_backbone(reference: str) -> Backbone:
    module_name, _, attribute = reference.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ParameterError(
            f"backbone={reference!r}: cannot import {attribute!r} from {module_name!r} ({error})"
        ) from None
    if not isinstance(found, Backbone):
        raise ParameterError(f"backbone={reference!r} is a {type(found).__name__}, not a featx.Backbone")
    return found


def list_backbones() -> list[str]:
    """Names of all registered backbones."""
    return sorted(_REGISTRY)


def _load_matching(model: nn.Module, state_dict: Mapping[str, torch.Tensor], name: str) -> None:
    """Load ``state_dict``, or say briefly which keys differ: weights of another architecture are the
    usual cause, and torch's own message lists every key."""
    expected, given = model.state_dict(), state_dict
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = [
            f"{len(found)} {what} (e.g. {', '.join(found[:3])})"
            for what, found in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", shapes),
            )
            if found
        ]
        raise ParameterError(
            f"these weights do not fit backbone {name!r}: {'; '.join(parts)} keys. Are they weights of "
            "another architecture? Pass the backbone they were saved from"
        )
    model.load_state_dict(state_dict)
