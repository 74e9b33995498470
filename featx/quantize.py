"""int8 on the CPU: post-training static quantization of the truncated network with torch's own tooling.

torch.ao's FX graph mode with the x86 backend's default qconfig (per-channel weights, per-tensor
activations), calibrated on real photos or on the user's own images. torch marks ``torch.ao.quantization``
deprecated in favour of torchao's export flow; the FX flow still ships and works in torch 2.14, and its
warning is silenced here (with its observers' notices) only. Networks FX cannot re-trace (timm's
EfficientNet-Lite, whose 'same' padding branches on the input size) or CPUs without the x86 engine get
:class:`Int8Unavailable`, and featx uses another precision.

A calibration is kept on disk as its observers' statistics (plain arrays in a ``.npz``, never a pickle):
rebuilding the int8 network from them gives bit-identical vectors without running the calibration again.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featx.errors import FeatxError, ParameterError

#: What the int8 network's identity holds besides the float network's (goes into the fingerprint).
SCHEME = "torch.ao fx, x86 default qconfig (per-channel weights), post-training static"
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
            prepared = prepare_fx(copy.deepcopy(network).eval(), get_default_qconfig_mapping("x86"),
                                  example_inputs=(calibration[:1],))
        except Exception as error:  # FX tracing fails in many ways, all of which mean "not this network"
            raise Int8Unavailable(f"{type(error).__name__}: {str(error)[:160]}") from None
        if stored is None or not _load_observers(prepared, stored):
            _calibrate(prepared, calibration)
            if stored is not None:
                _save_observers(prepared, stored)
        return convert_fx(prepared)


def _calibrate(prepared: nn.Module, calibration: torch.Tensor) -> None:
    with torch.inference_mode():
        for chunk in calibration.split(8):
            prepared(chunk)


def _observer_state(prepared: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value for name, value in prepared.state_dict().items() if "activation_post_process" in name}


def _save_observers(prepared: nn.Module, path: Path) -> None:
    """Atomically; a read-only cache directory only means calibrating again next time, with a warning."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            np.savez(file, **{name: value.numpy() for name, value in _observer_state(prepared).items()})
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        warnings.warn(f"cannot keep the int8 calibration in {path} ({error}); the next run calibrates again",
                      stacklevel=4)


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
        warnings.warn(f"ignoring the stored int8 calibration {path} ({type(error).__name__}: {error}); "
                      "calibrating again", stacklevel=4)
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
    from featx.datasets import load_manifest

    try:
        paths = load_manifest(source)["path"].tolist()
    except ParameterError as error:
        raise ParameterError(f"calibration={source!r}: {error}") from None
    if len(paths) < 2:
        raise ParameterError(f"calibration={source!r} holds {len(paths)} image(s); int8 needs at least 2 "
                             f"(one half calibrates, the other checks fidelity), ideally {CALIBRATION_IMAGES}")
    picked = np.unique(np.linspace(0, len(paths) - 1, min(len(paths), CALIBRATION_IMAGES)).round().astype(int))
    return [paths[i] for i in picked]
