"""torchvision's and timm's zoos by name: the right vector, the model's own preprocessing, weights as timm
users load them, discovery, and a tiny timm model through every door. timm's ``test_*`` models and small
torchvision models with ``weights=None`` check mechanics; EfficientNet-Lite0 stays the real-weights check."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, photo
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from test_cache import featx_cli, only_namespace
from test_hostile_cli import one_line_error

from featx import (
    FrozenNetwork,
    PretrainedFeatures,
    build_network,
    extract_features,
    feature_size,
    get_backbone,
    list_backbones,
    list_nodes,
    load_features,
)
from featx.models import quantize
from featx.models.catalog import backbone_table
from featx.models.weights import RANDOM_INIT_SEED

timm = pytest.importorskip("timm")

VIT = "timm/test_vit.r160_in1k"
TINY_TIMM = [
    "timm/test_vit.r160_in1k",
    "timm/test_convnext.r160_in1k",
    "timm/test_efficientnet.r160_in1k",
    "timm/test_resnet.r160_in1k",
]


def timm_reference(name: str, seed: int = RANDOM_INIT_SEED) -> torch.nn.Module:
    """The model as timm builds it under featx's random-init seed: what ``weights=None`` must equal."""
    torch.manual_seed(seed)
    return timm.create_model(name.removeprefix("timm/")).eval()


def pixels(network: FrozenNetwork, n: int = 3) -> torch.Tensor:
    return torch.stack([network.preprocessing.decode(photo(i, (90, 70))) for i in range(n)])


def fp32(name: str, **settings) -> FrozenNetwork:
    return build_network(
        name, weights=settings.pop("weights", None), device="cpu", precision="fp32", **settings
    )


@pytest.mark.parametrize("name", [*TINY_TIMM, "regnet_y_400mf", "squeezenet1_1", "mobilenet_v3_small"])
def test_the_meta_device_size_is_the_size_a_real_forward_gives(name):
    assert extract_features([photo(0)], name, weights=None).shape == (1, feature_size(name))


@pytest.mark.parametrize("name", TINY_TIMM)
def test_the_default_vector_is_timms_own_pre_logits_output(name):
    network = fp32(name)
    batch = pixels(network)
    normalised = network.pipelines.get("fp32").normalise(batch)
    with torch.inference_mode():
        model = timm_reference(name)
        expected = model.forward_head(model.forward_features(normalised), pre_logits=True)
    np.testing.assert_allclose(network(batch), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_vit_blocks_pool_to_the_class_token_or_the_mean_of_the_patch_tokens():
    every_token = fp32(VIT, layer="blocks.2", pooling="flatten")
    batch = pixels(every_token)
    tokens = every_token(batch).reshape(len(batch), -1, 64)  # (B, 1 + 100 patches, 64)
    assert tokens.shape[1] == 1 + (160 // 16) ** 2
    cls = fp32(VIT, layer="blocks.2", pooling="cls")(batch)
    mean = fp32(VIT, layer="blocks.2", pooling="tokens_avg")(batch)
    np.testing.assert_allclose(cls, tokens[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean, tokens[:, 1:].mean(1), rtol=1e-4, atol=1e-5)
    # the model's own rule (global_pool='token') pools a block's tokens by default, not an average of all
    np.testing.assert_allclose(fp32(VIT, layer="blocks.2")(batch), cls, rtol=1e-5, atol=1e-6)


def test_a_transformer_block_or_a_conv_stage_is_a_layer_and_token_pooling_on_a_map_is_refused():
    assert feature_size(VIT, "blocks.4") == 64
    assert feature_size("timm/test_convnext.r160_in1k", "stages.1") == 32
    assert "pre_logits" in list_nodes(VIT) and "blocks.4" in " ".join(list_nodes(VIT))
    with pytest.raises(ValueError, match="token output"):
        feature_size("timm/test_convnext.r160_in1k", "stages.1", "cls")


def test_two_tags_of_one_architecture_preprocess_differently_and_never_share_a_namespace():
    for name in ("timm/resnet18.a1_in1k", "timm/resnet18.tv_in1k"):  # crop_pct 0.95 bicubic, 0.875 bilinear
        ours = get_backbone(name).preprocessing
        config = timm.data.resolve_data_config({}, model=timm.create_model(name.removeprefix("timm/")))
        resize, crop = timm.data.create_transform(**config).transforms[:2]  # timm's own eval transform
        assert (ours.resize, ours.crop) == (resize.size, crop.size[0])
        assert ours.interpolation == resize.interpolation.value and ours.mean == config["mean"]
    fingerprints = [fp32(name).fingerprint for name in ("timm/resnet18.a1_in1k", "timm/resnet18.tv_in1k")]
    assert fingerprints[0]["preprocessing"] != fingerprints[1]["preprocessing"]
    assert fingerprints[0] != fingerprints[1]


def test_a_squash_crop_resizes_both_sides_and_enters_the_fingerprint():
    squashing = [n for n in timm.list_pretrained() if timm.models.get_pretrained_cfg(n).crop_mode == "squash"]
    preprocessing = get_backbone("timm/" + squashing[0]).preprocessing
    assert preprocessing.crop_mode == "squash" and preprocessing.as_dict()["crop_mode"] == "squash"
    wide = photo(0, (40, 120))  # 40 high, 120 wide: a centre crop would cut the sides off
    assert tuple(preprocessing.decode(wide).shape) == (3, preprocessing.crop, preprocessing.crop)
    assert "crop_mode" not in get_backbone(VIT).preprocessing.as_dict()  # 'center' keeps old namespaces


def test_a_local_safetensors_file_gives_the_vectors_of_the_model_it_came_from(tmp_path):
    from safetensors.torch import save_file

    source = timm_reference(VIT, seed=123)  # other tensors than featx's random init
    path = tmp_path / "vit.safetensors"
    save_file(source.state_dict(), str(path))
    network = fp32(VIT, weights=str(path))
    batch = pixels(network)
    with torch.inference_mode():
        features = source.forward_features(network.pipelines.get("fp32").normalise(batch))
        expected = source.forward_head(features, pre_logits=True).numpy()
    np.testing.assert_allclose(network(batch), expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(fp32(VIT)(batch), expected, atol=1e-3)


def test_offline_without_the_file_the_error_names_the_file_the_folder_and_three_ways_out(tmp_path):
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(REPO / "tests"),
    }
    script = f"import featx; featx.build_network({VIT!r}, device='cpu')"
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    folder = tmp_path / "hf" / "hub" / "models--timm--test_vit.r160_in1k"
    for fragment in (
        "WeightsUnavailableError",
        "model.safetensors",
        str(folder),
        "hf download",
        "weights='/path",
        "weights=None",
    ):
        assert fragment in message, message


def test_names_list_and_filter_without_building_a_model_and_bad_names_get_the_three_closest():
    vits = list_backbones("test_vit*")
    assert VIT in vits and "timm/test_vit4" in vits and all(n.startswith("timm/test_vit") for n in vits)
    assert "timm/test_vit4" not in list_backbones(
        "test_vit*", pretrained=True
    )  # an architecture without weights
    assert {"regnet_y_400mf", "vit_b_16", "resnet50"} <= set(list_backbones())  # all 80 of torchvision's
    table = backbone_table("test_vit*", pretrained=True)
    expected = [timm.create_model(n.removeprefix("timm/")).num_features for n in table["name"]]
    assert list(table["features"]) == expected and set(table["family"]) == {"timm"}
    assert set(table["default_weights"]) == {"r160_in1k"}
    with pytest.raises(ValueError, match="did you mean 'timm/test_vit.r160_in1k'"):
        get_backbone("timm/test_vitt.r160_in1k")
    with pytest.raises(ValueError, match="'regnet_y_400mf'"):
        get_backbone("regnet_y_400")


def test_featx_backbones_filters_by_pattern_and_by_weights(image_folder, tmp_path):
    result = featx_cli("backbones", "--filter", "test_conv*", "--pretrained")
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0].split() == ["name", "family", "default_weights", "features"]
    assert {row.split()[0] for row in rows[1:]} == {
        "timm/test_convnext.r160_in1k",
        "timm/test_convnext2.r160_in1k",
        "timm/test_convnext3.r160_in1k",
    }
    one_line_error(
        featx_cli("extract", image_folder, "--backbone", "timm/test_vitt", "--cache", tmp_path),
        "did you mean",
    )


def test_both_zoos_by_name_in_a_pipeline():
    images = [photo(i, (60, 50)) for i in range(6)]
    labels = np.arange(6) % 2
    for name in ("timm/convnext_tiny.fb_in22k", "regnet_y_400mf"):
        features = PretrainedFeatures(name, weights=None, batch_size=6, precision="fp32")
        pipeline = make_pipeline(features, LogisticRegression()).fit(images, labels)
        assert pipeline.predict(images).shape == (6,)
        names = pipeline[0].get_feature_names_out()
        assert len(names) == feature_size(name) and all(n.isidentifier() for n in names[:3])


def test_a_tiny_timm_model_through_the_batch_job_and_its_cache(image_folder, tmp_path):
    out, cache = tmp_path / "features.parquet", tmp_path / "cache"
    args = ["extract", image_folder, "--backbone", VIT, "--weights", "none", "--out", out, "--cache", cache]
    result = featx_cli(*args, "--num-workers", "0")
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    assert X.shape == (len(meta), 64) and np.isfinite(X).all()
    assert meta.attrs["featx"]["backbone"] == VIT and meta.attrs["featx"]["node"] == "pre_logits"
    assert only_namespace(cache).fingerprint["backbone"] == VIT
    assert {p.name for p in cache.iterdir()} == {"stat-memo", only_namespace(cache).path.name}  # one level
    compared = featx_cli(
        "compare", out, "--cv", "2", "--classifiers", "logreg", "--out", tmp_path / "table.csv"
    )
    assert compared.returncode == 0, compared.stderr
    table = pd.read_csv(tmp_path / "table.csv")
    assert (table["backbone"].tolist(), table["layer"].tolist(), table["n_features"].tolist()) == (
        [VIT],
        ["pre_logits"],
        [64],
    )


def test_a_tiny_timm_model_through_compare_the_transfer_report_and_fine_tuning():
    from featx.estimators.finetune import FineTunedClassifier
    from featx.evaluate import transfer_report

    images = [photo(i, (60, 50)) for i in range(12)]
    labels = np.arange(12) % 2
    report = transfer_report(
        images, labels, backbones="timm/test_convnext.r160_in1k", weights=None, layers="stages", cv=2
    )
    layers = list(report.summary["features"])
    assert sum("stages." in str(label) for label in layers) == 3  # timm's feature_info, earliest three
    model = FineTunedClassifier(VIT, weights=None, epochs=1, unfreeze=1, finetune_epochs=1, batch_size=4)
    model.fit(images, labels)
    assert model.predict_proba(images).shape == (12, 2)


@pytest.mark.skipif(not quantize.int8_supported(), reason="no x86 quantized engine in this torch")
def test_a_tiny_timm_cnn_runs_in_int8_and_a_vit_that_fx_cannot_quantize_falls_back_saying_why():
    from featx.models import tuning

    network = build_network("timm/test_resnet.r160_in1k", weights=None, device="cpu", precision="int8")
    batch = pixels(network, 4)
    assert network.precision == "int8"
    assert tuning.min_cosine(network(batch), fp32("timm/test_resnet.r160_in1k")(batch)) >= 0.99
    with pytest.warns(UserWarning, match="int8 is unavailable"):
        vit = build_network(VIT, weights=None, device="cpu", precision="int8")
    assert vit.precision != "int8" and "int8 is unavailable for timm/test_vit" in vit.precision_choice["why"]
