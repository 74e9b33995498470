"""The backbone registry: one [`Backbone`][featx.Backbone] entry per network, as data, and nothing else.

Like torchvision's ``models/_api.py``, the mechanism knows no model: each family registers its entries
from its own file under :mod:`featx.models.zoo`, and users add theirs with :func:`register_backbone`.
A whole zoo (torchvision's 80 classifiers, timm's 1,800 tags) registers as a :class:`Family` instead: it
lists its names and builds an entry only when one is asked for, so importing featx builds none of them.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from featx.errors import ParameterError
from featx.models.checkpoints import load_trunk, trunk_keys
from featx.models.memory import fitting_in_memory
from featx.models.preprocessing import Preprocessing
from featx.models.weights import RANDOM_INIT_SEED, PretrainedWeights, StateDict
from featx.options import POOLINGS, check

ExtractorFactory = Callable[[nn.Module, str], nn.Module]

__all__ = [
    "Backbone",
    "Family",
    "listing",
    "get_backbone",
    "list_backbones",
    "register_backbone",
    "register_family",
]


def torchvision_fx_extractor(model: nn.Module, node: str) -> nn.Module:
    """Truncate ``model`` at ``node`` with torchvision's FX feature extraction (output: the node's tensor)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    return create_feature_extractor(model, return_nodes={node: "features"})


class ChannelsFirst(nn.Module):
    """An extractor whose 4-D outputs are NHWC (Swin's stages) turned to NCHW, the layout pooling expects."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.extractor(x)["features"]
        return {"features": features.permute(0, 3, 1, 2) if features.ndim == 4 else features}


def graph_node_names(model: nn.Module) -> list[str]:
    """The node names that ``layer=`` accepts for this model (torchvision's eval-mode graph names)."""
    from torchvision.models.feature_extraction import get_graph_node_names

    return get_graph_node_names(model)[1]


@dataclass(frozen=True, eq=False)  # identity hash: entries are registry singletons
class Backbone:
    """Everything featx needs to know about one network.

    Parameters
    ----------
    name : str
        The registry key, also the prefix of feature names.
    build : callable
        Returns the architecture with random weights; takes ``build_args`` as keywords.
    build_args : mapping of str to value
        The builder's arguments for the architecture the default weights were trained in (torchvision's
        builders set some from the weights they get: ``transform_input``, ``image_size``); named weights
        may give their own.
    node : str
        The default feature node (the last pooling layer), a graph node name.
    pooling : str, default="flatten"
        The reduction of the default node's output: "flatten", "avg" or "max"; for tokens "cls" or
        "tokens_avg".
    preprocessing : Preprocessing
        The input transform used when no named weights say otherwise (ImageNet's by default).
    weights : mapping of str to PretrainedWeights
        Named pretrained weights.
    default_weights : str or None, default=None
        The name among ``weights`` that "DEFAULT" picks.
    create_extractor : callable
        Truncates a model at a node (torchvision's FX by default; timm models use timm's tracer).
    node_names : callable
        Lists the nodes a user may name with ``layer=``.
    description : str, default=""
        One line for listings.
    stages : tuple of str, default=()
        Earlier nodes worth comparing with ``node`` (early to late), for the transfer report's layer
        sweep: the field's rule is that early layers transfer to distant domains, late ones do not.
    layer_pooling : str, default="avg"
        The reduction of any other node's output ("avg" for feature maps; a vision transformer's own rule,
        "cls" or "tokens_avg", for its blocks' tokens).
    prefix_tokens : int, default=0
        Class and register tokens ahead of the patch tokens ("tokens_avg" skips them).
    family : str, default="custom"
        The zoo the entry came from ("torchvision", "timm", ...), for listings.
    """

    name: str
    build: Callable[..., nn.Module]
    node: str
    pooling: str = "flatten"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights: Mapping[str, PretrainedWeights] = field(default_factory=dict)
    default_weights: str | None = None
    create_extractor: ExtractorFactory = torchvision_fx_extractor
    node_names: Callable[[nn.Module], list[str]] = graph_node_names
    description: str = ""
    stages: tuple[str, ...] = ()
    layer_pooling: str = "avg"
    prefix_tokens: int = 0
    family: str = "custom"
    build_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check("pooling", self.pooling, POOLINGS, f"Backbone {self.name!r}")
        check("layer_pooling", self.layer_pooling, POOLINGS, f"Backbone {self.name!r}")
        if self.default_weights is not None and self.default_weights not in self.weights:
            raise ParameterError(
                f"default_weights={self.default_weights!r} is not among {list(self.weights)}"
            )

    def skeleton(self) -> nn.Module:
        """The architecture on PyTorch's meta device (shapes, no data), in eval mode."""
        return meta_skeleton(functools.partial(self.build, **self.build_args))

    def truncated(
        self,
        state_dict: StateDict | None,
        node: str | None = None,
        build_args: Mapping[str, Any] | None = None,
    ) -> nn.Module:
        """The network with ``state_dict`` loaded (None: seeded random init), cut at ``node``, in eval mode.

        The one place a network is built: the frozen extractor and fine-tuning both start here, so
        ``weights=None`` means the same network for both, and a model too large for memory is one line.
        Only the trunk (what the default node uses) of ``state_dict`` must fit (`featx.models.checkpoints`);
        ``build_args`` default to the entry's.
        """
        with fitting_in_memory(self.name, self.skeleton):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_INIT_SEED)
                model = self.build(**(self.build_args if build_args is None else build_args)).eval()
            node = node or self.node
            if state_dict is None:
                return self.create_extractor(model, node).eval()
            everything = dict(model.state_dict(keep_vars=True))  # before an extractor drops the classifier
            default = self.create_extractor(model, self.node)
            load_trunk(model, everything, trunk_keys(everything, default), state_dict, self.name)
            return (default if node == self.node else self.create_extractor(model, node)).eval()


@dataclass(frozen=True)
class Family:
    """A zoo resolved lazily: ``names(pretrained)`` lists its names and ``default_weights(name)`` says
    what 'DEFAULT' loads (both cheaply: no model is built); ``resolve(name)`` builds the
    [`Backbone`][featx.Backbone] for a name that ``owns(name)`` claims."""

    name: str
    owns: Callable[[str], bool]
    resolve: Callable[[str], Backbone]
    names: Callable[[bool], Iterable[str]]
    default_weights: Callable[[str], str | None]


def meta_skeleton(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device. Models whose constructors compute with tensor values (torchvision's
    RegNets) compute them on the CPU while their parameters and buffers go to the meta device as they are
    registered (a 644M-parameter RegNet: seconds instead of a minute); failing that, built on the CPU."""
    try:
        with torch.device("meta"):
            return build().eval()
    except (NotImplementedError, RuntimeError):
        pass
    try:
        with _registered_on_meta():
            return build().eval()
    except (NotImplementedError, RuntimeError):
        return build().to("meta").eval()


@contextlib.contextmanager
def _registered_on_meta() -> Iterator[None]:
    """Every parameter and buffer a module registers moves to the meta device (what accelerate's
    ``init_empty_weights`` does), so initialisers run on shapes only."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


_REGISTRY: dict[str, Backbone] = {}
_FAMILIES: dict[str, Family] = {}
_RESOLVED: dict[str, Backbone] = {}  # family entries, built once per process
_BUNDLED: dict[str, Backbone] = {}  # what featx registers on import, so in every process
_ADOPTED: set[str] = set()  # names registered from an unpickled estimator: the user's own registration wins


def register_backbone(backbone: Backbone, *, overwrite: bool = False) -> Backbone:
    """Add a backbone to the registry so ``PretrainedFeatures(backbone=name)`` and the CLI find it."""
    if backbone.name in _REGISTRY and not overwrite and backbone.name not in _ADOPTED:
        raise ParameterError(f"a backbone named {backbone.name!r} is already registered; pass overwrite=True")
    _REGISTRY[backbone.name] = backbone
    _ADOPTED.discard(backbone.name)
    return backbone


def mark_bundled() -> None:
    """What is registered so far is featx's own (called once the bundled zoo is imported)."""
    _BUNDLED.update(_REGISTRY)


def registered_here(backbone: object) -> Backbone | None:
    """The entry behind ``backbone`` if it is a name whose entry a fresh process would not have (one the
    user registered, or registered over a bundled one, in this process), so that it can travel with a
    pickled estimator to joblib's workers."""
    if not isinstance(backbone, str):
        return None
    entry = _REGISTRY.get(backbone)
    return entry if entry is not None and _BUNDLED.get(backbone) is not entry else None


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def adopt(backbone: Backbone) -> None:
    """Register an entry that travelled with an unpickled estimator, unless this process has one by that
    name; a later ``register_backbone`` of the name replaces it without ``overwrite``."""
    if backbone.name not in _REGISTRY:
        _REGISTRY[backbone.name] = backbone
        _ADOPTED.add(backbone.name)


def register_family(family: Family) -> Family:
    """Add a zoo whose names resolve on first use. Single entries registered by name take precedence."""
    _FAMILIES[family.name] = family
    return family


def get_backbone(backbone: str | Backbone) -> Backbone:
    """Look a backbone up by name; a ``Backbone`` passes through, and ``"package.module:attr"`` imports one
    (how the command line and fresh worker processes reach backbones users defined in their own code)."""
    if isinstance(backbone, Backbone):
        return backbone
    if not isinstance(backbone, str):
        raise ParameterError(f"backbone={backbone!r} is neither a name nor a featx.Backbone")
    if backbone in _REGISTRY:
        return _REGISTRY[backbone]
    if backbone in _RESOLVED:
        return _RESOLVED[backbone]
    for family in _FAMILIES.values():
        if family.owns(backbone):
            _RESOLVED[backbone] = family.resolve(backbone)
            return _RESOLVED[backbone]
    if ":" in backbone:
        return _import_backbone(backbone)
    close = difflib.get_close_matches(backbone, list_backbones(), n=3, cutoff=0.5)
    raise ParameterError(
        f"backbone={backbone!r} is not a known backbone"
        + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
        + " featx.list_backbones('pattern*') lists the names; featx.register_backbone adds yours"
    )


def _import_backbone(reference: str) -> Backbone:
    """``"package.module:ATTRIBUTE"`` -> the Backbone it names. Both sides must be Python names (no
    relative module, no path), checked before anything is imported; a module that fails to import is one
    line naming it and its error."""
    module_name, _, attribute = reference.partition(":")
    if not (all(part.isidentifier() for part in module_name.split(".")) and attribute.isidentifier()):
        raise ParameterError(
            f"backbone={reference!r} is neither a known backbone nor a 'module:attribute' reference "
            "(Python names on both sides, the module in full, e.g. 'mypackage.models:MY_BACKBONE')"
        )
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ParameterError(
            f"backbone={reference!r}: cannot import {attribute!r} from {module_name!r} ({error})"
        ) from None
    except Exception as error:  # the module's own code failed: its error, in one line
        raise ParameterError(
            f"backbone={reference!r}: importing {module_name!r} failed ({type(error).__name__}: {error})"
        ) from error
    if not isinstance(found, Backbone):
        raise ParameterError(
            f"backbone={reference!r} is a {type(found).__name__}, not a featx.Backbone; name the Backbone object"
        )
    return found


def list_backbones(pattern: str | None = None, *, pretrained: bool = False) -> list[str]:
    """Names of the registered backbones and of every family's models, sorted.

    ``pattern`` is a shell pattern (``"convnext*"``) matched against the whole name and against the name
    after its family prefix (so it finds ``timm/convnext_tiny.fb_in22k`` too). ``pretrained=True`` keeps
    the names that have pretrained weights. Like ``timm.list_models``, this builds no model.
    """
    return sorted(_owners(pattern, pretrained))


def listing(pattern: str | None = None, *, pretrained: bool = False) -> dict[str, tuple[str, str | None]]:
    """``{name: (family, default weights)}`` for :func:`list_backbones`'s names, without building a model."""
    return {
        name: (owner.name, owner.default_weights(name))
        if isinstance(owner, Family)
        else (owner.family, owner.default_weights)
        for name, owner in _owners(pattern, pretrained).items()
    }


def _owners(pattern: str | None, pretrained: bool) -> dict[str, Family | Backbone]:
    """Each listed name with what answers for it: its registered entry, which shadows a family's name,
    or its family."""
    owners: dict[str, Family | Backbone] = {}
    for family in _FAMILIES.values():
        owners.update(dict.fromkeys(family.names(pretrained), family))
    owners.update({name: entry for name, entry in _REGISTRY.items() if not pretrained or entry.weights})
    return owners if pattern is None else {n: o for n, o in owners.items() if _matches(n, pattern)}


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(name.split("/", 1)[-1], pattern)
