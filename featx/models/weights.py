"""Resolve a ``weights=`` argument into a state dict, its digest and the preprocessing it was trained with.

Accepted: ``"DEFAULT"``, a named weights entry of the backbone (a torchvision enum name such as
``"IMAGENET1K_V2"``, or ``"ResNet50_Weights.IMAGENET1K_V2"``), a local file path, or ``None`` (random init).
This module knows no registry: it works on anything shaped like a :class:`featx.Backbone`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from featx.errors import ParameterError, WeightsUnavailableError
from featx.models.preprocessing import Preprocessing

StateDict = dict[str, torch.Tensor]

#: ``weights=None`` builds the architecture under this seed, so random init is the same network every time.
RANDOM_INIT_SEED = 0

__all__ = [
    "PretrainedWeights",
    "RANDOM_INIT_SEED",
    "ResolvedWeights",
    "WeightsUnavailableError",
    "file_digest",
    "load_state_dict_file",
    "resolve_weights",
]


@dataclass(frozen=True)
class PretrainedWeights:
    """A named set of pretrained weights for one backbone (data, like torchvision's weight enums).

    ``load`` returns the state dict (downloading it if that is how it arrives); ``digest`` identifies the
    exact tensors (a sha256 prefix, as in torchvision's file names); ``preprocessing`` is the transform the
    weights were trained with.
    """

    name: str
    digest: str
    preprocessing: Preprocessing
    load: Callable[[], StateDict]
    source: str = ""
    build_args: Mapping[str, Any] | None = None  # None: the backbone's own ``build_args``


class _HasWeights(Protocol):
    name: str
    preprocessing: Preprocessing
    weights: Mapping[str, PretrainedWeights]
    default_weights: str | None
    build_args: Mapping[str, Any]


@dataclass(frozen=True)
class ResolvedWeights:
    """What the engine needs: tensors to load (None: keep random init), a digest, preprocessing, and the
    builder's arguments for the architecture the tensors belong to."""

    state_dict: StateDict | None
    digest: str
    preprocessing: Preprocessing
    description: str
    build_args: Mapping[str, Any] = field(default_factory=dict)


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (streamed), shortened like torchvision's file-name hashes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Load tensors only: a ``.safetensors`` file, or ``torch.load(weights_only=True)`` (a weights file can
    never run code). A file that is not a state dict of tensors is refused in one line naming it (never
    with advice to unpickle it)."""
    try:
        if os.fspath(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's unpickler raises whatever a malformed file provokes
        reason = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise ParameterError(
            f"weights={os.fspath(path)!r} is not a weights file featx can load safely ({reason}); pass a "
            "state dict saved with torch.save(model.state_dict(), path) or a .safetensors file"
        ) from None
    tensors = _tensors_of(state)
    if tensors is None:
        raise ParameterError(
            f"weights={os.fspath(path)!r} holds a {type(state).__name__} without a state dict of tensors "
            f"(top-level keys: {list(state)[:6] if isinstance(state, dict) else 'none'}); pass a file saved "
            "with torch.save(model.state_dict(), path)"
        )
    return tensors


#: Where training code keeps the model's tensors inside a checkpoint: Lightning and timm's train script
#: ("state_dict"), torchvision's and DeiT's reference scripts ("model"), common hand-written loops.
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "net")


def _tensors_of(state: object) -> StateDict | None:
    """The state dict in a loaded file: the file itself, or a checkpoint's entry that holds it (its
    other entries, optimiser states and counters, are not the network's)."""
    if not isinstance(state, dict):
        return None
    if state and all(isinstance(value, torch.Tensor) for value in state.values()):
        return state
    for key in _CHECKPOINT_KEYS:
        inner = state.get(key)
        if isinstance(inner, dict) and inner:
            tensors = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
    return None


def _with_args(digest: str, build_args: Mapping[str, Any]) -> str:
    """The digest of tensors loaded into an architecture built with ``build_args`` (inception_v3's
    ``transform_input=True``): another architecture gives other vectors, so another cache namespace."""
    return digest + "".join(f"+{key}={value}" for key, value in sorted(build_args.items()))


def resolve_weights(backbone: _HasWeights, weights: str | os.PathLike | None) -> ResolvedWeights:
    """Turn the user's ``weights`` value into tensors, a digest and preprocessing for ``backbone``."""
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        # Random init is seeded (Backbone.truncated): reproducible for one torch version.
        digest = f"random-init-seed{RANDOM_INIT_SEED}-torch{torch.__version__}"
        args = backbone.build_args
        return ResolvedWeights(None, _with_args(digest, args), backbone.preprocessing, "random init", args)
    if isinstance(weights, (str, os.PathLike)):
        named = _named_weights(backbone, str(weights))
        if named is not None:
            args = backbone.build_args if named.build_args is None else named.build_args
            return ResolvedWeights(
                named.load(),
                _with_args(named.digest, args),
                named.preprocessing,
                f"{backbone.name}:{named.name}",
                args,
            )
        path = Path(weights).expanduser()
        if path.is_file():  # a file is taken for a fine-tune of the default weights: their preprocessing
            args = backbone.build_args  # and architecture
            return ResolvedWeights(
                load_state_dict_file(path),
                _with_args(file_digest(path), args),
                backbone.preprocessing,
                str(path),
                args,
            )
    choices = ", ".join(["'DEFAULT'", *(repr(n) for n in backbone.weights), "a file path", "None"])
    raise ParameterError(
        f"weights={weights!r} is neither a weights name of backbone {backbone.name!r} nor an existing file; "
        f"use one of: {choices}"
    )


def _named_weights(backbone: _HasWeights, name: str) -> PretrainedWeights | None:
    """Find a named entry; accepts 'DEFAULT', 'IMAGENET1K_V2' and 'ResNet50_Weights.IMAGENET1K_V2'."""
    if name.upper() == "DEFAULT":
        if backbone.default_weights is None:
            raise ParameterError(
                f"backbone {backbone.name!r} has no default pretrained weights; pass weights=PATH or weights=None"
            )
        return backbone.weights[backbone.default_weights]
    short = name.rsplit(".", 1)[-1] if "_Weights." in name else name
    return backbone.weights.get(short)
