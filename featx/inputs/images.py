"""Images in, RGB out: accepted input types, content keys, and decoding with named failures.

Every failure is an :class:`ImageError` that carries the input's index, a description of it (the path for
files), a short machine-readable ``kind`` and a human-readable reason, so each door can apply its policy.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from featx.errors import ImageError
from featx.inputs import sources
from featx.inputs.arrays import Converted, array_image, float_to_uint8, sixteen_bit_to_uint8
from featx.inputs.bounds import (
    MAX_BYTES,
    MAX_PIXELS,
    byte_bound,
    check_size,
    pillow_allows,
    pillow_refusal,
    refuse_over_max_bytes,
    resized_size,
)
from featx.inputs.remote import read_url

#: Reduced decoding keeps the decoded image's short side at least this many times the resize target: a
#: DCT reduction close to the target box-filters like a coarse resize (cosine 0.990 to full decoding with
#: real weights at 1/4 then 321 -> 256); with this margin the antialiased resize does the last step.
REDUCED_MARGIN = 2
ImageInput = Any  # str | os.PathLike | bytes | PIL.Image.Image | np.ndarray | Converted


def describe(image: ImageInput) -> str:
    """A short description of an input for messages and error files (the path, for files)."""
    if isinstance(image, Converted):
        return image.description
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray)):
        return f"<{len(image)} bytes>"
    if isinstance(image, Image.Image):
        return f"<PIL {image.mode} image {image.width}x{image.height}>"
    if isinstance(image, np.ndarray):
        return f"<{image.dtype} array {'x'.join(map(str, image.shape))}>"
    return f"<{type(image).__name__}>"


def read_content(
    image: ImageInput, index: int = 0, max_bytes: int = MAX_BYTES
) -> bytes | Image.Image | np.ndarray:
    """The one read of an input: a file's, URL's or tar member's bytes; in-memory inputs as they are.

    Engines read each input once, in their decoding workers, and both key and decode what this returns.
    Nothing is read past ``max_bytes`` (see :func:`byte_bound`): a larger input fails as ``too_large``.
    """
    if isinstance(image, str) and sources.is_url(image):
        return read_url(image, index, max_bytes)
    if isinstance(image, (str, os.PathLike)):
        with _open_file(image, index, max_bytes) as handle:
            content = handle.read(max_bytes + 1)
        refuse_over_max_bytes(len(content), index, os.fspath(image), max_bytes)
        return content
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (Image.Image, np.ndarray)):
        return image
    if isinstance(image, Converted):
        if image.pixels is None:
            raise ImageError(index, image.description, image.kind, image.reason)
        return image.pixels
    raise _unsupported_type(image, index)


def hash_content(content: bytes | Image.Image | np.ndarray) -> str:
    """sha256 of what :func:`read_content` returned: the bytes, or the pixels of PIL images and arrays."""
    digest = hashlib.sha256()
    if isinstance(content, Image.Image):
        digest.update(f"PIL:{content.mode}:{content.size}".encode())
        digest.update(content.tobytes())
    elif isinstance(content, np.ndarray):
        digest.update(f"array:{content.dtype.str}:{content.shape}".encode())
        digest.update(np.ascontiguousarray(content).tobytes())
    else:
        digest.update(content)
    return digest.hexdigest()


def content_key(image: ImageInput, index: int = 0) -> str:
    """sha256 of the image's content: the file's bytes for paths and bytes, the pixels for PIL and arrays.

    The same file keyed as a path or as its bytes gets the same key, wherever it lives and whatever it is
    called, so renamed or copied files hit the cache.
    """
    return hash_content(read_content(image, index))


def load_rgb(
    image: ImageInput,
    index: int = 0,
    max_pixels: int = MAX_PIXELS,
    resize: int | None = None,
    reduced: bool = False,
    source: str | None = None,
) -> Image.Image:
    """Decode any accepted input into an 8-bit RGB PIL image, EXIF orientation applied.

    An image with more than ``max_pixels`` pixels, or one that would have more once its short side is
    resized to ``resize``, is refused before it is decoded or resized (a 1 x 100,000 strip is small on
    disk but 25 gigapixels at a short side of 256). With ``reduced`` and ``resize``, a JPEG at least
    ``2 * REDUCED_MARGIN`` times the size the resize needs is decoded at a reduced scale (libjpeg's DCT
    scaling, 1/2 to 1/8), never below ``REDUCED_MARGIN`` times that size. ``source`` names the input in errors
    where ``image`` is content already read (see :func:`read_content`).
    """
    source = source or describe(image)
    content = read_content(image, index, byte_bound(max_pixels))
    if isinstance(content, np.ndarray):
        content = array_image(content, index, source)
    if isinstance(content, Image.Image):
        check_size(content.width, content.height, index, source, max_pixels, resize)
        return _to_rgb(content, index, source)
    if not content:
        raise ImageError(index, source, "empty", "the file is empty (0 bytes)")
    return _decode(content, index, source, max_pixels, resize, reduced)


def _decode(
    data: bytes, index: int, source: str, max_pixels: int, resize: int | None, reduced: bool = False
) -> Image.Image:
    try:
        with warnings.catch_warnings(), pillow_allows(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
            check_size(opened.width, opened.height, index, source, max_pixels, resize)
            if reduced and resize is not None and opened.format == "JPEG":
                # draft() picks the largest DCT scale whose output is still at least this size in both sides
                wanted = resized_size(opened.width, opened.height, REDUCED_MARGIN * resize)
                opened.draft(opened.mode, wanted)
            opened.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise pillow_refusal(error, index, source, max_pixels) from None
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
        if image.mode == "F":
            return Image.fromarray(float_to_uint8(np.asarray(image), index, source), "L").convert("RGB")
        if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            return Image.fromarray(sixteen_bit_to_uint8(np.asarray(image)), "L").convert("RGB")
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert(
                "RGB"
            )
        return image if image.mode == "RGB" else image.convert("RGB")
    except ImageError:
        raise
    except (OSError, ValueError) as error:
        raise ImageError(
            index, source, "unsupported_mode", f"cannot convert mode {image.mode} to RGB: {error}"
        ) from None


def _open_file(path: str | os.PathLike, index: int, max_bytes: int):
    source = os.fspath(path)
    if not source.strip():
        raise ImageError(index, source, "missing", "the path is blank (an empty manifest cell?)")
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):  # a FIFO or device named .png would block a reader forever
            raise ImageError(
                index, source, "not_a_file", "not a regular file (a folder, FIFO, socket or device)"
            )
        refuse_over_max_bytes(status.st_size, index, source, max_bytes)  # unread: its size says it all
        return open(path, "rb")
    except FileNotFoundError:
        raise ImageError(index, source, "missing", "no such file") from None
    except PermissionError:
        raise ImageError(
            index, source, "permission", "permission denied; check the file's read permission"
        ) from None
    except OSError as error:
        raise ImageError(index, source, "unreadable", str(error)) from None


def _unsupported_type(image: Any, index: int) -> ImageError:
    if image is None or (isinstance(image, float) and np.isnan(image)):  # a gap in a pandas column
        return ImageError(index, "<missing value>", "missing", "None or NaN where an image belongs")
    return ImageError(
        index,
        describe(image),
        "unsupported_type",
        f"{type(image).__name__} is not an image; pass a path, bytes, a PIL image, an HxW / HxWxC array "
        "or a CxHxW tensor",
    )
