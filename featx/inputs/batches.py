"""What users pass as X, made a list of single images: sequences, pandas columns, numpy stacks, and
PyTorch tensors in torchvision's layout (``C x H x W``, or ``N x C x H x W`` for a batch), which become
numpy's ``H x W x C`` arrays, so a tensor and the same pixels as an array get the same vector and key.
A tensor that is no such image (meta, sparse, nested, another dtype or layout) becomes its own row's
failure, named as the tensor it was, so one bad element never costs the good ones.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image

from featx.errors import ParameterError
from featx.inputs.arrays import Converted
from featx.inputs.images import ImageInput

_CHANNELS = (1, 3, 4)


def as_image_list(images: Any) -> list[ImageInput]:
    """Normalise what users pass as X into a list of single images.

    Accepts a list/tuple of images, a pandas Series or one-column DataFrame of them, a 1-D object array,
    a numeric stack of images shaped (n, H, W) or (n, H, W, C), or a tensor shaped (n, C, H, W).
    """
    if isinstance(images, (str, os.PathLike, bytes, Image.Image)):
        raise TypeError(
            f"X must be a sequence of images, got a single {type(images).__name__}; wrap it in a list"
        )
    if isinstance(images, Iterator):
        # fit() would use it up and transform() would see nothing: (0, d) features for n images
        raise ParameterError(
            f"X is a {type(images).__name__}, which can be read only once; pass a list "
            "(e.g. list(X)) so that fit and transform see the same images"
        )
    if isinstance(images, Mapping):  # iterating it would give its keys
        raise ParameterError(f"X is a {type(images).__name__}; pass a list of images, e.g. list(X.values())")
    if hasattr(images, "columns") and hasattr(images, "iloc"):  # DataFrame
        if images.shape[1] != 1:
            raise ParameterError(
                f"X is a DataFrame with {images.shape[1]} columns {list(images.columns)}; "
                "pass one column of images (paths, bytes, PIL images or arrays)"
            )
        return [_from_tensor(image) for image in images.iloc[:, 0]]
    if _is_tensor(images):
        return _tensor_batch(images)
    if isinstance(images, np.ndarray):
        if images.dtype == object or images.dtype.kind in "US":
            flat = images.ravel() if images.ndim <= 1 or images.shape[-1] == 1 else images
            return [_from_tensor(image) for image in flat]
        if images.ndim == 3 and images.shape[-1] in (3, 4):
            raise ParameterError(
                f"X is one array of shape {images.shape}: one HxWx{images.shape[-1]} image or "
                f"{images.shape[0]} greyscale images {images.shape[1]} pixels wide? Pass [image] for one "
                "image, or a 4-D (n, H, W, C) array or a list of arrays for a batch"
            )
        if images.ndim in (3, 4):
            return list(images)
        raise ParameterError(
            f"X is a numeric array of shape {images.shape}; featx expects a sequence of images: "
            "paths, bytes, PIL images, or a stack of arrays shaped (n, H, W) or (n, H, W, C)"
        )
    return [_from_tensor(image) for image in images]


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only where torch was imported
    return torch is not None and isinstance(value, torch.Tensor)


def _from_tensor(image: Any) -> Any:
    """One image as a tensor (C x H x W, or H x W) -> numpy's H x W x C, named as the tensor it was;
    a tensor that is no image (meta, sparse, nested, another layout or dtype) -> its row's failure.
    Anything else as it is."""
    if not _is_tensor(image):
        return image
    name = _tensor_name(image)
    problem = _unusable(image) or _not_an_image(image)
    if problem:
        return Converted(name, reason=problem)
    try:
        array = _to_numpy(image)
    except (TypeError, RuntimeError) as error:  # a tensor subclass or layout numpy cannot hold
        return Converted(name, reason=f"cannot be read as pixels ({str(error).splitlines()[0]})")
    return Converted(name, np.moveaxis(array, 0, -1) if array.ndim == 3 else array)


def _tensor_batch(tensor: Any) -> list[Any]:
    """A batch tensor's images, each converted (or failed) alone; a nested tensor's images of any size."""
    if tensor.is_nested:
        return [_from_tensor(image) for image in tensor.unbind()]
    problem = _unusable(tensor, "X")
    if problem:
        raise ParameterError(f"X is {problem}")
    if tensor.ndim == 4 and tensor.shape[1] not in _CHANNELS and tensor.shape[-1] in _CHANNELS:
        raise ParameterError(
            f"X is a tensor of shape {tuple(tensor.shape)}, channels-last (n, H, W, C); featx takes "
            "(n, C, H, W): pass X.permute(0, 3, 1, 2)"
        )
    if tensor.ndim == 4:
        return [_from_tensor(image) for image in tensor]
    shape = tuple(tensor.shape)
    if tensor.ndim == 3:
        raise ParameterError(
            f"X is one tensor of shape {shape}: one CxHxW image? Pass [image] for one image, or a 4-D "
            "(n, C, H, W) tensor or a list of tensors for a batch"
        )
    raise ParameterError(
        f"X is a tensor of shape {shape}; featx takes a batch of images as an (n, C, H, W) tensor"
    )


def _tensor_name(tensor: Any) -> str:
    if tensor.is_nested:
        return f"<nested tensor of {tensor.size(0)}>"
    kind = "meta " if tensor.is_meta else "" if tensor.layout == sys.modules["torch"].strided else "sparse "
    return f"<{str(tensor.dtype).removeprefix('torch.')} {kind}tensor {'x'.join(map(str, tensor.shape)) or 'scalar'}>"


def _unusable(tensor: Any, name: str = "tensor") -> str | None:
    """Why a tensor holds no pixels numpy can read, saying what to pass instead; None if it does."""
    torch = sys.modules["torch"]
    if tensor.is_nested:
        return f"a nested tensor of {tensor.size(0)} tensors, not one image; pass list({name}.unbind())"
    if tensor.is_meta:
        return "a meta tensor: it has a shape but no data; pass a tensor that holds the pixels"
    if tensor.layout != torch.strided:
        return f"a sparse tensor ({tensor.layout}); pass {name}.to_dense()"
    if tensor.is_quantized:
        return f"a quantized tensor ({tensor.dtype}); pass {name}.dequantize()"
    return None


def _not_an_image(tensor: Any) -> str | None:
    """Why a tensor's dtype or shape is not one image in torchvision's layout, in the tensor's own axes."""
    torch, shape = sys.modules["torch"], tuple(tensor.shape)
    if not (tensor.dtype.is_floating_point or tensor.dtype in (torch.uint8, torch.uint16)):
        return f"dtype {tensor.dtype} is not supported; use uint8, uint16 or float in [0, 1]"
    if tensor.ndim == 3 and shape[0] not in _CHANNELS and shape[-1] in _CHANNELS:
        return (
            f"shape {shape} is channels-last (HxWxC), but a tensor image is CxHxW; pass "
            "tensor.permute(2, 0, 1), or tensor.numpy() as an HxWxC array"
        )
    if tensor.ndim not in (2, 3) or (tensor.ndim == 3 and shape[0] not in _CHANNELS):
        return f"shape {shape} is not an image: expected a CxHxW tensor with C in (1, 3, 4), or HxW"
    if tensor.numel() == 0:
        return f"the tensor is empty (shape {shape})"
    return None


def _to_numpy(tensor: Any) -> np.ndarray:
    """The tensor's values on the host; float dtypes numpy lacks (bfloat16, float8) as float32, exactly."""
    torch = sys.modules["torch"]
    tensor = tensor.detach().cpu().resolve_conj().resolve_neg()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float16, torch.float32, torch.float64):
        tensor = tensor.float()
    return tensor.numpy()
