"""A backbone's blocks, the units fine-tuning unfreezes from the top: residual blocks, stages, layers."""

from __future__ import annotations

from torch import nn

__all__ = ["blocks"]


def blocks(extractor: nn.Module) -> list[list[str]]:
    """The backbone's blocks, input to output, as lists of parameter names.

    A block is a top-level child, or each numbered child of a top-level container: ResNet's residual
    blocks (layer4.1), EfficientNet's stages (blocks.6), VGG's convolutions (features.28), a ViT's
    blocks (model.blocks.11). A block of normalisation layers only joins the block before it
    (EfficientNet's conv_head + bn2).
    """
    groups: list[list[str]] = []
    outer = ""  # a wrapper's path (timm's PreLogits holds the whole model as .model)
    while len(children := list(extractor.named_children())) == 1 and not list(extractor.parameters(False)):
        outer, extractor = f"{outer}{children[0][0]}.", children[0][1]
    for name, child in extractor.named_children():
        name = outer + name
        children = list(child.named_children())
        numbered = children and all(sub.isdigit() for sub, _ in children)
        for sub, module in children if numbered else [("", child)]:
            prefix = f"{name}.{sub}" if sub else name
            params = [f"{prefix}.{p}" for p, _ in module.named_parameters()]
            if not params:
                continue
            norm_only = all(
                isinstance(m, nn.modules.batchnorm._NormBase)
                for m in module.modules()
                if list(m.parameters(recurse=False))
            )
            if norm_only and groups:
                groups[-1].extend(params)
            else:
                groups.append(params)
    return groups
