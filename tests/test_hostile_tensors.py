"""Tensors as a hostile user passes them: each one that is no image fails its own row, named as the tensor it
was (its dtype and its own axes), while the good rows around it keep their vectors; non-finite pixels are
named as such."""

import numpy as np
import pytest
import torch
from conftest import assert_same_vectors, photo

from featx import ImageError, ParameterError, PretrainedFeatures


def tiny(**settings) -> PretrainedFeatures:
    return PretrainedFeatures("tiny", weights=None, precision="fp32", **settings)


GOOD = torch.from_numpy(photo(0)).permute(2, 0, 1)  # (3, H, W) uint8, torchvision's layout


def bad_tensors() -> dict[str, tuple[torch.Tensor, list[str]]]:
    """Tensors that hold no image numpy can read, with what their row's error must say."""
    pixels = GOOD.float() / 255
    quantized = torch.quantize_per_tensor(pixels, 1 / 255, 0, torch.quint8)
    return {
        "meta": (torch.empty(3, 40, 40, device="meta"), ["meta tensor", "no data"]),
        "sparse": (pixels.to_sparse(), ["sparse", "to_dense()"]),
        "sparse-csr": (pixels[0].to_sparse_csr(), ["sparse", "to_dense()"]),
        "nested": (torch.nested.nested_tensor([pixels, pixels]), ["nested", "unbind()"]),
        "quantized": (quantized, ["quantized", "dequantize()"]),
        "complex": (pixels.to(torch.complex64), ["complex64", "uint8, uint16 or float"]),
        "int8": (GOOD.to(torch.int8), ["int8", "uint8, uint16 or float"]),
        "bool": (GOOD > 128, ["bool", "uint8, uint16 or float"]),
        "channels-last": (GOOD.permute(1, 2, 0), ["channels-last (HxWxC)", "permute(2, 0, 1)"]),
        "empty": (torch.empty(3, 0, 40), ["empty", "(3, 0, 40)"]),
        "batch-in-a-list": (GOOD[None], ["(1, 3, 48, 40)", "CxHxW"]),
        "scalar": (torch.tensor(0.5), ["()", "CxHxW"]),
    }


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's nested / sparse CSR prototypes warn
@pytest.mark.parametrize("name", list(bad_tensors()))
def test_a_tensor_that_is_no_image_fails_its_own_row_and_the_good_rows_keep_their_vectors(name):
    bad, words = bad_tensors()[name]
    reference = tiny().fit_transform([GOOD, GOOD])
    extractor = tiny(on_error="nan")
    features = extractor.fit_transform([GOOD, bad, GOOD])
    assert_same_vectors(features[[0, 2]], reference)
    assert np.isnan(features[1]).all()
    (error,) = extractor.errors_
    assert (error.index, error.kind) == (1, "invalid_array"), error
    assert "tensor" in error.source and all(word in str(error) for word in words), error


def test_with_on_error_raise_a_bad_tensor_is_an_image_error_naming_its_index_not_a_torch_traceback():
    with pytest.raises(ImageError, match=r"input 1 \(<float32 meta tensor 3x40x40>\)"):
        tiny().fit_transform([GOOD, torch.empty(3, 40, 40, device="meta")])


def test_float_tensors_numpy_lacks_give_the_vectors_of_the_same_values_in_float32():
    pixels = (GOOD.float() / 255).bfloat16()  # bfloat16 pixels: exactly representable in float32
    extractor = tiny()
    reference = extractor.fit_transform([pixels.float()])
    assert_same_vectors(extractor.transform([pixels]), reference)
    assert_same_vectors(extractor.transform(pixels[None]), reference)  # a batch tensor too
    eight = pixels.to(torch.float8_e4m3fn)
    assert_same_vectors(extractor.transform([eight]), extractor.transform([eight.float()]))


def test_strided_grad_and_half_tensors_are_read_as_their_values():
    pixels = GOOD.float() / 255
    wide = torch.zeros(3, 48, 80)
    wide[:, :, ::2] = pixels  # a view with stride 2 along the width
    extractor = tiny()
    reference = extractor.fit_transform([pixels])
    for same in (wide[:, :, ::2], pixels.clone().requires_grad_(), pixels.half().float()):
        assert_same_vectors(extractor.transform([same]), reference)


def test_a_nested_tensor_as_x_gives_each_of_its_images_a_row():
    small = torch.from_numpy(photo(1, (32, 36))).permute(2, 0, 1)
    extractor = tiny()
    features = extractor.fit_transform(torch.nested.nested_tensor([GOOD, small]))
    assert_same_vectors(features, extractor.transform([GOOD, small]))


@pytest.mark.parametrize(
    "X, words",
    [
        (torch.empty(2, 3, 40, 40, device="meta"), ["X is a meta tensor"]),
        ((GOOD[None].float() / 255).to_sparse(), ["X is a sparse tensor", "X.to_dense()"]),
        (GOOD[None].permute(0, 2, 3, 1), ["(1, 48, 40, 3)", "channels-last", "X.permute(0, 3, 1, 2)"]),
    ],
    ids=["meta", "sparse", "channels-last"],
)
def test_a_batch_tensor_that_is_no_batch_of_images_is_refused_saying_what_to_pass(X, words):
    with pytest.raises(ParameterError) as raised:
        tiny().fit_transform(X)
    assert all(word in str(raised.value) for word in words), raised.value


def test_one_nan_pixel_is_named_as_a_nan_with_its_place_not_as_a_range():
    pixels = GOOD.float() / 255
    pixels[1, 7, 5] = float("nan")
    mixed = (photo(1) / 255).astype(np.float16)
    mixed[2, 3, 0], mixed[4, 4, 1], mixed[9, 0, 2] = np.nan, np.inf, -np.inf
    extractor = tiny(on_error="nan")
    extractor.fit_transform([pixels, mixed])
    first, second = extractor.errors_
    assert "1 of 5,760 pixel values is NaN, the first at row 7, column 5" in first.reason, first
    assert "span" not in first.reason and first.source == "<float32 tensor 3x48x40>"
    assert "float16 array" in second.source, second
    assert "3 of 5,760 pixel values are NaN or infinite (1 NaN, 1 +inf, 1 -inf), the first at row 2" in str(
        second
    )


@pytest.mark.parametrize(
    "value, words",
    [(np.inf, "5,760 of 5,760 pixel values are +inf"), (-np.inf, "5,760 of 5,760 pixel values are -inf")],
)
def test_an_all_infinite_image_says_infinite_never_a_span_of_nan(value, words):
    with pytest.raises(ImageError) as raised:
        tiny().fit_transform([np.full((48, 40, 3), value, dtype=np.float32)])
    assert words in str(raised.value) and "nan, nan" not in str(raised.value), raised.value
    assert raised.value.kind == "invalid_array"


def test_finite_floats_outside_0_1_still_report_their_span_as_ambiguous():
    with pytest.raises(ImageError) as raised:
        tiny().fit_transform([np.full((48, 40, 3), 2.0)])
    assert raised.value.kind == "ambiguous" and "span [2, 2]" in str(raised.value)
