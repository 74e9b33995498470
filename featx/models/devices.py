"""Which torch device "auto" and the user's spelling of a device mean here, with a clear error where the
machine lacks it."""

from __future__ import annotations

import torch

from featx.errors import ParameterError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else goes to ``torch.device``."""
    if str(device) != "auto":
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise ParameterError(
                f"device={device!r} is not a torch device ({error}); use auto, cpu, cuda, cuda:N or mps"
            ) from None
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ParameterError(
                f"device={device!r}, but this machine has no CUDA GPU that torch can use "
                f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
            )
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
