"""int8 on the CPU: post-training static quantization of the truncated network with torch's own tooling.

torch.ao's FX graph mode with the x86 backend's default qconfig (per-channel weights, per-tensor
activations), calibrated on real photos or on the user's own images, plus two measures for depthwise
networks such as EfficientNet-Lite (``benchmarks/int8_depthwise.py``): depthwise convolutions stay in
float (x86's int8 depthwise kernels are slower than float ones), and an activation whose only users are
ReLU6 gets its range clipped to [0, 6], as TFLite does by fusing ReLU6 into the convolution (otherwise a
per-tensor range fitted to the raw convolution output leaves a handful of levels for [0, 6]). timm's
'same' padding, which branches on the input size, is made constant for the network's fixed input size.
torch marks ``torch.ao.quantization`` deprecated in favour of torchao's export flow; the FX flow still
ships and works in torch 2.14, and its warning is silenced here (with its observers' notices) only.
Networks FX cannot re-trace and CPUs without the x86 engine get :class:`Int8Unavailable`, and featx uses
another precision.

A calibration is kept on disk as its observers' statistics (plain arrays in a ``.npz``, never a pickle):
rebuilding the int8 network from them gives bit-identical vectors without running the calibration again.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from featx._files import save_or_warn
from featx.errors import FeatxError, ParameterError

#: What the int8 network's identity holds besides the float network's (goes into the fingerprint).
SCHEME = (
    "torch.ao fx, x86 default qconfig (per-channel weights), post-training static; depthwise convs "
    "in float, ReLU6 ranges clipped"
)
#: At most this many images of a user's calibration set are used: half calibrate, half check fidelity.
CALIBRATION_IMAGES = 32


class Int8Unavailable(FeatxError, RuntimeError):
    """int8 cannot run here (no x86 quantized engine, or the network cannot be traced for quantization)."""


def int8_supported() -> bool:
    return "x86" in torch.backends.quantized.supported_engines


def quantize(network: nn.Module, calibration: torch.Tensor, stored: Path | None = None) -> nn.Module:
    """An int8 copy of ``network`` (float in, float out), calibrated on ``calibration`` (normalised batch).

    With ``stored``, the observers' statistics are read from that file when it holds this network's,
    else measured and written there.
    """
    if not int8_supported():
        raise Int8Unavailable("this CPU build of torch has no x86 quantized engine")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.ao\..*")  # observer notices
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        try:
            module = traceable_copy(network, calibration[:1])
            mapping = get_default_qconfig_mapping("x86").set_object_type(
                nn.AdaptiveAvgPool2d, None
            )  # pool in float
            for name in depthwise_convolutions(module):
                mapping.set_module_name(name, None)
            prepared = prepare_fx(module, mapping, example_inputs=(calibration[:1],))
        except Exception as error:  # FX tracing fails in many ways, all of which mean "not this network"
            raise Int8Unavailable(f"{type(error).__name__}: {str(error)[:160]}") from None
        if stored is None or not _load_observers(prepared, stored):
            _calibrate(prepared, calibration)
            if stored is not None:
                _save_observers(prepared, stored)
        clip_relu6_ranges(prepared)
        return convert_fx(prepared)


def depthwise_convolutions(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]


def traceable_copy(network: nn.Module, example: torch.Tensor) -> nn.Module:
    """A float copy FX can re-trace for this input size: timm's 'same' padding made constant, and each
    timm ``BatchNormAct2d`` folded into the convolution before it (left alone, it quantizes as a float
    batch norm between two int8 convolutions). Networks without them are copied as they are."""
    module = copy.deepcopy(network).to(memory_format=torch.contiguous_format).eval()
    try:
        from timm.layers import BatchNormAct2d, Conv2dSame
        from timm.layers.padding import get_same_padding
    except ImportError:
        return module
    sizes: dict[str, torch.Size] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _, args, name=name: sizes.__setitem__(name, args[0].shape[-2:]))
        for name, m in module.named_modules()
        if isinstance(m, Conv2dSame)
    ]
    if hooks:  # one forward pass tells each padding its input size
        with torch.inference_mode():
            module(example)
    for hook in hooks:
        hook.remove()
    for name, (height, width) in sizes.items():
        same = module.get_submodule(name)
        pad_h, pad_w = (
            get_same_padding(size, k, s, d)
            for size, k, s, d in zip((height, width), same.kernel_size, same.stride, same.dilation)
        )
        conv = nn.Conv2d(
            same.in_channels,
            same.out_channels,
            same.kernel_size,
            same.stride,
            0,
            same.dilation,
            same.groups,
            same.bias is not None,
        )
        conv.weight, conv.bias = same.weight, same.bias
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        module.set_submodule(name, nn.Sequential(nn.ZeroPad2d(padding), conv))
    if isinstance(module, torch.fx.GraphModule):
        modules = dict(module.named_modules())
        for node in module.graph.nodes:
            norm = modules.get(node.target) if node.op == "call_module" else None
            source = node.args[0] if norm is not None and node.args else None
            if not isinstance(norm, BatchNormAct2d) or getattr(source, "op", None) != "call_module":
                continue
            conv = modules[source.target]
            conv = conv[-1] if isinstance(conv, nn.Sequential) else conv
            if isinstance(conv, nn.Conv2d) and len(source.users) == 1:
                conv.weight, conv.bias = (
                    nn.Parameter(t, requires_grad=False)
                    for t in fuse_conv_bn_weights(
                        conv.weight,
                        conv.bias,
                        norm.running_mean,
                        norm.running_var,
                        norm.eps,
                        norm.weight,
                        norm.bias,
                    )
                )
                module.set_submodule(node.target, norm.act)  # its dropout is the identity in eval mode
    return module


def clip_relu6_ranges(prepared: nn.Module) -> None:
    """After calibration: an observer whose only users are ReLU6 gets its range clipped to [0, 6]."""
    from torch.ao.quantization.observer import MinMaxObserver

    modules = dict(prepared.named_modules())
    for node in prepared.graph.nodes:
        users = list(node.users)
        if (
            "activation_post_process" in str(node.target)
            and users
            and all(
                user.op == "call_module" and isinstance(modules.get(user.target), nn.ReLU6) for user in users
            )
        ):
            old = modules[node.target]
            clipped = MinMaxObserver(dtype=old.dtype, qscheme=old.qscheme, reduce_range=old.reduce_range)
            clipped.min_val, clipped.max_val = old.min_val.clamp(min=0.0), old.max_val.clamp(max=6.0)
            setattr(prepared, node.target, clipped)


def _calibrate(prepared: nn.Module, calibration: torch.Tensor) -> None:
    with torch.inference_mode():
        for chunk in calibration.split(8):
            prepared(chunk)


def _observer_state(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value for name, value in prepared.state_dict().items() if "activation_post_process" in name}


def _save_observers(prepared: nn.Module, path: Path) -> None:
    """Atomically; a read-only cache directory only means calibrating again next time, with a warning."""
    arrays = {name: value.numpy() for name, value in _observer_state(prepared).items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)

    save_or_warn(path, write, "the int8 calibration", "the next run calibrates again", stacklevel=4)


def _load_observers(prepared: nn.Module, path: Path) -> bool:
    """Load the stored statistics into ``prepared``'s observers; False (with a warning if the file exists
    but is unreadable or belongs to another network) means calibrate."""
    if not path.exists():
        return False
    expected = _observer_state(prepared)
    try:
        with np.load(path, allow_pickle=False) as stored:
            state = {name: torch.from_numpy(stored[name]) for name in stored.files}
        if state.keys() != expected.keys() or any(state[k].shape != v.shape for k, v in expected.items()):
            raise ValueError("its observers are not this network's")
        prepared.load_state_dict(state, strict=False)
        return True
    except Exception as error:  # a damaged .npz raises OSError, ValueError, BadZipFile, KeyError...
        warnings.warn(
            f"ignoring the stored int8 calibration {path} ({type(error).__name__}: {error}); "
            "calibrating again",
            stacklevel=4,
        )
        return False


def stored_calibration_path(directory: Path, tuning_key: str, digest: str) -> Path:
    """Where the calibration of this network (``tuning_key``) on these images (``digest``) is kept."""
    name = hashlib.sha256(f"{SCHEME}|{tuning_key}|{digest}".encode()).hexdigest()[:24]
    return directory / "int8" / f"{name}.npz"


def calibration_digest(batch: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(batch.numpy()).tobytes()).hexdigest()[:16]


def calibration_sources(source: str) -> list[Any]:
    """Up to :data:`CALIBRATION_IMAGES` inputs of a folder, manifest, shard set or table, evenly spread
    (a folder of class sub-folders lists one class after another: the first 32 would all be one class)."""
    from featx.inputs.manifests import load_manifest

    try:
        paths = load_manifest(source)["path"].tolist()
    except ParameterError as error:
        raise ParameterError(f"calibration={source!r}: {error}") from None
    if len(paths) < 2:
        raise ParameterError(
            f"calibration={source!r} holds {len(paths)} image(s); int8 needs at least 2 "
            f"(one half calibrates, the other checks fidelity), ideally {CALIBRATION_IMAGES}"
        )
    picked = np.unique(
        np.linspace(0, len(paths) - 1, min(len(paths), CALIBRATION_IMAGES)).round().astype(int)
    )
    return [paths[i] for i in picked]
