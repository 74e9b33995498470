"""The weights users actually have, fitted to a backbone: whatever prefix training wrapped the keys in,
the trunk strict, the classifier head not needed.

The vector is the pre-logits output, so only the tensors the network uses up to its default node (the
trunk) must be there with the architecture's shapes. A head trained for 5 classes, a missing head, or a
head of another design is not used, and one line says so where the file has a head that differs. Keys
wrapped by DataParallel / DDP (``module.``), Lightning (``model.``) or ``torch.compile`` (``_orig_mod.``)
are found under their prefix.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Collection, Mapping

import torch
from torch import nn

from featx.errors import ParameterError

__all__ = ["load_trunk", "save_trunk", "trunk_keys"]

StateDict = dict[str, torch.Tensor]


def trunk_keys(everything: Mapping[str, torch.Tensor], extractor: nn.Module) -> list[str]:
    """The model's keys (``everything``, from ``state_dict(keep_vars=True)``) whose tensors the
    extractor uses: the extractor shares them with the model it was cut from."""
    used = {id(tensor) for tensor in extractor.state_dict(keep_vars=True).values()}
    return [key for key, tensor in everything.items() if id(tensor) in used] or list(everything)


def load_trunk(
    model: nn.Module,
    everything: Mapping[str, torch.Tensor],
    trunk: Collection[str],
    state_dict: Mapping[str, torch.Tensor],
    name: str,
) -> None:
    """Load the trunk's tensors from ``state_dict`` into ``model``; refuse, in one line, a file whose
    trunk keys are missing or of other shapes, or that holds keys outside the architecture and its head
    (weights of another architecture), and say in one warning line when the file's head differs from
    the architecture's and was left out."""
    trunk_set = set(trunk)
    given = _without_prefix(state_dict, trunk_set)
    head_modules = {key.split(".", 1)[0] for key in everything if key not in trunk_set}
    missing = [k for k in trunk if k not in given]
    shapes = [k for k in trunk if k in given and tuple(given[k].shape) != tuple(everything[k].shape)]
    # keys the architecture lacks are a head of another design only under the head's own modules
    unexpected = [k for k in given if k not in everything and k.split(".", 1)[0] not in head_modules]
    if missing or shapes or unexpected:
        parts = [
            f"{len(found)} {what} (e.g. {', '.join(found[:3])})"
            for what, found in (
                ("missing", missing),
                ("of another shape", shapes),
                ("unexpected", unexpected),
            )
            if found
        ]
        raise ParameterError(
            f"these weights do not fit backbone {name!r} (its trunk has {len(trunk_set)} keys): "
            f"{'; '.join(parts)}. Are they weights of another architecture? Pass the backbone they were "
            "saved from"
        )
    trunk_tensors = OrderedDict((k, given[k]) for k in trunk)
    trunk_tensors._metadata = getattr(given, "_metadata", {})  # type: ignore[attr-defined]
    model.load_state_dict(trunk_tensors, strict=False)  # the head keeps its random init
    head = [k for k in given if k not in trunk_set]
    differs = [k for k in head if k not in everything or given[k].shape != everything[k].shape]
    if differs:
        example = differs[0]
        warnings.warn(
            f"{name}: the checkpoint's head was not used ({len(head)} tensors, e.g. {example} "
            f"{'x'.join(map(str, given[example].shape))}); the pre-logits vector does not need it",
            stacklevel=4,
        )


def _without_prefix(state_dict: Mapping[str, torch.Tensor], expected: Collection[str]) -> StateDict:
    """``state_dict`` with the key prefix under which most ``expected`` keys are found removed
    ('module.', 'model.', 'model.module.', '_orig_mod.'...); keys outside the prefix are dropped."""
    votes: Counter[str] = Counter()
    for key in state_dict:
        if key in expected:
            votes[""] += 1
        for position, character in enumerate(key):
            if character == "." and key[position + 1 :] in expected:
                votes[key[: position + 1]] += 1
    prefix = votes.most_common(1)[0][0] if votes else ""
    stripped = OrderedDict((k[len(prefix) :], v) for k, v in state_dict.items() if k.startswith(prefix))
    metadata = getattr(state_dict, "_metadata", None)  # module versions (MNASNet reads its own)
    if metadata is not None:
        stripped._metadata = {  # type: ignore[attr-defined]
            ("" if k == prefix[:-1] else k[len(prefix) :]): v
            for k, v in metadata.items()
            if k.startswith(prefix[:-1])
        }
    return stripped


def save_trunk(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, model_keys: Collection[str]
) -> None:
    """Write tensors under the model's own key names (``model_keys``; a wrapper's prefix removed) as
    ``.safetensors`` (by that suffix) or a ``torch.save`` state dict: files ``weights=PATH`` reads
    without unpickling anything."""
    named = _without_prefix(tensors, set(model_keys))
    plain = {key: tensor.detach().cpu().contiguous().clone() for key, tensor in named.items()}
    if os.fspath(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(plain, os.fspath(path))
    else:
        torch.save(plain, path)
