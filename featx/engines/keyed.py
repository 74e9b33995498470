"""The one step every engine runs for each input where it decodes: read it once, key it by its content,
decode it only if the store lacks that key. The local engine's DataLoader workers, Ray's CPU tasks and
the shard streamers differ only in how they read the bytes; they call :func:`key_and_decode` for the
rest, so a cached input is never decoded and a failure is an :class:`~featx.errors.ImageError` alike.

With ``decoding="device"`` a JPEG the device can decode stays bytes here; the process that runs the
network decodes the batch's JPEGs on its device with :func:`decode_uncropped` (the job's decoding
stage) or :func:`decode_jpegs` (decoded and cropped in one call)."""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from typing import Any, NamedTuple

import torch

from featx.errors import ImageError
from featx.inputs.images import hash_content
from featx.inputs.jpeg import decode_on_device, device_decodable
from featx.models.preprocessing import Preprocessing


class Keyed(NamedTuple):
    """One input's outcome: its content key (None if it could not be read), its uint8 pixels or JPEG bytes
    left for the device (None when the store has the key, or on failure) and its failure, if any."""

    key: str | None
    pixels: torch.Tensor | bytes | None
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
    if preprocessing.decoding == "device" and device_decodable(content, max_pixels, preprocessing.resize):
        return Keyed(key, content, None)
    try:
        return Keyed(key, preprocessing.decode(content, index, max_pixels, source=source), None)
    except ImageError as error:
        return Keyed(key, None, error)


class DeviceDecoded(NamedTuple):
    """A batch's JPEGs decoded on the device: the keys of the ``pixels`` rows, and the failures."""

    keys: list[str]
    pixels: torch.Tensor | None
    errors: list[ImageError]


class Uncropped(NamedTuple):
    """A batch's JPEGs decoded on the device, not yet resized: ``images`` (full size, on the device) of
    ``keys``, then what the device failed on, decoded by the CPU path (``fallback``, cropped), and the
    failures. The decoding stage stops here; the issuing stage crops on the compute stream."""

    keys: list[str]
    images: list[torch.Tensor]
    fallback: DeviceDecoded


def decode_uncropped(
    jpegs: Sequence[tuple[int, str, str, bytes | torch.Tensor]],
    preprocessing: Preprocessing,
    device: torch.device,
    max_pixels: int,
) -> Uncropped:
    """JPEGs that :func:`key_and_decode` left as bytes, as ``(index, source, key, content)``: decoded on
    ``device`` in one batch; one the device fails on is decoded by the CPU path instead, which raises the
    error the CPU decoders would (an input that is broken fails alike whichever path it took)."""
    decoded = decode_on_device([content for *_, content in jpegs], device)
    keys = [key for (_, _, key, _), image in zip(jpegs, decoded) if image is not None]
    images = [image for image in decoded if image is not None]
    fallback_keys, pixels, errors = [], [], []
    for (index, source, key, content), image in zip(jpegs, decoded):
        if image is None:
            content = bytes(content.numpy()) if isinstance(content, torch.Tensor) else content
            try:
                pixels.append(preprocessing.decode(content, index, max_pixels, source)[None].to(device))
                fallback_keys.append(key)
            except ImageError as error:
                errors.append(error)
    fallback = DeviceDecoded(fallback_keys, torch.cat(pixels) if pixels else None, errors)
    return Uncropped(keys, images, fallback)


def decode_jpegs(
    jpegs: Sequence[tuple[int, str, str, bytes | torch.Tensor]],
    preprocessing: Preprocessing,
    device: torch.device,
    max_pixels: int,
) -> DeviceDecoded:
    """:func:`decode_uncropped`, resized and cropped on ``device``: the rows the device decoded, then
    those the CPU path decoded."""
    raw = decode_uncropped(jpegs, preprocessing, device, max_pixels)
    pixels = [preprocessing.crop_batch(raw.images)] if raw.images else []
    if raw.fallback.pixels is not None:
        pixels.append(raw.fallback.pixels)
    keys = raw.keys + raw.fallback.keys
    return DeviceDecoded(keys, torch.cat(pixels) if pixels else None, raw.fallback.errors)
