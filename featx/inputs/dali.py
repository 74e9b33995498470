"""JPEGs decoded, resized and cropped by NVIDIA DALI on the GPU (``decoding="dali"``, the ``featx[dali]`` extra).

DALI's mixed decoder runs on the GPU's hardware JPEG engine where there is one (A100, H100, H200), so
decoding does not take the SMs from the network, and its fused resize-and-crop reads the decoded image
once. Its resize is DALI's own (antialiased, like torchvision's, but not the same arithmetic), so
``decoding="dali"`` has its own fingerprint; its fidelity against the CPU path is measured by
``benchmarks/gpu.py``. Which JPEGs go to DALI is the rule of :func:`featx.inputs.jpeg.device_decodable`;
a JPEG DALI fails on goes back to the CPU path, one by one, as for ``decoding="device"``.

DALI owns its buffers (not torch's caching allocator), and each batch's output is copied into a torch
tensor on the caller's stream, so the hazard of pytorch/vision#9606 does not arise here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from featx.errors import ParameterError

_PIPELINES: dict[tuple, Any] = {}
_MAX_BATCH = 256


def available() -> bool:
    """Whether DALI is installed and a CUDA GPU is visible."""
    return importlib.util.find_spec("nvidia.dali") is not None and torch.cuda.is_available()


def require(device: torch.device) -> None:
    """Raise a one-line error where ``decoding="dali"`` cannot run."""
    if importlib.util.find_spec("nvidia.dali") is None:
        raise ParameterError(
            "decoding='dali' needs NVIDIA DALI: pip install 'featx[dali]' (nvidia-dali-cuda130), or use "
            "decoding 'device', 'auto', 'reduced' or 'full'"
        )
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ParameterError(
            f"decoding='dali' runs on a CUDA GPU only (here: {device}); use 'reduced' or 'full'"
        )


def decode_crop(
    contents: Sequence[bytes | torch.Tensor], preprocessing: Any, device: torch.device
) -> list[torch.Tensor | None]:
    """Each JPEG as a ``3 x crop x crop`` uint8 tensor on ``device``, resized and cropped by DALI (None
    where DALI fails on it). One batch a call (at most 256 a run of DALI's pipeline)."""
    out: list[torch.Tensor | None] = []
    for first in range(0, len(contents), _MAX_BATCH):
        chunk = [_as_array(c) for c in contents[first : first + _MAX_BATCH]]
        try:
            out += list(_run(chunk, preprocessing, device))
        except RuntimeError:  # one bad JPEG fails DALI's whole batch: try each alone
            for array in chunk:
                try:
                    out += list(_run([array], preprocessing, device))
                except RuntimeError:
                    out.append(None)
    return out


def _as_array(content: bytes | torch.Tensor) -> np.ndarray:
    if isinstance(content, torch.Tensor):
        return content.numpy()
    return np.frombuffer(content, dtype=np.uint8)


def _run(arrays: list[np.ndarray], preprocessing: Any, device: torch.device) -> torch.Tensor:
    from nvidia.dali.plugin.pytorch import feed_ndarray

    pipeline = _pipeline(preprocessing, device)
    pipeline.feed_input("jpegs", arrays)
    (images,) = pipeline.run()
    dense = images.as_tensor()  # every image is crop x crop: one dense N x 3 x crop x crop tensor
    batch = torch.empty(dense.shape(), dtype=torch.uint8, device=device)
    feed_ndarray(dense, batch, cuda_stream=torch.cuda.current_stream(device))
    return batch


def _pipeline(preprocessing: Any, device: torch.device) -> Any:
    """DALI's pipeline for this resize and crop, built once: bytes in, ``3 x crop x crop`` uint8 out."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (
        index,
        preprocessing.resize,
        preprocessing.crop,
        preprocessing.interpolation,
        preprocessing.crop_mode,
    )
    if key in _PIPELINES:
        return _PIPELINES[key]
    from nvidia.dali import fn, pipeline_def, types

    interpolation = {
        "bilinear": types.INTERP_LINEAR,
        "bicubic": types.INTERP_CUBIC,
        "nearest": types.INTERP_NN,
    }[preprocessing.interpolation]
    size = preprocessing.resize
    resize = (
        {"resize_x": size, "resize_y": size}
        if preprocessing.crop_mode == "squash"
        else {"resize_shorter": size}
    )

    @pipeline_def(
        batch_size=_MAX_BATCH, num_threads=4, device_id=index, exec_async=False, exec_pipelined=False
    )
    def decode_resize_crop():
        jpegs = fn.external_source(name="jpegs", dtype=types.UINT8)
        images = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
        images = fn.resize_crop_mirror(
            images,
            crop=(preprocessing.crop, preprocessing.crop),
            interp_type=interpolation,
            antialias=True,
            **resize,
        )
        return fn.transpose(images, perm=[2, 0, 1])  # HWC -> CHW, as torch's images

    pipeline = decode_resize_crop()
    pipeline.build()
    _PIPELINES[key] = pipeline
    return pipeline
