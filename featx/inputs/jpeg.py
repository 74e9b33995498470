"""JPEGs decoded on the network's device: nvJPEG through ``torchvision.io.decode_jpeg`` on a GPU, in
batches, where the CPU decoders would bound the job (15 cores decode about a quarter of what an H200 runs
through ResNet-50).

Only what the device decodes exactly as the CPU path would goes there: a whole baseline or progressive
JPEG in RGB or greyscale, with no EXIF rotation (nvJPEG does not apply it), within the pixel bounds.
Everything else (other formats, CMYK, rotated, truncated, oversized) stays on the CPU path, which names
its failures; a JPEG the device fails on goes back to it too, one by one.
"""

from __future__ import annotations

import io
import warnings

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from featx.inputs.images import resized_size

_ORIENTATION = 0x0112  # EXIF tag
_END_OF_IMAGE = b"\xff\xd9"


def device_decodable(content: object, max_pixels: int, resize: int) -> bool:
    """Whether ``content`` (what a worker read) is a JPEG the device decodes as the CPU path would.
    Reads the header only (PIL opens lazily), so a worker spends microseconds, not a decode."""
    if not isinstance(content, bytes) or not content.rstrip(b"\0").endswith(_END_OF_IMAGE):
        return False  # not bytes, not a JPEG, or truncated: the CPU path decides and names it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(content))
            if opened.format != "JPEG" or opened.mode not in ("RGB", "L"):
                return False
            rotated = opened.getexif().get(_ORIENTATION, 1) != 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    width, height = opened.size
    new_width, new_height = resized_size(width, height, resize) if width and height else (0, 0)
    return not rotated and 0 < width * height <= max_pixels and new_width * new_height <= max_pixels


def decode_on_device(contents: list[bytes], device: torch.device) -> list[torch.Tensor | None]:
    """Each JPEG as a ``3 x H x W`` uint8 RGB tensor on ``device`` (None where the device cannot decode
    it). One batched call; if it fails, each image is tried alone, so one bad file costs only itself."""
    tensors = [torch.frombuffer(bytearray(content), dtype=torch.uint8) for content in contents]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec (not a featx dependency)
        warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            decoded: list[torch.Tensor | None] = []
            for tensor in tensors:
                try:
                    decoded.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    decoded.append(None)
            return decoded
