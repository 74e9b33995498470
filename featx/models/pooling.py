"""One vector per image from a node's output: the reductions ``pooling=`` names, written once for the
frozen network, fine-tuning and the meta-device size computation.

Convolutional outputs are ``(B, C, H, W)``; transformer outputs are ``(B, tokens, C)`` whose first
``prefix_tokens`` tokens are the class (and register) tokens, as timm's ``num_prefix_tokens`` counts them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from featx.errors import ParameterError
from featx.options import POOLINGS, check

if TYPE_CHECKING:
    from featx.models._registry import Backbone

__all__ = ["Pool", "pool", "resolve_pooling"]

_TOKEN_POOLINGS = ("cls", "tokens_avg")


def resolve_pooling(
    backbone: Backbone, layer: str | None, pooling: str | None, shape: tuple[int, ...] | None = None
) -> str:
    """The backbone's own pooling for its default node; its ``layer_pooling`` for any other node.

    A blank ``layer`` is refused (it would mean the default node here and another node's rule there).
    Given the node's output ``shape`` (per image): a token rule the user did not choose is refused for a
    node without tokens, saying so instead of naming a ``pooling=`` the user never passed; and a pooling
    asked for that would change nothing, or would mean something else than its name, is refused: every
    pooling names its own cache namespace, so a no-op would cache the same vectors twice, and 'cls'
    without a class token is a patch token.
    """
    if layer is not None and (not isinstance(layer, str) or not layer.strip()):
        raise ParameterError(
            f"layer={layer!r} is not a node name; leave layer out (None) for {backbone.name}'s default "
            f"node {backbone.node!r}, or name one of featx.list_nodes({backbone.name!r})"
        )
    default = backbone.pooling if layer in (None, backbone.node) else backbone.layer_pooling
    if pooling is None:
        if shape is not None and default in _TOKEN_POOLINGS and len(shape) != 2:
            raise ParameterError(
                f"layer={layer!r} of {backbone.name} gives {shape} per image, not tokens, which "
                f"{backbone.name}'s rule for its layers ({default!r}) needs; pass pooling='avg', 'max' or "
                "'flatten' for this layer"
            )
        return default
    check("pooling", pooling, POOLINGS)
    if shape is None or pooling == default or (default in _TOKEN_POOLINGS and len(shape) != 2):
        return pooling  # the user's choice where the layer's own rule does not apply (no tokens there)
    node = layer or backbone.node
    if pooling == "cls" and len(shape) == 2 and backbone.prefix_tokens == 0:
        raise ParameterError(
            f"pooling='cls' needs a class token, and {backbone.name} has none (its first token at "
            f"{node!r} is a patch token); use 'tokens_avg' or 'avg'"
        )
    positions = shape[0] if len(shape) == 2 else math.prod(shape[1:]) if len(shape) == 3 else 1
    if len(shape) == 1 or positions == 1:
        raise ParameterError(
            f"pooling={pooling!r} changes nothing at {backbone.name}'s node {node!r}: the network already "
            f"pooled it to one vector of {math.prod(shape)} per image; leave pooling=None, or pool an "
            "earlier node (layer=)"
        )
    return pooling


def pool(features: torch.Tensor, pooling: str, prefix_tokens: int = 0) -> torch.Tensor:
    """Reduce (B, C, H, W) or (B, tokens, C) to (B, d).

    'flatten' keeps everything; 'avg' / 'max' reduce the spatial positions (or all tokens); 'cls' takes
    the first token; 'tokens_avg' averages the tokens after the ``prefix_tokens`` class/register tokens.
    """
    if pooling in _TOKEN_POOLINGS and features.ndim != 3:
        raise ParameterError(
            f"pooling={pooling!r} needs a token output (batch, tokens, channels), but this node gives "
            f"{tuple(features.shape[1:])} per image; use 'avg', 'max' or 'flatten'"
        )
    if features.ndim <= 2 or pooling == "flatten":
        return features.flatten(1)
    if pooling == "cls":
        if prefix_tokens == 0:
            raise ParameterError("pooling='cls' needs a class token; this network has none (prefix_tokens=0)")
        return features[:, 0]
    if pooling == "tokens_avg":
        return features[:, prefix_tokens:].mean(1)
    spatial = tuple(range(2, features.ndim)) if features.ndim == 4 else (1,)
    return features.mean(spatial) if pooling == "avg" else features.amax(spatial)


class Pool(nn.Module):
    """:func:`pool` as a module, so the reduction is part of the graph that is compiled or quantized."""

    def __init__(self, pooling: str, prefix_tokens: int = 0):
        super().__init__()
        self.pooling, self.prefix_tokens = pooling, prefix_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return pool(features, self.pooling, self.prefix_tokens)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, prefix_tokens={self.prefix_tokens}"
