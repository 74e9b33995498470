"""What users pass as X, made a list of single images: sequences, pandas columns, numpy stacks, and
PyTorch tensors in torchvision's layout (``C x H x W``, or ``N x C x H x W`` for a batch), which become
numpy's ``H x W x C`` arrays, so a tensor and the same pixels as an array get the same vector and key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from PIL import Image

from featx.errors import ParameterError
from featx.inputs.images import ImageInput


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
    """One image as a tensor (C x H x W, or H x W) -> numpy's H x W x C; anything else as it is."""
    if not _is_tensor(image):
        return image
    array = image.detach().cpu().numpy()
    return np.moveaxis(array, 0, -1) if array.ndim == 3 else array


def _tensor_batch(tensor: Any) -> list[np.ndarray]:
    if tensor.ndim == 4:
        return list(np.moveaxis(tensor.detach().cpu().numpy(), 1, -1))
    shape = tuple(tensor.shape)
    if tensor.ndim == 3:
        raise ParameterError(
            f"X is one tensor of shape {shape}: one CxHxW image? Pass [image] for one image, or a 4-D "
            "(n, C, H, W) tensor or a list of tensors for a batch"
        )
    raise ParameterError(
        f"X is a tensor of shape {shape}; featx takes a batch of images as an (n, C, H, W) tensor"
    )
