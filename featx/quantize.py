"""int8 on the CPU: post-training static quantization of the truncated network with torch's own tooling.

torch.ao's FX graph mode with the x86 backend's default qconfig (per-channel weights, per-tensor
activations), calibrated on real photos. torch marks ``torch.ao.quantization`` deprecated in favour of
torchao's export flow; the FX flow still ships and works in torch 2.14, and its warning is silenced here
(with its observers' notices) only. Networks FX cannot re-trace (timm's EfficientNet-Lite, whose 'same' padding branches on the input
size) or CPUs without the x86 engine get :class:`Int8Unavailable`, and featx uses another precision.
"""

from __future__ import annotations

import copy
import hashlib
import warnings

import numpy as np
import torch
from torch import nn

from featx.errors import FeatxError

#: What the int8 network's identity holds besides the float network's (goes into the fingerprint).
SCHEME = "torch.ao fx, x86 default qconfig (per-channel weights), post-training static"


class Int8Unavailable(FeatxError, RuntimeError):
    """int8 cannot run here (no x86 quantized engine, or the network cannot be traced for quantization)."""


def int8_supported() -> bool:
    return "x86" in torch.backends.quantized.supported_engines


def quantize(network: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of ``network`` (float in, float out), calibrated on ``calibration`` (normalised batch)."""
    if not int8_supported():
        raise Int8Unavailable("this CPU build of torch has no x86 quantized engine")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=r"torch\.ao\..*")  # observer notices
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        try:
            prepared = prepare_fx(copy.deepcopy(network).eval(), get_default_qconfig_mapping("x86"),
                                  example_inputs=(calibration[:1],))
            with torch.inference_mode():
                for chunk in calibration.split(8):
                    prepared(chunk)
            return convert_fx(prepared)
        except Int8Unavailable:
            raise
        except Exception as error:  # FX tracing fails in many ways, all of which mean "not this network"
            raise Int8Unavailable(f"{type(error).__name__}: {str(error)[:160]}") from None


def calibration_digest(batch: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(batch.numpy()).tobytes()).hexdigest()[:16]
