"""precision="int8" on the CPU: quantized where its fidelity holds, refused or replaced where it does not."""

import warnings

import numpy as np
import pytest
import torch

from conftest import photo

from featx import FeatureCache, FrozenNetwork, ParameterError, PretrainedFeatures, quantize, tuning

pytestmark = pytest.mark.skipif(not quantize.int8_supported(), reason="no x86 quantized engine in this torch")


def real_batch(network: FrozenNetwork) -> torch.Tensor:
    """Real photos (scikit-learn's sample images) and smooth test pictures, decoded for the network."""
    images = tuning.sample_images() + [photo(seed) for seed in range(4)]
    return torch.stack([network.preprocessing.decode(image) for image in images])


def test_int8_vectors_stay_within_cosine_0_99_of_fp32_and_the_bound_is_reported():
    fp32 = FrozenNetwork("resnet18", weights=None, precision="fp32")
    int8 = FrozenNetwork("resnet18", weights=None, precision="int8")
    assert int8.precision == "int8" and "cosine 0.99" in int8.precision_choice["why"]
    batch = real_batch(fp32)
    cosine = tuning.min_cosine(int8(batch), fp32(batch))
    assert cosine >= 0.99, cosine


def test_a_forced_fidelity_failure_falls_back_warns_and_writes_nothing_under_int8(tmp_path):
    with pytest.warns(UserWarning, match="under the bound 1.0; using"):
        estimator = PretrainedFeatures("resnet18", weights=None, precision="int8", min_cosine=1.0,
                                       cache_dir=tmp_path)
        estimator.fit_transform([photo(0), photo(1)])
    precisions = {ns.fingerprint["precision"] for ns in FeatureCache(tmp_path).namespaces()}
    assert precisions and "int8" not in precisions


def test_the_int8_fingerprint_differs_from_fp32_and_names_the_quantization():
    int8 = FrozenNetwork("tiny", weights=None, precision="int8")
    fp32 = FrozenNetwork("tiny", weights=None, precision="fp32")
    assert int8.fingerprint != fp32.fingerprint
    assert set(int8.fingerprint["quantization"]) == {"scheme", "torch", "calibration"}
    assert int8.fingerprint["quantization"]["torch"] == torch.__version__


def test_a_rebuilt_int8_network_gives_identical_vectors():
    batch = real_batch(FrozenNetwork("tiny", weights=None, precision="fp32"))
    first = FrozenNetwork("tiny", weights=None, precision="int8")
    second = FrozenNetwork("tiny", weights=None, precision="int8")
    assert first.fingerprint == second.fingerprint
    np.testing.assert_array_equal(first(batch), second(batch))


def test_a_cpu_without_int8_falls_back_cleanly(monkeypatch):
    monkeypatch.setattr(quantize, "int8_supported", lambda: False)
    assert "int8" not in tuning.precision_candidates(torch.device("cpu"))
    with pytest.warns(UserWarning, match="int8 is unavailable.*no x86 quantized engine"):
        network = FrozenNetwork("tiny", weights=None, precision="int8")
    assert network.precision != "int8" and "quantization" not in network.fingerprint


def test_int8_is_refused_on_a_gpu_with_a_clear_message():
    with pytest.raises(ParameterError, match="int8.*CPU only.*cuda"):
        FrozenNetwork("tiny", weights=None, device="cuda", precision="int8")


def test_a_network_fx_cannot_trace_for_quantization_falls_back_with_the_reason():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network = FrozenNetwork("efficientnet_lite0", precision="int8")
    assert network.precision != "int8"
    assert any("int8 is unavailable for efficientnet_lite0" in str(w.message) for w in caught)
