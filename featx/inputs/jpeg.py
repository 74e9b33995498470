"""JPEGs decoded on the network's device: nvJPEG through ``torchvision.io.decode_jpeg`` on a GPU, in
batches, where the CPU decoders would bound the job (15 cores decode about a quarter of what an H200 runs
through ResNet-50).

Only what the device decodes close to the CPU path goes there: a whole baseline or progressive JPEG,
colour or greyscale, with no EXIF rotation (nvJPEG does not apply it), at least as large as the resize
(a JPEG the resize enlarges enlarges nvJPEG's differences too: on an H200, EfficientNet-Lite0 features of
60x50 and 120x90 photos fell to cosine 0.90 and 0.99 of the CPU's, against 0.9989-0.9998 at 500x375 and
1000x750), within the pixel bounds. Everything else (other formats, CMYK, rotated, small, truncated,
oversized) stays on the CPU path, which names its failures; a JPEG the device fails on goes back to it
too, one by one.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_jpeg

from featx.inputs.bounds import pillow_allows

_ORIENTATION = 0x0112  # EXIF tag
_END_OF_IMAGE = b"\xff\xd9"


def device_decodable(content: object, max_pixels: int, resize: int) -> bool:
    """Whether ``content`` (what a worker read) is a JPEG the device decodes close to the CPU path.
    Reads the header only (PIL opens lazily), so a worker spends microseconds, not a decode."""
    if not isinstance(content, bytes) or not content.rstrip(b"\0").endswith(_END_OF_IMAGE):
        return False  # not bytes, not a JPEG, or truncated: the CPU path decides and names it
    try:
        with warnings.catch_warnings(), pillow_allows(max_pixels):
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(content))
            if opened.format != "JPEG" or opened.mode not in ("RGB", "L"):
                return False
            rotated = opened.getexif().get(_ORIENTATION, 1) != 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    width, height = opened.size  # no smaller than the resize: resizing shrinks it, within max_pixels
    return not rotated and min(width, height) >= resize and width * height <= max_pixels


def decode_on_device(
    contents: Sequence[bytes | torch.Tensor], device: torch.device
) -> list[torch.Tensor | None]:
    """Each JPEG (bytes, or a 1-D uint8 CPU tensor of them) as a ``3 x H x W`` uint8 RGB tensor on
    ``device`` (None where the device cannot decode it). One batched call; if it fails, each image is
    tried alone, so one bad file costs only itself.

    On a GPU the output is ordered before the caller's later work by an event, not a host wait. Safety
    comes from lifetimes: torchvision's CUDA decoder writes at call time, whatever the stream order
    (pytorch/vision#9606), into blocks it takes from the caching allocator. It runs on a stream of its
    own, whose pool holds only its own earlier outputs, each marked as used by its readers' streams
    (``record_stream``): the allocator hands such a block out again only after those streams' events
    have passed, so the decoder never writes into memory that queued kernels still read.
    """
    tensors = [
        content
        if isinstance(content, torch.Tensor)
        else torch.frombuffer(bytearray(content), dtype=torch.uint8)
        for content in contents
    ]
    if device.type != "cuda":
        return _decode(tensors, device)
    caller = torch.cuda.current_stream(device)
    decoding = _decoding_stream(device)
    with torch.cuda.stream(decoding):
        decoded = _decode(tensors, device)
    caller.wait_stream(decoding)
    for image in decoded:
        if image is not None:
            image.record_stream(caller)
    return decoded


def _decoding_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream nvJPEG's outputs are allocated on, one a device (the job's decoding thread is its one user)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DECODING_STREAMS:
        _DECODING_STREAMS[index] = torch.cuda.Stream(index)
    return _DECODING_STREAMS[index]


_DECODING_STREAMS: dict[int, torch.cuda.Stream] = {}


def _decode(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
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
