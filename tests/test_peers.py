"""The peers' own vectors: featx against torchvision's and timm's reference pipelines, on the same seeded
weights and the same files, with full decoding.

- torchvision: ``weights.transforms()``, then the model its builder makes for the weights (the tensors
  come from a patched download), with its classifier replaced by ``Identity``;
- timm: ``resolve_data_config`` + ``create_transform``, then
  ``forward_head(forward_features(x), pre_logits=True)``.

featx's input tensor must equal the reference's (to float rounding of the normalisation) and the vectors
agree to 1 - cos <= 1e-5. One small member per torchvision family and a spread of timm families run by
default; the large members are in the slow set. The audit checks every torchvision builder and weights
enum: featx's architecture for the weights is torchvision's own.
"""

import copy
import functools
import io
import warnings

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from PIL import Image
from sklearn.datasets import load_sample_images
from torch import nn
from torchvision.models._api import WeightsEnum

from featx import build_network
from featx.models._registry import meta_skeleton
from featx.models.preprocessing import Normalise
from featx.models.weights import RANDOM_INIT_SEED
from featx.models.zoo.torchvision import builder_args

timm = pytest.importorskip("timm")

#: 1 - cos featx must reach against the peer's own vector.
MAX_DISTANCE = 1e-5

TORCHVISION = [
    "alexnet",
    "densenet121",
    "efficientnet_b0",
    "googlenet",
    "inception_v3",
    "mnasnet0_5",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "regnet_y_400mf",
    "resnet18",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
]
TORCHVISION_SLOW = [
    "convnext_tiny",
    "efficientnet_v2_s",
    "maxvit_t",
    "swin_t",
    "swin_v2_t",
    "vgg11",
    "vit_b_32",
]
TIMM = [
    "timm/test_resnet.r160_in1k",  # CNN, 160 px, crop_pct 0.95
    "timm/test_vit.r160_in1k",  # ViT with a class token
    "timm/test_vit_relpos",  # ViT without a class token
    "timm/test_efficientnet.r160_in1k",
    "timm/vit_pwee_patch16_reg1_gap_256.sbb_in1k",  # registers, 256 px
]
TIMM_SLOW = [
    "timm/inception_v3.tf_in1k",  # 299 px, crop_pct 0.875, mean = std = 0.5
    "timm/tf_efficientnet_b3.in1k",  # 300 px, crop_pct 0.904
    "timm/vit_base_patch32_clip_224.openai",  # CLIP's mean and std
    "timm/vit_small_patch14_dinov2.lvd142m",  # DINOv2, 518 px, crop_pct 1.0
]


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """A 500x375 photo, a 60x40 PNG, a greyscale JPEG and a noisy 800x533 JPEG (scikit-learn's photos)."""
    china, flower = load_sample_images().images
    noisy = np.asarray(Image.fromarray(china).resize((800, 533))).astype(float)
    noisy += np.random.default_rng(0).normal(0, 25, noisy.shape)
    png = io.BytesIO()
    Image.fromarray(flower).resize((60, 40), Image.BICUBIC).save(png, "PNG")
    return {
        "photo": _jpeg(np.asarray(Image.fromarray(china).resize((500, 375), Image.BICUBIC))),
        "small png": png.getvalue(),
        "greyscale": _jpeg(np.asarray(Image.fromarray(flower).convert("L"))),
        "noisy": _jpeg(np.clip(noisy, 0, 255).astype(np.uint8)),
    }


def torchvision_reference(name: str, monkeypatch):
    """torchvision's transforms and the model its builder makes for the DEFAULT weights, whose download
    returns seeded random tensors (featx's ``weights="DEFAULT"`` loads the same through the patch)."""
    torch.manual_seed(RANDOM_INIT_SEED)
    state = tvm.get_model(name, weights=None).state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: copy.deepcopy(state))
    weights = tvm.get_model_weights(name).DEFAULT
    model = tvm.get_model(name, weights=weights).eval()
    classifier = nn.Conv2d if name.startswith("squeezenet") else nn.Linear
    last = [n for n, module in model.named_modules() if isinstance(module, classifier)][-1]
    model.set_submodule(last, nn.Identity())
    return weights.transforms(), lambda x: model(x).flatten(1), "DEFAULT"


def timm_reference(name: str, monkeypatch):
    torch.manual_seed(RANDOM_INIT_SEED)
    model = timm.create_model(name.removeprefix("timm/")).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    return transform, lambda x: model.forward_head(model.forward_features(x), pre_logits=True), None


def check_against_reference(name: str, files: dict[str, bytes], monkeypatch) -> None:
    reference = torchvision_reference if not name.startswith("timm/") else timm_reference
    transform, forward, weights = reference(name, monkeypatch)
    network = build_network(name, weights=weights, device="cpu", precision="fp32", decoding="full")
    theirs = torch.stack([transform(Image.open(io.BytesIO(data)).convert("RGB")) for data in files.values()])
    ours = torch.stack([network.preprocessing.decode(data) for data in files.values()])
    assert torch.allclose(Normalise(network.preprocessing)(ours), theirs, atol=1e-5, rtol=0)  # same pixels
    with torch.inference_mode():
        expected = forward(theirs).numpy()
    actual = network(ours)
    cosine = (actual * expected).sum(1) / np.linalg.norm(actual, axis=1) / np.linalg.norm(expected, axis=1)
    assert (1 - cosine).max() <= MAX_DISTANCE, dict(zip(files, 1 - cosine))


@pytest.mark.parametrize("name", TORCHVISION + TIMM)
def test_featx_gives_the_peers_own_vector_from_the_peers_own_pixels(name, files, monkeypatch):
    check_against_reference(name, files, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_SLOW + TIMM_SLOW)
def test_featx_gives_the_peers_own_vector_for_larger_members(name, files, monkeypatch):
    check_against_reference(name, files, monkeypatch)


def _architecture(model: nn.Module) -> tuple[dict, dict]:
    """What a builder decided: every module's plain settings and every tensor's shape."""
    settings = {
        f"{name}.{key}": value
        for name, module in model.named_modules()
        for key, value in vars(module).items()
        if not key.startswith("_") and key != "training" and isinstance(value, (bool, int, float, str, tuple))
    }
    return settings, {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


@pytest.mark.slow
def test_every_torchvision_builder_makes_for_each_weights_the_architecture_featx_builds(monkeypatch):
    """torchvision's builders set arguments from the weights they are given (inception_v3's
    ``transform_input``, a ViT's ``image_size``); featx builds with ``weights=None`` and passes them."""
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: {})
    monkeypatch.setattr(nn.Module, "load_state_dict", lambda self, *a, **k: None)
    differing = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in tvm.list_models(module=tvm):
            for member in tvm.get_model_weights(name):
                args = builder_args(name, member)
                ours = meta_skeleton(functools.partial(tvm.get_model, name, weights=None, **args))
                theirs = meta_skeleton(functools.partial(tvm.get_model, name, weights=member))
                if _architecture(ours) != _architecture(theirs):
                    differing.append(f"{name}:{member.name}")
    assert not differing
