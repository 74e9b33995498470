"""Reduced-scale JPEG decoding (issue: speed on real photos): only where it pays, never below twice the
resize, faithful to full decoding, and never mixed with full decoding in the cache."""

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from featx import build_network
from featx.inputs.images import REDUCED_MARGIN, load_rgb, resized_size


def jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    """A real photo (scikit-learn's sample image) at this size, as a JPEG."""
    picture = Image.fromarray(load_sample_images().images[0]).resize((width, height), Image.BICUBIC)
    buffer = io.BytesIO()
    exif = picture.getexif()
    if orientation:
        exif[0x0112] = orientation
    picture.save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(4032, 3024), (1920, 1080), (513, 385), (1000, 3000), (600, 600)])
def test_reduced_decoding_never_yields_fewer_than_twice_the_pixels_the_resize_needs(size):
    data = jpeg(*size)
    reduced = load_rgb(data, resize=256, reduced=True)
    need = resized_size(*size, REDUCED_MARGIN * 256)
    assert reduced.size == size or (reduced.width >= need[0] and reduced.height >= need[1])
    if min(size) >= 2 * REDUCED_MARGIN * 256:  # at least twice that: a real reduction
        assert reduced.width < size[0] and reduced.height < size[1]
    else:
        assert reduced.size == size


def test_it_applies_to_large_jpegs_only_and_respects_exif_rotation():
    rotated = load_rgb(jpeg(4032, 3024, orientation=6), resize=256, reduced=True)
    assert rotated.height > rotated.width >= REDUCED_MARGIN * 256  # turned upright after the scaled decode
    buffer = io.BytesIO()
    Image.new("RGB", (2048, 1536), "red").save(buffer, "PNG")
    assert load_rgb(buffer.getvalue(), resize=256, reduced=True).size == (2048, 1536)  # PNG: always full
    assert load_rgb(jpeg(4032, 3024), resize=None, reduced=True).size == (4032, 3024)  # no resize: full


def test_the_decoding_mode_and_its_resize_are_in_the_fingerprint():
    full = build_network("tiny", weights=None, precision="fp32", decoding="full")
    reduced = build_network("tiny", weights=None, precision="fp32", decoding="reduced")
    assert full.fingerprint != reduced.fingerprint
    assert "decoding" not in full.fingerprint["preprocessing"]
    assert (
        full.fingerprint["preprocessing"]["resize_on"] == "PIL image"
    )  # not the old tensor resize's vectors
    assert reduced.fingerprint["preprocessing"]["decoding"] == "reduced"


@pytest.mark.slow
def test_reduced_decoding_keeps_cosine_above_0_998_on_real_photos_with_real_weights():
    photos = [jpeg(4032, 3024), jpeg(1920, 1080)]
    other = Image.fromarray(load_sample_images().images[1]).resize((4032, 3024), Image.BICUBIC)
    buffer = io.BytesIO()
    other.save(buffer, "JPEG", quality=90)
    photos.append(buffer.getvalue())
    network = build_network("efficientnet_lite0", precision="fp32", decoding="full")
    reduced_preprocessing = dataclasses.replace(network.preprocessing, decoding="reduced")
    full = network(torch.stack([network.preprocessing.decode(p) for p in photos]))
    reduced = network(torch.stack([reduced_preprocessing.decode(p) for p in photos]))
    cosine = (full * reduced).sum(1) / np.linalg.norm(full, axis=1) / np.linalg.norm(reduced, axis=1)
    assert cosine.min() >= 0.998, cosine
