"""How large an input may be: pixels decoded and resized (featx's bound and PIL's), and bytes read.

PIL refuses to open an image over twice ``Image.MAX_IMAGE_PIXELS`` (about 179 megapixels), a process-wide
value, before featx applies its own ``max_pixels``; so :func:`pillow_allows` raises PIL's bound (how PIL's
documentation says to change it) only as far as the largest ``max_pixels`` of the decodes in flight, and
puts it back when the last ends, so code beside featx sees PIL's own bound again.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

from PIL import Image

from featx.errors import ImageError

#: The default bound on an image's pixels, decoded and after resizing: PIL's own decompression-bomb
#: threshold (about 89 megapixels). Larger images are refused before anything that size is allocated.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: The most bytes one input may hold at the default pixel bound (1.4 GB): see :func:`byte_bound`.
MAX_BYTES = 16 * MAX_PIXELS


def byte_bound(max_pixels: int) -> int:
    """The most bytes one input may hold where images of up to ``max_pixels`` pixels are decoded: 16 bytes
    a pixel, an uncompressed float32 RGBA TIFF, the largest encoding of an image featx would decode (never
    below MAX_BYTES, room for metadata). A bigger input is refused unread, so that a worker's memory is
    bounded by what it may decode, not by what a folder holds."""
    return 16 * max(max_pixels, MAX_PIXELS)


def resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    """(width, height) after the short side is scaled to ``resize`` (torchvision's ``Resize(int)`` rule)."""
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def check_size(width: int, height: int, index: int, source: str, max_pixels: int, resize: int | None) -> None:
    """Refuse, from the header's size, an image over ``max_pixels`` decoded or once resized."""
    if width * height > max_pixels:
        raise ImageError(
            index,
            source,
            "decompression_bomb",
            f"{width}x{height} pixels exceeds the limit of {max_pixels:,}; "
            "raise max_pixels (--max-pixels) if the image is trusted",
        )
    if resize is not None and width and height:
        new_width, new_height = resized_size(width, height, resize)
        if new_width * new_height > max_pixels:
            raise ImageError(
                index,
                source,
                "too_large",
                f"{width}x{height} resized to a short side of {resize} is {new_width}x{new_height} "
                f"pixels, over the limit of {max_pixels:,}; crop the image, or raise max_pixels "
                "(--max-pixels) if the memory is there",
            )


def refuse_over_max_bytes(size: int, index: int, source: str, max_bytes: int) -> None:
    """A ``too_large`` error for an input of ``size`` bytes over ``max_bytes``."""
    if size > max_bytes:
        raise ImageError(
            index,
            source,
            "too_large",
            f"over {max_bytes / 1e9:.1f} GB, more than any image featx decodes (16 bytes a pixel at "
            f"{max_bytes // 16:,} pixels, the pixel bound); it was not read further",
        )


def pillow_refusal(
    error: Image.DecompressionBombError, index: int, source: str, max_pixels: int
) -> ImageError:
    """PIL refused before featx saw the size (over twice its bound, so over ``max_pixels``): say so in
    featx's terms, naming featx's bound, never PIL's."""
    pixels = re.search(r"\((\d+) pixels\)", str(error))
    size = f"{int(pixels[1]):,} pixels" if pixels else "the image"
    return ImageError(
        index,
        source,
        "decompression_bomb",
        f"{size} exceeds the limit of {max_pixels:,}; raise max_pixels (--max-pixels) if the image is trusted",
    )


_lock = threading.Lock()
_in_flight: list[int] = []  # max_pixels of the decodes that raised the bound
_pillows_own: int | None = None  # PIL's bound before the first of them, while any runs


@contextlib.contextmanager
def pillow_allows(max_pixels: int) -> Iterator[None]:
    """Within this block, PIL opens images of up to ``max_pixels`` pixels (and still refuses larger)."""
    global _pillows_own
    with _lock:
        own = _pillows_own if _in_flight else Image.MAX_IMAGE_PIXELS
        raised = own is not None and max_pixels > 2 * own  # PIL refuses above twice its bound
        if raised:
            _pillows_own = own
            _in_flight.append(max_pixels)
            Image.MAX_IMAGE_PIXELS = max(_in_flight) // 2 + 1
    try:
        yield
    finally:
        if raised:
            with _lock:
                _in_flight.remove(max_pixels)
                Image.MAX_IMAGE_PIXELS = max(_in_flight) // 2 + 1 if _in_flight else _pillows_own
