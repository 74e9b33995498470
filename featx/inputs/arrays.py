"""Pixels held in memory: numpy arrays made PIL images (floats in [0, 1], 16-bit scaled), and inputs
converted before they are read (tensors), which keep the name the user knows them by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from featx.errors import ImageError

FLOAT_TOLERANCE = 1e-4  # float pixels this far outside [0, 1] are rounding, not another scale


@dataclass(frozen=True)
class Converted:
    """An input converted before it is read (a tensor made an HxWxC array), named as the user passed it.
    One that could not be converted carries its failure instead (``kind``, ``reason``), raised as that
    input's error when it is read: one bad element fails its own row, not the whole call."""

    description: str
    pixels: np.ndarray | None = None
    kind: str = "invalid_array"
    reason: str = ""


_ARRAY_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def array_image(array: np.ndarray, index: int, source: str) -> Image.Image:
    """HxW or HxWxC (C = 1, 3, 4) arrays -> a PIL image of the same pixels, so that an array and the same
    pixels as a PIL image decode alike (alpha over white included). uint8 as is, uint16 scaled, floats
    must lie in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in _ARRAY_MODES:
        channels_first = array.ndim == 3 and array.shape[0] in _ARRAY_MODES
        hint = "; it looks channels-first (CxHxW): pass array.transpose(1, 2, 0)" if channels_first else ""
        raise ImageError(
            index, source, "invalid_array", f"expected an HxW or HxWxC array with C in (1, 3, 4){hint}"
        )
    if array.size == 0:
        raise ImageError(index, source, "invalid_array", "the array is empty")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype.kind == "f":
        pixels = float_to_uint8(array, index, source)
    elif array.dtype == np.uint16:
        pixels = sixteen_bit_to_uint8(array)
    else:
        raise ImageError(
            index,
            source,
            "invalid_array",
            f"dtype {array.dtype} is not supported; use uint8, uint16 or float in [0, 1]",
        )
    mode = _ARRAY_MODES[pixels.shape[2]]
    return Image.fromarray(np.ascontiguousarray(pixels if mode != "L" else pixels[:, :, 0]), mode)


def float_to_uint8(array: np.ndarray, index: int, source: str) -> np.ndarray:
    """Floats are intensities in [0, 1]; any other range is ambiguous ([0, 255]? [0, 65535]? HDR?) and refused.
    Rounding from a resize or a colour conversion (1.0000001, -1e-9) is within ``FLOAT_TOLERANCE`` and clipped.
    NaN and infinity are no intensity at all: refused first, counted and located, so the range is not
    reported as what is wrong."""
    finite = np.isfinite(array)
    if not finite.all():
        raise ImageError(index, source, "invalid_array", _non_finite(array, finite))
    if array.min() < -FLOAT_TOLERANCE or array.max() > 1 + FLOAT_TOLERANCE:
        raise ImageError(
            index,
            source,
            "ambiguous",
            f"float pixels must lie in [0, 1] (these span [{float(array.min()):g}, {float(array.max()):g}]); "
            "scale them to [0, 1] or convert the image to 8 or 16 bits",
        )
    return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)


def _non_finite(array: np.ndarray, finite: np.ndarray) -> str:
    """How many pixel values are NaN, +inf or -inf, and where the first is (row, column)."""
    counts = {
        "NaN": np.isnan(array).sum(),
        "+inf": np.isposinf(array).sum(),
        "-inf": np.isneginf(array).sum(),
    }
    found = [(name, count) for name, count in counts.items() if count]
    total, (row, column) = int((~finite).sum()), np.argwhere(~finite)[0][:2]
    what = (
        found[0][0]
        if len(found) == 1
        else "NaN or infinite (" + ", ".join(f"{c:,} {n}" for n, c in found) + ")"
    )
    return (
        f"{total:,} of {array.size:,} pixel values {'is' if total == 1 else 'are'} {what}, the first at row "
        f"{row}, column {column}; float pixels must be numbers in [0, 1]: replace them (np.nan_to_num) or fix "
        "what produced them"
    )


def sixteen_bit_to_uint8(array: np.ndarray) -> np.ndarray:
    return np.round(np.clip(array.astype(np.float64), 0, 65535) / 257).astype(np.uint8)
