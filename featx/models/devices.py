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
        except RuntimeError:
            raise ParameterError(
                f"device={device!r} is not a torch device; use device 'cpu', 'auto', 'cuda', 'cuda:N' or 'mps'"
            ) from None
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ParameterError(
                f"device={device!r}, but this machine has no CUDA GPU that torch can use "
                f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
            )
        if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
            raise ParameterError(
                f"device={device!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        if resolved.type == "meta":
            raise ParameterError(f"device={device!r} holds no data (shapes only); use device 'cpu' or 'auto'")
        if resolved.type not in ("cpu", "cuda"):
            try:  # mps, xpu, ...: torch names them all, this build and machine may have none
                torch.empty(0, device=resolved)
            except (RuntimeError, AssertionError) as error:
                reason = str(error).split(". ")[0].splitlines()[0]  # torch's first sentence, not its dump
                raise ParameterError(
                    f"device={device!r} is not usable on this machine ({reason}); use device 'cpu' or 'auto'"
                ) from None
        return resolved
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
