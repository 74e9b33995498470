"""precision="int8" on the CPU: quantized where its fidelity holds, refused or replaced where it does not."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import photo
from PIL import Image

from featx import FeatureCache, FrozenNetwork, ParameterError, PretrainedFeatures, build_network
from featx.models import quantize, tuning
from featx.models.precision import TrialImages, precision_candidates

pytestmark = pytest.mark.skipif(not quantize.int8_supported(), reason="no x86 quantized engine in this torch")


def real_batch(network: FrozenNetwork) -> torch.Tensor:
    """Real photos (scikit-learn's sample images) and smooth test pictures, decoded for the network."""
    images = tuning.sample_images() + [photo(seed) for seed in range(4)]
    return torch.stack([network.preprocessing.decode(image) for image in images])


def test_int8_vectors_stay_within_cosine_0_99_of_fp32_and_the_bound_is_reported():
    fp32 = build_network("resnet18", weights=None, precision="fp32")
    int8 = build_network("resnet18", weights=None, precision="int8")
    assert int8.precision == "int8" and "cosine 0.99" in int8.precision_choice["why"]
    batch = real_batch(fp32)
    cosine = tuning.min_cosine(int8(batch), fp32(batch))
    assert cosine >= 0.99, cosine


def test_a_forced_fidelity_failure_falls_back_warns_and_writes_nothing_under_int8(tmp_path):
    with pytest.warns(UserWarning, match="under the bound 1.0; using"):
        estimator = PretrainedFeatures(
            "resnet18", weights=None, precision="int8", min_cosine=1.0, cache_dir=tmp_path
        )
        estimator.fit_transform([photo(0), photo(1)])
    precisions = {ns.fingerprint["precision"] for ns in FeatureCache(tmp_path).namespaces()}
    assert precisions and "int8" not in precisions


def test_the_int8_fingerprint_differs_from_fp32_and_names_the_quantization():
    int8 = build_network("tiny", weights=None, precision="int8")
    fp32 = build_network("tiny", weights=None, precision="fp32")
    assert int8.fingerprint != fp32.fingerprint
    assert set(int8.fingerprint["quantization"]) == {"scheme", "torch", "calibration"}
    assert int8.fingerprint["quantization"]["torch"] == torch.__version__


def test_the_calibration_is_kept_on_disk_and_reloads_to_identical_vectors_without_calibrating(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("FEATX_TUNING_FILE", str(tmp_path / "tuning.json"))
    batch = real_batch(build_network("tiny", weights=None, precision="fp32"))
    first = build_network("tiny", weights=None, precision="int8")
    expected = first(batch)
    [stored] = (tmp_path / "int8").glob("*.npz")
    with np.load(stored, allow_pickle=False) as arrays:  # plain arrays: nothing to unpickle
        assert arrays.files and all(arrays[name].dtype != object for name in arrays.files)

    def no_calibration(*args):
        raise AssertionError("a stored calibration must not be measured again")

    monkeypatch.setattr(quantize, "_calibrate", no_calibration)
    second = build_network("tiny", weights=None, precision="int8")
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second(batch), expected)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_a_damaged_or_foreign_stored_calibration_is_ignored_with_a_warning_and_rewritten(
    tmp_path, monkeypatch, damage
):
    monkeypatch.setenv("FEATX_TUNING_FILE", str(tmp_path / "tuning.json"))
    batch = real_batch(build_network("tiny", weights=None, precision="fp32"))
    expected = build_network("tiny", weights=None, precision="int8")(batch)
    [stored] = (tmp_path / "int8").glob("*.npz")
    good = stored.read_bytes()
    if damage == "garbage":
        stored.write_bytes(b"not a zip at all")
    elif damage == "truncated":
        stored.write_bytes(good[: len(good) // 2])
    else:
        np.savez(stored, activation_post_process_0_min_val=np.zeros(3))
    with pytest.warns(UserWarning, match=f"ignoring the stored int8 calibration {stored}"):
        again = build_network("tiny", weights=None, precision="int8")
    np.testing.assert_array_equal(again(batch), expected)
    assert stored.read_bytes() == good


def test_a_read_only_calibration_folder_only_costs_calibrating_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATX_TUNING_FILE", str(tmp_path / "tuning.json"))
    (tmp_path / "int8").write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="the int8 calibration: cannot write .*calibrates again"):
        network = build_network("tiny", weights=None, precision="int8")
    assert network.precision == "int8"


def calibration_folder(folder, n: int):
    folder.mkdir()
    for seed in range(n):
        Image.fromarray(photo(seed, (64, 80))).save(folder / f"cal{seed:02d}.png")
    return folder


def test_a_calibration_set_of_the_users_images_calibrates_checks_and_names_the_fingerprint(tmp_path):
    folder = calibration_folder(tmp_path / "mine", 6)
    default = build_network("tiny", weights=None, precision="int8")
    mine = build_network("tiny", weights=None, precision="int8", calibration=str(folder))
    assert mine.precision == "int8" and f"held-out images of {folder}" in mine.precision_choice["why"]
    assert (
        mine.fingerprint["quantization"]["calibration"] != default.fingerprint["quantization"]["calibration"]
    )
    calibrated, held_out = TrialImages(mine.preprocessing, str(folder)).batches()
    assert len(calibrated) == 3 and len(held_out) == 3


def test_calibration_images_are_spread_over_the_whole_set_not_its_first_class(tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": [f"class{i // 500}/{i:04d}.png" for i in range(1000)]}).to_csv(
        manifest, index=False
    )
    picked = quantize.calibration_sources(str(manifest))
    assert len(picked) == quantize.CALIBRATION_IMAGES
    assert picked[0].endswith("class0/0000.png") and picked[-1].endswith("class1/0999.png")
    assert sum("class1" in path for path in picked) == quantize.CALIBRATION_IMAGES // 2


@pytest.mark.parametrize("case", ["empty", "one image", "corrupt image", "missing"])
def test_a_bad_calibration_set_is_refused_naming_the_set_and_what_to_do(tmp_path, case):
    folder = tmp_path / "cal"
    if case == "empty":
        folder.mkdir()
    elif case == "one image":
        calibration_folder(folder, 1)
    elif case == "corrupt image":
        calibration_folder(folder, 3)
        (folder / "cal01.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ParameterError) as raised:
        build_network("tiny", weights=None, precision="int8", calibration=str(folder))
    message = str(raised.value)
    assert message.startswith(f"calibration={str(folder)!r}")
    assert {
        "empty": "holds no image files",
        "one image": "at least 2",
        "corrupt image": "cal01.png",
        "missing": "does not exist",
    }[case] in message


def test_a_cpu_without_int8_falls_back_cleanly(monkeypatch):
    monkeypatch.setattr(quantize, "int8_supported", lambda: False)
    assert "int8" not in precision_candidates(torch.device("cpu"))
    with pytest.warns(UserWarning, match="int8 is unavailable.*no x86 quantized engine"):
        network = build_network("tiny", weights=None, precision="int8")
    assert network.precision != "int8" and "quantization" not in network.fingerprint


def test_int8_is_refused_on_a_gpu_with_a_clear_message():
    with pytest.raises(ParameterError, match="int8.*CPU only.*cuda"):
        build_network("tiny", weights=None, device="cuda", precision="int8")


def test_a_network_fx_cannot_trace_for_quantization_falls_back_with_the_reason(monkeypatch):
    def untraceable(network, example):
        raise torch.fx.proxy.TraceError(
            "symbolically traced variables cannot be used as inputs to control flow"
        )

    monkeypatch.setattr(quantize, "traceable_copy", untraceable)
    with pytest.warns(UserWarning, match="int8 is unavailable for tiny.*TraceError.*control flow"):
        network = build_network("tiny", weights=None, precision="int8")
    assert network.precision != "int8" and "quantization" not in network.fingerprint


def test_efficientnet_lite0_int8_by_the_depthwise_recipe_reaches_0_98_and_the_default_bound_refuses_it():
    """Measured here: x86 defaults alone reach cosine 0.71 on held-out photos; depthwise convs in float and
    ReLU6 ranges clipped to [0, 6] reach 0.994 on the mirrored photos but 0.987 upside down, so the check
    (both) refuses it at 0.99 and accepts it at 0.98 (benchmarks/int8_depthwise.py)."""
    with pytest.warns(UserWarning, match=r"int8 features reach cosine 0\.98\d+ to fp32 on held-out photos"):
        refused = build_network("efficientnet_lite0", precision="int8")
    assert refused.precision != "int8"
    int8 = build_network("efficientnet_lite0", precision="int8", min_cosine=0.98)
    assert int8.precision == "int8", int8.precision_choice
    mirrored = TrialImages(int8.preprocessing, None).batches()[1][: len(tuning.sample_images())]
    fp32 = build_network("efficientnet_lite0", precision="fp32")
    assert tuning.min_cosine(int8(mirrored), fp32(mirrored)) >= 0.99
