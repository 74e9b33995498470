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
from featx.inputs import dali
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
    if preprocessing.decoding in ("device", "dali") and device_decodable(
        content, max_pixels, preprocessing.resize
    ):
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
    """A batch's JPEGs decoded on the device, not all resized yet: ``images`` (full size, on the device)
    of ``keys``, and the rows already cropped (``cropped``: by DALI, or by the CPU path for what the device
    failed on) with the failures. The decoding stage stops here; the issuing stage crops the rest on the
    compute stream."""

    keys: list[str]
    images: list[torch.Tensor]
    cropped: DeviceDecoded


def decode_uncropped(
    jpegs: Sequence[tuple[int, str, str, bytes | torch.Tensor]],
    preprocessing: Preprocessing,
    device: torch.device,
    max_pixels: int,
) -> Uncropped:
    """JPEGs that :func:`key_and_decode` left as bytes, as ``(index, source, key, content)``: decoded on
    ``device`` in one batch (by nvJPEG, full size; by DALI, resized and cropped too); one the device fails on is decoded by the CPU path instead, which raises the
    error the CPU decoders would (an input that is broken fails alike whichever path it took)."""
    contents = [content for *_, content in jpegs]
    if preprocessing.decoding == "dali":
        rows = dali.decode_crop(contents, preprocessing, device)
        failed = [row is None for row in rows]
        return Uncropped([], [], _cropped(jpegs, rows, failed, preprocessing, device, max_pixels))
    decoded = decode_on_device(contents, device)
    keys = [key for (_, _, key, _), image in zip(jpegs, decoded) if image is not None]
    images = [image for image in decoded if image is not None]
    failed = [image is None for image in decoded]
    none = [None] * len(jpegs)
    return Uncropped(keys, images, _cropped(jpegs, none, failed, preprocessing, device, max_pixels))


def _cropped(
    jpegs: Sequence[tuple[int, str, str, bytes | torch.Tensor]],
    rows: Sequence[torch.Tensor | None],
    failed: Sequence[bool],
    preprocessing: Preprocessing,
    device: torch.device,
    max_pixels: int,
) -> DeviceDecoded:
    """The rows already cropped on the device, and each JPEG the device ``failed`` on decoded by the CPU
    path, whose error names what is wrong with it."""
    keys, pixels, errors = [], [], []
    for (index, source, key, content), row, fails in zip(jpegs, rows, failed):
        if row is not None:
            keys.append(key)
            pixels.append(row[None])
        elif fails:
            content = bytes(content.numpy()) if isinstance(content, torch.Tensor) else content
            try:
                pixels.append(preprocessing.decode(content, index, max_pixels, source)[None].to(device))
                keys.append(key)
            except ImageError as error:
                errors.append(error)
    return DeviceDecoded(keys, torch.cat(pixels) if pixels else None, errors)


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
    if raw.cropped.pixels is not None:
        pixels.append(raw.cropped.pixels)
    keys = raw.keys + raw.cropped.keys
    return DeviceDecoded(keys, torch.cat(pixels) if pixels else None, raw.cropped.errors)
