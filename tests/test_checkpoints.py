"""The weights users actually have: a fine-tuned head of another size or none, DataParallel and Lightning
prefixes, safetensors, a timm checkpoint for 5 classes, and FineTunedClassifier's own trunk. Only the
trunk's keys are strict; weights of another architecture are still refused in one line."""

import warnings

import numpy as np
import pytest
import torch
import torchvision
from conftest import photo
from safetensors.torch import save_file

from featx import FineTunedClassifier, ParameterError, PretrainedFeatures, build_network
from featx.models.preprocessing import Normalise

timm = pytest.importorskip("timm")


def vectors(backbone: str, weights) -> np.ndarray:
    network = build_network(backbone, weights=weights, device="cpu", precision="fp32", decoding="full")
    return network(torch.stack([network.preprocessing.decode(photo(i, (70, 90))) for i in range(2)]))


@pytest.fixture(scope="module")
def fine_tuned() -> dict[str, torch.Tensor]:
    """A ResNet-18 as a user fine-tunes it for 5 classes: ``fc`` is 5 x 512."""
    torch.manual_seed(3)
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Linear(512, 5)
    return model.state_dict()


@pytest.fixture(scope="module")
def expected(fine_tuned, tmp_path_factory) -> np.ndarray:
    """The trunk's vectors, from a file with the architecture's own 1000-class head."""
    state = {**fine_tuned, **torchvision.models.resnet18().fc.state_dict(prefix="fc.")}
    path = tmp_path_factory.mktemp("weights") / "with-imagenet-head.pth"
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a head that fits says nothing
        return vectors("resnet18", path)


def test_a_five_class_fine_tune_loads_and_one_line_says_its_head_was_not_used(fine_tuned, expected, tmp_path):
    path = tmp_path / "five-classes.pth"
    torch.save(fine_tuned, path)
    with pytest.warns(UserWarning, match=r"^resnet18: the checkpoint's head was not used .*fc\.weight 5x512"):
        actual = vectors("resnet18", path)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_without_its_head_loads_silently(fine_tuned, expected, tmp_path):
    path = tmp_path / "trunk.pth"
    torch.save({k: v for k, v in fine_tuned.items() if not k.startswith("fc.")}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(vectors("resnet18", path), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: {f"module.{k}": v for k, v in s.items()}, id="DataParallel / DDP"),
        pytest.param(
            lambda s: {
                "epoch": 3,
                "global_step": 120,
                "pytorch-lightning_version": "2.4.0",
                "state_dict": {f"model.{k}": v for k, v in s.items()},
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.01}]}],
                "hyper_parameters": {"lr": 0.01, "num_classes": 5},
            },
            id="Lightning",
        ),
        pytest.param(lambda s: {f"_orig_mod.{k}": v for k, v in s.items()}, id="torch.compile"),
    ],
)
def test_wrapped_checkpoints_load_under_their_prefix(wrap, fine_tuned, expected, tmp_path):
    path = tmp_path / "checkpoint.ckpt"
    torch.save(wrap(fine_tuned), path)
    with pytest.warns(UserWarning, match="head was not used"):
        np.testing.assert_allclose(vectors("resnet18", path), expected, rtol=1e-5, atol=1e-6)


def test_a_safetensors_file_loads(fine_tuned, expected, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in fine_tuned.items()}, str(path))
    with pytest.warns(UserWarning, match="head was not used"):
        np.testing.assert_allclose(vectors("resnet18", path), expected, rtol=1e-5, atol=1e-6)


def test_a_timm_checkpoint_for_five_classes_gives_the_trunks_vector(tmp_path):
    torch.manual_seed(5)
    model = timm.create_model("test_resnet", num_classes=5).eval()
    path = tmp_path / "timm-5.pth"
    torch.save(model.state_dict(), path)
    with pytest.warns(UserWarning, match="head was not used"):
        network = build_network("timm/test_resnet.r160_in1k", weights=path, device="cpu", precision="fp32")
    batch = torch.stack([network.preprocessing.decode(photo(i, (70, 90))) for i in range(2)])
    with torch.inference_mode():
        pixels = Normalise(network.preprocessing)(batch)
        expected = model.forward_head(model.forward_features(pixels), pre_logits=True)
    np.testing.assert_allclose(network(batch), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_weights_of_another_architecture_are_still_refused_naming_the_trunk_keys(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(
        ParameterError, match=r"do not fit backbone 'resnet18' \(its trunk has 120 keys\): 96 unexpected"
    ):
        vectors("resnet18", path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_fine_tuned_trunk_exported_by_fine_tuned_classifier_is_what_pretrained_features_reads(
    suffix, tmp_path
):
    images = [photo(i, (40, 40)) for i in range(12)]
    y = [i % 2 for i in range(12)]
    model = FineTunedClassifier("tiny", weights=None, unfreeze=1, epochs=1, finetune_epochs=1, batch_size=4)
    model.fit(images, y)
    path = model.save_trunk(tmp_path / f"trunk{suffix}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = PretrainedFeatures("tiny", weights=path, precision="fp32", device="cpu").fit_transform(
            images
        )
    fitted = model._loaded()
    pixels = model._decode(images)
    np.testing.assert_allclose(
        features, model._pooled(fitted, pixels, torch.device("cpu")).numpy(), rtol=1e-4, atol=1e-5
    )
    untuned = PretrainedFeatures("tiny", weights=None, precision="fp32", device="cpu").fit_transform(images)
    assert not np.allclose(features, untuned)  # the fine-tuned trunk, not the random init
