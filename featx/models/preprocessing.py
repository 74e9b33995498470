"""Input preprocessing as data: the resize, crop and normalisation a model's weights were trained with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from featx.errors import ParameterError
from featx.inputs.images import MAX_PIXELS, REDUCED_MARGIN, load_rgb
from featx.options import CROP_MODES, PIXEL_DECODINGS, check

_INTERPOLATIONS = {
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
    "nearest": v2.InterpolationMode.NEAREST,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Resize the short side to ``resize``, centre-crop ``crop`` x ``crop``, scale to [0, 1], normalise.

    ``crop_mode="squash"`` (some timm models) resizes both sides to ``resize`` instead, ignoring the
    aspect ratio, before the centre crop.

    This is the evaluation transform of torchvision's ImageNet weights and of timm's ``pretrained_cfg``;
    keeping it as plain data makes it part of the cache fingerprint.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    decoding: str = "full"
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        check("decoding", self.decoding, PIXEL_DECODINGS, "Preprocessing")
        check("crop_mode", self.crop_mode, CROP_MODES, "Preprocessing")
        if self.interpolation not in _INTERPOLATIONS:
            raise ParameterError(
                f"interpolation={self.interpolation!r} is not supported; use one of {sorted(_INTERPOLATIONS)}"
            )

    @classmethod
    def from_torchvision(cls, transforms: Any) -> Preprocessing:
        """Read torchvision's ``ImageClassification`` preset (what ``weights.transforms()`` returns)."""
        return cls(
            resize=int(transforms.resize_size[0]),
            crop=int(transforms.crop_size[0]),
            mean=tuple(float(m) for m in transforms.mean),
            std=tuple(float(s) for s in transforms.std),
            interpolation=transforms.interpolation.value,
        )

    def as_dict(self) -> dict[str, Any]:
        """The fields that change pixels, for the fingerprint. ``decoding="full"`` and ``crop_mode="center"``
        are left out, so caches written before those fields existed keep their namespace; CPU decoding
        names how it resizes (the PIL image, as the peers' transforms do), which set it apart from the
        uint8 tensor resize of earlier versions, and reduced decoding its DCT scale rule."""
        fields = asdict(self)
        for name, old_value in (("decoding", "full"), ("crop_mode", "center")):
            if fields[name] == old_value:
                del fields[name]
        if self.decoding != "device":
            fields["resize_on"] = "PIL image"
        if self.decoding == "reduced":
            fields["dct_scale"] = f"decoded short side >= {REDUCED_MARGIN} x resize"
        return fields

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """The callable that turns an RGB PIL image into a normalised ``3 x crop x crop`` float tensor."""
        return v2.Compose(
            [
                self.geometry(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(self.mean), std=list(self.std)),
            ]
        )

    def decode(
        self, image: Any, index: int = 0, max_pixels: int = MAX_PIXELS, source: str | None = None
    ) -> torch.Tensor:
        """Any accepted input -> ``3 x crop x crop`` uint8 tensor (what decoding workers produce).

        Images over ``max_pixels``, decoded or once resized, are refused (an [`ImageError`][featx.errors.ImageError]) before
        anything that size is allocated. ``source`` names the input where ``image`` is its bytes, read.
        """
        reduced = self.decoding == "reduced"
        return self.geometry()(
            load_rgb(image, index, max_pixels, resize=self.resize, reduced=reduced, source=source)
        )

    def geometry(self) -> Callable[[Image.Image], torch.Tensor]:
        """Resize and crop only: an RGB PIL image -> ``3 x crop x crop`` uint8 tensor.

        The engine's decoding workers stop here: a uint8 image is a quarter of the bytes to pass between
        processes (and to the GPU); the network scales and normalises whole batches. The PIL image is
        resized and cropped by PIL, as torchvision's ``weights.transforms()`` and timm's
        ``create_transform`` do, so the crop is theirs to the last level; the CPU fallback of device
        decoding resizes the tensor, as the device does.
        """
        if self.decoding == "device":
            return v2.Compose([v2.PILToTensor(), self.resize_crop()])
        return v2.Compose([self.resize_crop(), v2.PILToTensor()])

    def resize_crop(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A ``3 x H x W`` uint8 tensor on any device, or a PIL image -> ``3 x crop x crop`` of the same
        kind (torchvision's v2 transforms resize a PIL image with PIL)."""
        return v2.Compose(
            [
                v2.Resize(
                    (self.resize, self.resize) if self.crop_mode == "squash" else self.resize,
                    interpolation=_INTERPOLATIONS[self.interpolation],
                    antialias=True,
                ),
                v2.CenterCrop(self.crop),
            ]
        )

    def crop_batch(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Images of any sizes (``3 x H x W`` uint8, on one device) -> one ``B x 3 x crop x crop`` batch,
        in order. Images of one size are resized together: photos from one camera cost one call; mixed
        sizes are put back in order by an index on the device (a host index would wait for the device)."""
        geometry = self.resize_crop()
        by_size: dict[tuple[int, ...], list[int]] = {}
        for position, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(position)
        if len(by_size) == 1:
            return geometry(torch.stack(images))
        groups = [geometry(torch.stack([images[p] for p in positions])) for positions in by_size.values()]
        order = torch.tensor([p for positions in by_size.values() for p in positions])
        where = torch.empty_like(order)
        where[order] = torch.arange(len(order))
        return torch.cat(groups).index_select(0, device_index(where, images[0].device))


def device_index(rows: torch.Tensor | list[int], device: torch.device) -> torch.Tensor:
    """Row numbers as an int64 tensor on ``device``, sent from pinned memory so that the host does not wait."""
    rows = torch.as_tensor(rows, dtype=torch.int64)
    if device.type != "cuda":
        return rows
    return rows.pin_memory().to(device, non_blocking=True)


class Normalise(torch.nn.Module):
    """A uint8 batch (B, 3, H, W) -> float, scaled to [0, 1] and normalised with ``mean`` / ``std``.

    Runs on the whole batch on the device (a tenth of the CPU cost of doing it per image in the
    workers); the frozen extractor and fine-tuning both put it in front of the network.
    """

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))
        self.register_buffer("offset", -torch.tensor(preprocessing.mean).view(1, 3, 1, 1) / std)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        # one pass over a fresh float copy, in place (x * scale + offset): on 2 CPU cores 19 ms a batch of
        # 64 at 224 px, against 42 ms for the three passes and two allocations of ``x * scale - shift``
        pixels = batch.contiguous(memory_format=torch.channels_last).to(torch.float32, copy=True)
        return torch.addcmul(self.offset, pixels, self.scale, out=pixels)
