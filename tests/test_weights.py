"""Weights: torchvision's cache is the normal path; offline it fails clearly; local files work."""

import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from conftest import photo

from featx import WeightsUnavailableError, extract_features
from featx.models._registry import get_backbone
from featx.models.weights import file_digest, resolve_weights


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty TORCH_HOME and a network that refuses every download, as on this machine."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def test_offline_without_the_file_fails_at_once_naming_the_file_its_folder_and_weights_path(offline):
    with pytest.raises(WeightsUnavailableError) as caught:
        extract_features([photo(0)], "resnet50")
    message = str(caught.value)
    assert "resnet50-11ad3fa6.pth" in message  # the file torchvision would download
    assert str(offline) in message  # where to put it
    assert "weights='/path/to/resnet50-11ad3fa6.pth'" in message and "weights=None" in message


def test_a_file_preseeded_in_torch_home_is_used_without_any_download(offline):
    offline.mkdir(parents=True)
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), offline / "resnet18-f37072fd.pth")
    resolved = resolve_weights(get_backbone("resnet18"), "DEFAULT")
    assert torch.equal(resolved.state_dict["fc.weight"], reference.state_dict()["fc.weight"])
    assert resolved.digest == "resnet18-f37072fd"


def test_a_local_weights_file_is_loaded_and_its_digest_keys_the_cache(tmp_path):
    path = tmp_path / "my-resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    resolved = resolve_weights(get_backbone("resnet18"), str(path))
    assert resolved.digest == file_digest(path) and len(resolved.digest) == 16
    assert resolved.preprocessing.resize == 256  # the preprocessing of resnet18's default weights
    X = extract_features([photo(0)], "resnet18", weights=path, precision="fp32")
    assert X.shape == (1, 512) and np.isfinite(X).all()


def test_enum_names_in_short_and_long_form_resolve_to_the_same_weights():
    spec = get_backbone("resnet50")
    from featx.models.weights import _named_weights

    assert _named_weights(spec, "IMAGENET1K_V1") is _named_weights(spec, "ResNet50_Weights.IMAGENET1K_V1")
    assert _named_weights(spec, "DEFAULT").name == "IMAGENET1K_V2"


def test_unknown_weights_list_the_accepted_values():
    with pytest.raises(ValueError, match="IMAGENET1K_V2.*a file path.*None"):
        resolve_weights(get_backbone("resnet50"), "IMAGENET22K")
