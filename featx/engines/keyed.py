"""The one step every engine runs for each input where it decodes: read it once, key it by its content,
decode it only if the store lacks that key. The local engine's DataLoader workers, Ray's CPU tasks and
the shard streamers differ only in how they read the bytes; they call :func:`key_and_decode` for the
rest, so a cached input is never decoded and a failure is an :class:`~featx.errors.ImageError` alike."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any, NamedTuple

import torch

from featx.errors import ImageError
from featx.inputs.images import hash_content
from featx.models.preprocessing import Preprocessing


class Keyed(NamedTuple):
    """One input's outcome: its content key (None if it could not be read), its uint8 pixels (None when
    the store has the key, or on failure) and its failure, if any."""

    key: str | None
    pixels: torch.Tensor | None
    error: ImageError | None


def key_and_decode(
    read: Callable[[], Any],
    index: int,
    source: str,
    known: Container[str],
    preprocessing: Preprocessing,
    max_pixels: int,
) -> Keyed:
    """``read()`` the input's content once (bytes, a PIL image or an array; it raises ``ImageError``),
    hash it, and decode it for the network unless ``known`` holds its key. ``source`` names it in errors."""
    try:
        content = read()
    except ImageError as error:
        return Keyed(None, None, error)
    key = hash_content(content)
    if key in known:
        return Keyed(key, None, None)
    try:
        return Keyed(key, preprocessing.decode(content, index, max_pixels, source=source), None)
    except ImageError as error:
        return Keyed(key, None, error)
