"""Input types, colour modes, EXIF orientation, and bad inputs that name themselves."""

import io
import os

import numpy as np
import pandas as pd
import pytest
from conftest import encode, photo
from PIL import Image

from featx import ImageError, extract_features
from featx.inputs.batches import as_image_list
from featx.inputs.images import content_key, load_rgb


def tiny_features(images, **kwargs):
    return extract_features(images, "tiny", weights=None, precision="fp32", **kwargs)


def test_the_same_image_as_path_bytes_pil_and_arrays_gives_the_same_vector(tmp_path):
    pixels = photo(3)
    path = tmp_path / "x.png"
    path.write_bytes(encode(pixels))
    as_float = pixels.astype(np.float64) / 255
    inputs = [str(path), path, path.read_bytes(), Image.open(path), pixels, as_float]
    X = tiny_features(inputs)
    # fp32 CPU kernels may differ in the last bit with the batch's size: tolerance 1e-5 relative
    np.testing.assert_allclose(X, np.repeat(X[:1], len(inputs), axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tiny_features(pd.Series(inputs)), X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tiny_features(pd.DataFrame({"image": inputs})), X, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tiny_features(np.stack([pixels, pixels])), X[:2], rtol=1e-5, atol=1e-6)


def test_a_path_and_its_bytes_share_one_content_key(tmp_path):
    data = encode(photo(1))
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "renamed.png").write_bytes(data)
    assert content_key(tmp_path / "a.png") == content_key(data) == content_key(str(tmp_path / "renamed.png"))
    assert content_key(data) != content_key(encode(photo(2)))


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "I;16", "1"])
def test_every_mode_becomes_8bit_rgb_of_the_same_size(mode):
    rgb = Image.fromarray(photo(0))
    image = rgb.convert("L").convert(mode) if mode in ("I;16", "1") else rgb.convert(mode)
    out = load_rgb(encode_pil(image, "TIFF" if mode == "CMYK" else "PNG"))
    assert (out.mode, out.size) == ("RGB", rgb.size)


def test_16bit_grey_is_scaled_not_clipped():
    ramp = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096 + 4095
    out = np.asarray(load_rgb(encode_pil(Image.fromarray(ramp), "PNG")))
    assert out[..., 0].min() == 16 and out[..., 0].max() == 255  # 4095/257 ~ 16, 65535/257 = 255


def test_transparent_pixels_are_composited_on_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    out = np.asarray(load_rgb(encode(rgba)))
    assert (out == 255).all()


def test_exif_orientation_is_applied():
    pixels = photo(5, size=(20, 40))  # 20 high, 40 wide
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    assert load_rgb(buffer.getvalue()).size == (20, 40)  # (width, height) after rotation


def encode_pil(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def bad_inputs(tmp_path):
    good = encode(photo(0), "JPEG")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image")
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "locked.png").write_bytes(good)
    os.chmod(tmp_path / "locked.png", 0)
    return {
        "missing": str(tmp_path / "missing.png"),
        "empty": str(tmp_path / "empty.png"),
        "not_an_image": str(tmp_path / "text.jpg"),
        "truncated": str(tmp_path / "truncated.jpg"),
        "permission": str(tmp_path / "locked.png"),
        "invalid_array": np.zeros((4, 4, 2), dtype=np.uint8),  # two channels
        "ambiguous": np.full((4, 4), 2.0),  # float pixels outside [0, 1]
        "unsupported_type": 42,
    }


def deny_as_root(monkeypatch, path):
    """Root reads files whatever their mode: make opening this one path fail as it would for a user."""
    if os.geteuid() != 0:
        return
    real_open = open

    def guarded_open(file, *args, **kwargs):
        if str(file) == path:
            raise PermissionError(13, "Permission denied", path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("featx.inputs.images.open", guarded_open, raising=False)


def test_each_bad_input_raises_an_error_naming_its_index_path_and_kind(tmp_path, monkeypatch):
    inputs = bad_inputs(tmp_path)
    deny_as_root(monkeypatch, inputs["permission"])
    for kind, bad in inputs.items():
        with pytest.raises(ImageError) as caught:
            tiny_features([photo(0), bad])
        assert (caught.value.index, caught.value.kind) == (1, kind)
        assert "input 1" in str(caught.value)
        if isinstance(bad, str):
            assert bad in str(caught.value)


def test_bad_inputs_become_nan_rows_and_named_errors_with_on_error_nan(tmp_path, monkeypatch):
    bad = bad_inputs(tmp_path)
    deny_as_root(monkeypatch, bad["permission"])
    images = [photo(0), *bad.values(), photo(1)]
    X = tiny_features(images, on_error="nan")
    failed = np.isnan(X).all(axis=1)
    assert failed.tolist() == [False, *[True] * len(bad), False]
    assert np.isfinite(X[~failed]).all()


def test_decompression_bombs_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr("featx.inputs.images.MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="decompression_bomb"):
        load_rgb(encode(photo(0, size=(20, 20))), max_pixels=100)


def test_a_single_image_or_a_feature_matrix_is_refused_as_x():
    with pytest.raises(TypeError, match="wrap it in a list"):
        as_image_list("one.png")
    with pytest.raises(ValueError, match="sequence of images"):
        as_image_list(np.zeros((10, 5)))
    with pytest.raises(ValueError, match="one column"):
        as_image_list(pd.DataFrame({"a": [1], "b": [2]}))
