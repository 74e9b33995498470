"""A network that does not fit in memory: torch's allocator failure (or Python's ``MemoryError``) while a
model is built, loaded or moved becomes one line saying so, with the model's size and the limit, instead
of a traceback through the model's constructor."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import torch
from torch import nn

from featx.errors import ParameterError

__all__ = ["fitting_in_memory", "model_size"]


@contextlib.contextmanager
def fitting_in_memory(
    name: str, skeleton: Callable[[], nn.Module], device: torch.device | None = None
) -> Iterator[None]:
    """Run the block; if it runs out of memory, raise one :class:`ParameterError` naming backbone ``name``,
    its size (from ``skeleton()``, the model on the meta device: no memory) and the ``device`` (None: the
    host) whose memory it did not fit in."""
    try:
        yield
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        on_host = device is None or device.type == "cpu"
        where = "memory" + (_limit() if on_host else f" on {device}")
        tried = re.search(r"allocate (?:(\d+) bytes|([\d.]+ ?[KMGTP]i?B))", str(error), re.IGNORECASE)
        amount = tried and (_bytes(int(tried[1])) if tried[1] else tried[2])
        cause = f"allocating {amount} more failed" if amount else type(error).__name__
        raise ParameterError(
            f"backbone {name!r} does not fit in {where}: {model_size(skeleton)} ({cause}); free memory or "
            "raise the limit, or choose a smaller backbone (featx backbones lists them)"
        ) from None


def model_size(skeleton: Callable[[], nn.Module]) -> str:
    """What the model's weights take (``"its 1,136,480,768 parameters take 4.5 GB with its buffers"``),
    or that the size is unknown where its skeleton cannot be built."""
    try:
        model = skeleton()
    except Exception:  # a model that cannot be built on the meta device: the failure says enough
        return "its size is unknown"
    parameters = sum(p.numel() for p in model.parameters())
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return f"its {parameters:,} parameters take {_bytes(size)} with its buffers"


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    message = str(error).lower()
    return "can't allocate memory" in message or "out of memory" in message


def _limit() -> str:
    """The process's address-space limit (``ulimit -v``), where one is set."""
    try:
        import resource
    except ImportError:  # not on Windows
        return ""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return "" if soft == resource.RLIM_INFINITY else f" (this process may use {_bytes(soft)}, ulimit -v)"


def _bytes(size: float) -> str:
    if size < 1000:
        return f"{size:,.0f} bytes"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        size /= 1000
        if size < 1000 or unit == "PB":
            break
    return f"{size:,.1f} {unit}"
