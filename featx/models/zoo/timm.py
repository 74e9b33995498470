"""timm's zoo under its Hugging Face hub ids: ``timm/NAME`` or ``timm/NAME.TAG``, resolved on first use.

The vector is timm's own pre-logits output, ``forward_head(forward_features(x), pre_logits=True)``: the
input of the classifier after the model's own pooling (a ViT's class token or token mean, as its
``global_pool`` says). The node for it is called ``pre_logits``; any graph node (``blocks.5``,
``stages.2``) is reachable with ``layer=`` through timm's FX tracer. Preprocessing is the tag's
``pretrained_cfg`` as ``timm.data.resolve_data_config`` reads it, and pretrained tensors load through
``timm.create_model(pretrained=True)``: timm's hub code, ``HF_HOME`` and ``HF_HUB_OFFLINE`` as its users know
them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featx.errors import ParameterError, WeightsUnavailableError
from featx.models._registry import Backbone, ChannelsFirst, Family, meta_skeleton, register_family
from featx.models.preprocessing import Preprocessing
from featx.models.weights import PretrainedWeights, StateDict

PREFIX = "timm/"
#: The default node: what ``forward_head(..., pre_logits=True)`` returns.
PRE_LOGITS = "pre_logits"
#: At most this many of timm's ``feature_info`` stages go into the transfer report's layer sweep.
MAX_STAGES = 3


def _timm() -> Any:
    try:
        import timm
    except ImportError as error:
        raise ImportError("timm/... backbones need timm: pip install 'featx[timm]'") from error
    return timm


class PreLogits(nn.Module):
    """A timm model's pre-logits vector as an extractor's ``{"features": tensor}`` output (the model
    without its classifier)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        model.reset_classifier(0)  # the unused classifier's weights would otherwise count as a block
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.model.forward_head(self.model.forward_features(x), pre_logits=True)}


def timm_fx_extractor(model: nn.Module, node: str) -> nn.Module:
    """timm's FX tracer knows its untraceable leaves (e.g. 'same' padding), torchvision's does not."""
    if node == PRE_LOGITS:
        return PreLogits(model)
    from timm.models import create_feature_extractor

    name = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    try:
        extractor = create_feature_extractor(model, return_nodes={node: "features"})
    except Exception as error:  # FX fails in many ways, each meaning "this node cannot be cut out"
        raise ParameterError(
            f"timm model {name!r} cannot be traced to layer={node!r} ({type(error).__name__}: "
            f"{str(error)[:120]}); pass layer=None for its pre-logits vector, or another node from "
            "featx.list_nodes(backbone)"
        ) from None
    return ChannelsFirst(extractor) if getattr(model, "output_fmt", "NCHW") == "NHWC" else extractor


def timm_node_names(model: nn.Module) -> list[str]:
    from timm.models import get_graph_node_names

    try:
        return [*get_graph_node_names(model)[1], PRE_LOGITS]
    except Exception:  # untraceable: only the pre-logits vector is reachable
        return [PRE_LOGITS]


def _owns(name: str) -> bool:
    """``timm/ARCH`` for any architecture, ``timm/ARCH.TAG`` for a published tag; others fall through to
    the registry's unknown-name error, with its closest names."""
    if not name.startswith(PREFIX):
        return False
    model_name = name[len(PREFIX) :]
    return model_name in _pretrained_tags() or ("." not in model_name and _timm().is_model(model_name))


@functools.cache
def _pretrained_tags() -> frozenset[str]:
    return frozenset(_timm().list_pretrained())


def _encoder(model_name: str) -> bool:
    """timm's ``*_enc`` models are the vision towers of multimodal language models: no classifier, no
    pre-logits vector (``forward_head`` refuses), so no featx vector; listings leave them out."""
    return model_name.split(".", 1)[0].endswith("_enc")


def _names(pretrained: bool) -> list[str]:
    tagged = [name for name in _pretrained_tags() if not _encoder(name)]
    names = [PREFIX + name for name in tagged]
    if not pretrained:
        with_weights = {name.split(".", 1)[0] for name in tagged}
        names += [
            PREFIX + name for name in _timm().list_models() if name not in with_weights and not _encoder(name)
        ]
    return names


def _default_weights(name: str) -> str | None:
    model_name = name[len(PREFIX) :]
    if model_name in _pretrained_tags():
        return model_name.split(".", 1)[1]
    cfg = _timm().models.get_pretrained_cfg(model_name)  # an architecture's default tag, if it has weights
    return cfg.tag if cfg is not None and f"{model_name}.{cfg.tag}" in _pretrained_tags() else None


def create(model_name: str, pretrained: bool = False) -> nn.Module:
    """``timm.create_model`` (its own hub loading when ``pretrained``), or one line on installing timm."""
    return _timm().create_model(model_name, pretrained=pretrained)


def preprocessing_from_timm(config: dict[str, Any], name: str) -> Preprocessing:
    """timm's eval transform (``resolve_data_config``) as featx's :class:`Preprocessing`.

    Resize is ``floor(size / crop_pct)`` as in timm's ``transforms_factory``; 'squash' crop mode resizes
    both sides to it. 'border' mode and non-square inputs are refused rather than approximated.
    """
    _, height, width = config["input_size"]
    if height != width or config.get("crop_mode", "center") not in ("center", "squash"):
        raise ParameterError(
            f"{name} expects a {height}x{width} input with crop_mode={config.get('crop_mode')!r}; featx "
            "reproduces square inputs with 'center' or 'squash' crops only. Pass a Backbone with your own "
            "Preprocessing (featx.register_backbone) to use it"
        )
    interpolation = config.get("interpolation", "bilinear")
    return Preprocessing(
        resize=int(height / config.get("crop_pct", 0.875)),  # floor, like timm
        crop=int(height),
        mean=tuple(float(m) for m in config["mean"]),
        std=tuple(float(s) for s in config["std"]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic",
        crop_mode=config.get("crop_mode", "center"),
    )


def _hub_weights(model_name: str, cfg: dict[str, Any], preprocessing: Preprocessing) -> PretrainedWeights:
    """Pretrained tensors through timm's own loading; offline without the file, one line on what to do."""
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")

    def load() -> StateDict:
        try:
            return create(model_name, pretrained=True).state_dict()
        except OSError as error:  # offline, refused, or missing: huggingface_hub and urllib raise OSErrors
            raise WeightsUnavailableError(_offline_message(model_name, hub_id, url, error)) from error

    return PretrainedWeights(
        name=cfg.get("tag") or "DEFAULT",
        digest=f"timm:{hub_id or url}",  # a published tag names fixed tensors, as torchvision's hashes do
        preprocessing=preprocessing,
        load=load,
        source=f"https://huggingface.co/{hub_id}" if hub_id else str(url),
    )


def _offline_message(model_name: str, hub_id: str | None, url: str | None, error: Exception) -> str:
    if hub_id:
        from huggingface_hub import constants

        folder = Path(constants.HF_HUB_CACHE) / f"models--{hub_id.replace('/', '--')}"
        wanted = f"model.safetensors of {hub_id}"
        fetch = (
            f"run `hf download {hub_id}` where there is internet and copy {folder}/ here (HF_HOME moves it)"
        )
    else:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        wanted = str(url).rsplit("/", 1)[-1]
        fetch = f"copy {wanted} into {folder}/ (TORCH_HOME moves it)"
    reason = str(error).strip().splitlines()[0][:100] if str(error).strip() else type(error).__name__
    return (
        f"Could not load timm's {model_name} weights: {wanted} is not in {folder} and could not be "
        f"downloaded ({reason}). Either {fetch}, or pass weights='/path/to/model.safetensors', or "
        "weights=None for random init."
    )


def _resolve(name: str) -> Backbone:
    timm = _timm()
    model_name = name[len(PREFIX) :]
    model = meta_skeleton(functools.partial(create, model_name))
    if not hasattr(model, "reset_classifier"):
        raise ParameterError(
            f"{name} is an encoder without a classifier (timm's *_enc vision towers of language models): "
            "it has no pre-logits vector for featx to cache; choose a classification model "
            "(featx.list_backbones('timm/*'))"
        )
    cfg = dict(model.pretrained_cfg)
    preprocessing = preprocessing_from_timm(timm.data.resolve_data_config({}, model=model), name)
    tagged = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]
    has_weights = bool(cfg.get("hf_hub_id") or cfg.get("url")) and tagged in _pretrained_tags()
    weights = {}
    if has_weights:
        entry = _hub_weights(model_name, cfg, preprocessing)
        weights[entry.name] = entry
    stages = [info["module"] for info in getattr(model, "feature_info", [])][:-1]
    if len(stages) > MAX_STAGES:  # spread the sweep over the depth: early, middle, late
        stages = [stages[round(i * (len(stages) - 1) / (MAX_STAGES - 1))] for i in range(MAX_STAGES)]
    prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
    token_output = getattr(model, "global_pool", None) in ("token", "avg", "map") and prefix_tokens > 0
    return Backbone(
        name=name,
        build=functools.partial(create, model_name),
        node=PRE_LOGITS,
        pooling="flatten",
        preprocessing=preprocessing,
        weights=weights,
        default_weights=next(iter(weights), None),
        create_extractor=timm_fx_extractor,
        node_names=timm_node_names,
        description=f"timm {cfg['architecture']}: pre-logits (forward_head(pre_logits=True))",
        stages=tuple(stages),
        layer_pooling=("cls" if model.global_pool == "token" else "tokens_avg") if token_output else "avg",
        prefix_tokens=prefix_tokens,
        family="timm",
    )


register_family(Family("timm", owns=_owns, resolve=_resolve, names=_names, default_weights=_default_weights))
