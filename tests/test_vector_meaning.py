"""Vectors that mean what their names say: 'cls' only where there is a class token, no pooling that
changes nothing under a namespace of its own, timm's encoders without a classifier left out, and reduced
decoding close to full decoding on real photos with real weights."""

import numpy as np
import pytest
from sample_photos import mosaic

from featx import ParameterError, build_network, feature_size, get_backbone, list_backbones
from featx.cli import main as featx_main

timm = pytest.importorskip("timm")


def test_cls_pooling_without_a_class_token_is_refused_rather_than_taking_a_patch_token():
    with pytest.raises(
        ParameterError, match="pooling='cls' needs a class token, and timm/test_vit_relpos has none"
    ):
        feature_size("timm/test_vit_relpos", layer="blocks.1", pooling="cls")
    assert feature_size("timm/test_vit_relpos", layer="blocks.1", pooling="tokens_avg") > 0
    assert feature_size("timm/test_vit.r160_in1k", layer="blocks.1", pooling="cls") > 0  # it has one


@pytest.mark.parametrize(
    ("backbone", "pooling"),
    [
        ("resnet18", "max"),
        ("resnet18", "avg"),
        ("timm/test_vit.r160_in1k", "cls"),
        ("timm/test_resnet.r160_in1k", "max"),
    ],
)
def test_a_pooling_at_an_already_pooled_node_is_refused_in_one_line(backbone, pooling):
    with pytest.raises(
        ParameterError, match=f"pooling='{pooling}' changes nothing at {backbone}'s node"
    ) as caught:
        build_network(backbone, weights=None, pooling=pooling, device="cpu", precision="fp32")
    assert "\n" not in str(caught.value)
    assert feature_size(backbone, pooling="flatten") == feature_size(backbone)  # the default, by its name


def test_pooling_a_feature_map_still_works():
    assert feature_size("resnet18", layer="layer4", pooling="max") == 512


def test_timms_encoders_without_a_classifier_are_not_listed_and_asking_for_one_says_why(capsys):
    assert not list_backbones("timm/*_enc*")
    with pytest.raises(ParameterError, match="encoder without a classifier"):
        feature_size("timm/mobilenetv5_300m_enc")
    assert featx_main(["backbones", "--filter", "mobilenetv5*", "--sizes"]) == 0  # sized, no AttributeError
    listed = capsys.readouterr().out
    assert "timm/mobilenetv5_300m.gemma3n" in listed and "_enc" not in listed


@pytest.mark.parametrize("size", [(1024, 683), (1920, 1281), (4000, 3000)])
def test_reduced_decoding_stays_within_0_998_of_full_decoding_with_real_weights(size):
    """A DCT reduction close to the resize target box-filters like a coarse resize (0.990 at 1920x1281
    when decoded at 1/4); the decoded image stays at least twice the target."""
    data = mosaic(*size)
    full = build_network("efficientnet_lite0", device="cpu", precision="fp32", decoding="full")
    reduced = build_network("efficientnet_lite0", device="cpu", precision="fp32", decoding="reduced")
    a, b = (
        full(full.preprocessing.decode(data)[None])[0],
        reduced(reduced.preprocessing.decode(data)[None])[0],
    )
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) >= 0.998
    assert full.fingerprint["preprocessing"] != reduced.fingerprint["preprocessing"]


def test_each_decoding_path_has_its_own_fingerprint_and_none_is_the_old_tensor_resize():
    fingerprints = {
        decoding: build_network(
            "tiny", weights=None, device="cpu", precision="fp32", decoding=decoding
        ).fingerprint["preprocessing"]
        for decoding in ("full", "reduced", "device")
    }
    assert fingerprints["full"]["resize_on"] == fingerprints["reduced"]["resize_on"] == "PIL image"
    assert "resize_on" not in fingerprints["device"]  # the device path resizes tensors, as before
    assert len({str(f) for f in fingerprints.values()}) == 3


def test_the_inception_ports_are_built_as_torchvision_builds_them_for_weights_under_their_own_fingerprint():
    """torchvision's builders set ``transform_input=True`` for Google's weights; the vectors of the
    architecture without it (cached by earlier versions) are never served for it."""
    backbone = get_backbone("googlenet")
    assert (
        backbone.build_args["transform_input"]
        and backbone.weights["IMAGENET1K_V1"].build_args["transform_input"]
    )
    network = build_network("googlenet", weights=None, device="cpu", precision="fp32", decoding="device")
    assert "+transform_input=True" in network.fingerprint["weights"]
