"""The registry: feature sizes per backbone and node, user backbones, real EfficientNet-Lite0 weights."""

import pytest
import torch
from conftest import photo
from PIL import Image
from sklearn.datasets import load_sample_image
from torch import nn
from torchvision.models import ResNet50_Weights

from featx import (
    Backbone,
    Preprocessing,
    extract_features,
    feature_size,
    get_backbone,
    list_backbones,
    list_nodes,
    register_backbone,
)


@pytest.mark.parametrize(
    "backbone, layer, pooling, size",
    [
        ("resnet18", None, None, 512),
        ("resnet34", None, None, 512),
        ("resnet50", None, None, 2048),
        ("resnet101", None, None, 2048),
        ("resnet152", None, None, 2048),
        ("vgg16", None, None, 512 * 7 * 7),
        ("vgg16", None, "avg", 512),
        ("vgg16", None, "max", 512),
        ("vgg16_bn", None, None, 25088),
        ("vgg19", None, None, 25088),
        ("efficientnet_lite0", None, None, 1280),
        ("resnet50", "layer3", None, 1024),
        ("resnet50", "layer2", "flatten", 512 * 28 * 28),
        ("vgg16", "features.23", None, 512),
    ],
)
def test_feature_size_per_backbone_node_and_pooling(backbone, layer, pooling, size):
    assert feature_size(backbone, layer, pooling) == size


@pytest.mark.parametrize("backbone, pooling", [("resnet18", None), ("vgg16", None), ("vgg16", "max")])
def test_real_outputs_have_the_registry_size(backbone, pooling):
    X = extract_features([photo(0)], backbone, weights=None, pooling=pooling)
    assert X.shape == (1, feature_size(backbone, pooling=pooling))


def test_vgg16_is_plain_vgg16_and_vgg16_bn_is_the_batchnorm_variant():
    def has_batchnorm(name):
        with torch.device("meta"):
            return any(isinstance(m, nn.BatchNorm2d) for m in get_backbone(name).build().modules())

    assert not has_batchnorm("vgg16") and has_batchnorm("vgg16_bn")
    assert {"vgg16", "vgg16_bn"} <= set(list_backbones())


def test_unknown_layers_and_backbones_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="list_nodes"):
        feature_size("resnet18", "layer9")
    with pytest.raises(ValueError, match="resnet50"):
        feature_size("resnet5O")
    assert "layer4" in " ".join(list_nodes("resnet18"))


def test_users_register_their_own_backbone_without_editing_featx():
    spec = Backbone(
        name="user_net",
        build=lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1)),
        node="2",
        preprocessing=Preprocessing(resize=20, crop=16),
    )
    register_backbone(spec, overwrite=True)
    assert feature_size("user_net") == 4
    assert extract_features([photo(0)], "user_net", weights=None).shape == (1, 4)
    assert extract_features([photo(0)], spec, weights=None).shape == (1, 4)
    assert extract_features([photo(0)], "tiny_backbone:TINY", weights=None).shape == (1, 64)


def test_efficientnet_lite0_pip_weights_load_exactly_and_recognise_a_temple():
    spec = get_backbone("efficientnet_lite0")
    classifier = spec.build()
    loaded = classifier.load_state_dict(spec.weights[spec.default_weights].load())
    assert not loaded.missing_keys and not loaded.unexpected_keys
    x = spec.preprocessing.transform()(Image.fromarray(load_sample_image("china.jpg")))[None]
    with torch.inference_mode():
        top5 = classifier.eval()(x).topk(5).indices[0].tolist()
    categories = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]  # the ImageNet-1k class names
    assert {"palace", "monastery", "bell cote"} & {categories[i] for i in top5}
