"""Nodes of a backbone's graph: the names ``layer=`` accepts, and the vector length at each, found on
PyTorch's meta device (no weights, no images)."""

from __future__ import annotations

import functools

import torch

from featx.errors import ParameterError
from featx.models._registry import Backbone, get_backbone
from featx.models.pooling import pool, resolve_pooling

__all__ = ["feature_size", "list_nodes"]


@functools.lru_cache(maxsize=64)
def _meta_output_shape(backbone: Backbone, node: str, crop: int) -> tuple[int, ...]:
    extractor = backbone.create_extractor(backbone.skeleton(), node).eval()
    with torch.device("meta"):  # tensors the forward creates (position ids, masks) stay data-free too
        output = extractor(torch.empty(2, 3, crop, crop))["features"]
    if not isinstance(output, torch.Tensor) or output.ndim < 2 or output.shape[0] != 2:
        found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ParameterError(
            f"layer={node!r} of {backbone.name} is not one output per image (it gives {found}: a weight, a "
            f"size or an index); choose a module's output such as {list(backbone.stages)[-2:] or backbone.node!r}"
        )
    return tuple(output.shape[1:])


def feature_size(backbone: str | Backbone, layer: str | None = None, pooling: str | None = None) -> int:
    """The length of the feature vector, computed on PyTorch's meta device: no weights, no images."""
    spec = get_backbone(backbone)
    resolve_pooling(spec, layer, pooling)  # a blank layer is refused as such before it is looked for
    shape = _output_shape(spec, layer or spec.node)
    pooled = pool(
        torch.empty((1, *shape), device="meta"),
        resolve_pooling(spec, layer, pooling, shape),
        spec.prefix_tokens,
    )
    return int(pooled.shape[1])


def _output_shape(spec: Backbone, node: str) -> tuple[int, ...]:
    try:
        return _meta_output_shape(spec, node, spec.preprocessing.crop)
    except Exception as error:  # FX raises assorted errors for unknown nodes
        names = list_nodes(spec)
        if node not in names:
            raise ParameterError(
                f"layer={node!r} is not a node of {spec.name}; choose from featx.list_nodes({spec.name!r}), "
                f"e.g. {names[-6:]}"
            ) from None
        raise error


def list_nodes(backbone: str | Backbone) -> list[str]:
    """The node names ``layer=`` accepts for this backbone, input to output."""
    spec = get_backbone(backbone)
    return spec.node_names(spec.skeleton())
