"""Images in, RGB out: accepted input types, content keys, and decoding with named failures.

Every failure is an :class:`ImageError` that carries the input's index, a description of it (the path for
files), a short machine-readable ``kind`` and a human-readable reason, so each door can apply its policy.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from featx.errors import ImageError, ParameterError

ImageInput = Any  # str | os.PathLike | bytes | PIL.Image.Image | np.ndarray

#: PIL's own decompression-bomb threshold (about 89 megapixels); larger images are refused, not decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def as_image_list(images: Any) -> list[ImageInput]:
    """Normalise what users pass as X into a list of single images.

    Accepts a list/tuple of images, a pandas Series or one-column DataFrame of them, a 1-D object array,
    or a numeric stack of images shaped (n, H, W) or (n, H, W, C).
    """
    if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
        raise TypeError(f"X must be a sequence of images, got a single {type(images).__name__}; wrap it in a list")
    if hasattr(images, "columns") and hasattr(images, "iloc"):  # DataFrame
        if images.shape[1] != 1:
            raise ParameterError(
                f"X is a DataFrame with {images.shape[1]} columns {list(images.columns)}; "
                "pass one column of images (paths, bytes, PIL images or arrays)"
            )
        return list(images.iloc[:, 0])
    if hasattr(images, "iloc"):  # Series
        return list(images)
    if isinstance(images, np.ndarray):
        if images.dtype == object or images.dtype.kind in "US":
            return list(images.ravel()) if images.ndim <= 1 or images.shape[-1] == 1 else list(images)
        if images.ndim in (3, 4):
            return list(images)
        raise ParameterError(
            f"X is a numeric array of shape {images.shape}; featx expects a sequence of images: "
            "paths, bytes, PIL images, or a stack of arrays shaped (n, H, W) or (n, H, W, C)"
        )
    return list(images)


def describe(image: ImageInput) -> str:
    """A short description of an input for messages and error files (the path, for files)."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    if isinstance(image, Image.Image):
        return f"<PIL {image.mode} image {image.width}x{image.height}>"
    if isinstance(image, np.ndarray):
        return f"<{image.dtype} array {'x'.join(map(str, image.shape))}>"
    return f"<{type(image).__name__}>"


def content_key(image: ImageInput, index: int = 0) -> str:
    """sha256 of the image's content: the file's bytes for paths and bytes, the pixels for PIL and arrays.

    The same file keyed as a path or as its bytes gets the same key, wherever it lives and whatever it is
    called, so renamed or copied files hit the cache.
    """
    digest = hashlib.sha256()
    if isinstance(image, (str, os.PathLike)):
        with _open_file(image, index) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif isinstance(image, (bytes, bytearray)):
        digest.update(image)
    elif isinstance(image, Image.Image):
        digest.update(f"PIL:{image.mode}:{image.size}".encode())
        digest.update(image.tobytes())
    elif isinstance(image, np.ndarray):
        digest.update(f"array:{image.dtype.str}:{image.shape}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
    else:
        raise _unsupported_type(image, index)
    return digest.hexdigest()


def load_rgb(image: ImageInput, index: int = 0, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode any accepted input into an 8-bit RGB PIL image, EXIF orientation applied."""
    source = describe(image)
    if isinstance(image, np.ndarray):
        return Image.fromarray(_array_to_uint8(image, index), "RGB")
    if isinstance(image, Image.Image):
        return _to_rgb(image, index, source)
    if isinstance(image, (str, os.PathLike)):
        with _open_file(image, index) as handle:
            data = handle.read()
    elif isinstance(image, (bytes, bytearray)):
        data = bytes(image)
    else:
        raise _unsupported_type(image, index)
    if not data:
        raise ImageError(index, source, "empty", "the file is empty (0 bytes)")
    return _decode(data, index, source, max_pixels)


def _decode(data: bytes, index: int, source: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
        if opened.width * opened.height > max_pixels:
            raise ImageError(
                index, source, "decompression_bomb",
                f"{opened.width}x{opened.height} pixels exceeds the limit of {max_pixels}; "
                "raise featx.images.MAX_PIXELS if the image is trusted",
            )
        opened.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(index, source, "decompression_bomb", str(error)) from None
    except UnidentifiedImageError:
        raise ImageError(index, source, "not_an_image", "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL raises these for damaged streams
        message = str(error).lower()
        kind = "truncated" if "truncated" in message or "broken data stream" in message else "not_an_image"
        raise ImageError(index, source, kind, f"could not decode: {error}") from None
    return _to_rgb(opened, index, source)


def _to_rgb(image: Image.Image, index: int, source: str) -> Image.Image:
    """EXIF-rotate, then bring any mode to RGB: alpha over white, 16-bit scaled, CMYK converted."""
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            return Image.fromarray(_array_to_uint8(np.asarray(image), index, high_bit_depth=True), "RGB")
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ImageError(index, source, "unsupported_mode", f"cannot convert mode {image.mode} to RGB: {error}") from None


def _array_to_uint8(array: np.ndarray, index: int, high_bit_depth: bool = False) -> np.ndarray:
    """HxW or HxWxC (C = 1, 3, 4) arrays: uint8 as is, uint16 / 16-bit scaled, floats must lie in [0, 1]."""
    source = describe(array)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[:, :, :3] if array.shape[2] == 4 else array
    elif array.ndim != 2:
        raise ImageError(index, source, "invalid_array", "expected an HxW or HxWxC array with C in (1, 3, 4)")
    if array.size == 0:
        raise ImageError(index, source, "invalid_array", "the array is empty")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype.kind == "f" and not high_bit_depth:
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageError(index, source, "invalid_array", "float arrays must hold values in [0, 1]")
        pixels = np.round(array * 255).astype(np.uint8)
    elif array.dtype.kind in "uif" and (array.dtype == np.uint16 or high_bit_depth):
        pixels = np.round(np.clip(array.astype(np.float64), 0, 65535) / 257).astype(np.uint8)
    else:
        raise ImageError(index, source, "invalid_array", f"dtype {array.dtype} is not supported; use uint8, uint16 or float in [0, 1]")
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        pixels = np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(pixels)


def _open_file(path: str | os.PathLike, index: int):
    source = os.fspath(path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ImageError(index, source, "missing", "no such file") from None
    except PermissionError:
        raise ImageError(index, source, "permission", "permission denied; check the file's read permission") from None
    except OSError as error:
        raise ImageError(index, source, "unreadable", str(error)) from None


def _unsupported_type(image: Any, index: int) -> ImageError:
    return ImageError(
        index, describe(image), "unsupported_type",
        f"{type(image).__name__} is not an image; pass a path, bytes, a PIL image or an HxW / HxWxC array",
    )
