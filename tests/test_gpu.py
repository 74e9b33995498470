"""The CUDA path on a real GPU: skipped where there is none (CI), run on a lent GPU machine.

The CPU tests cover every rule; these check what only a GPU can show: the precision trial's choice on
CUDA, CUDA vectors against CPU ones, LinearProbe on the GPU, and a CPU-only Ray head node driving a GPU node.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, photo
from sklearn.datasets import load_digits

from featx import FeatureCache, FrozenNetwork, LinearProbe, extract_features, load_features

TINY = "tiny_backbone:TINY"  # importable by Ray's worker processes (PYTHONPATH below)
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_auto_precision_on_cuda_measures_fp32_fp16_bf16_and_its_choice_keeps_the_cpu_vectors():
    images = [photo(n, size=(96, 80)) for n in range(24)]
    on_cpu = extract_features(images, "efficientnet_lite0", device="cpu", precision="fp32", batch_size=8)
    network = FrozenNetwork("efficientnet_lite0", device="cuda")
    why = network.precision_choice["why"]
    assert network.precision in {"fp32", "fp16", "bf16"}
    assert all(f"{p} " in why for p in ("fp32", "fp16", "bf16")), why  # each timed, each reported
    on_gpu = extract_features(images, "efficientnet_lite0", device="cuda", batch_size=8)
    assert cosine(on_gpu, on_cpu).min() >= 0.99
    exact = extract_features(images, "efficientnet_lite0", device="cuda", precision="fp32", batch_size=8)
    assert cosine(exact, on_cpu).min() >= 0.9999


def test_linear_probe_on_the_gpu_agrees_with_the_cpu_fit():
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    on_gpu = LinearProbe(C=0.1, device="cuda").fit(X[:1200], y[:1200])
    on_cpu = LinearProbe(C=0.1, device="cpu").fit(X[:1200], y[:1200])
    assert (on_gpu.predict(X[1200:]) == on_cpu.predict(X[1200:])).mean() >= 0.99
    np.testing.assert_allclose(on_gpu.coef_, on_cpu.coef_, rtol=0, atol=1e-2 * np.abs(on_cpu.coef_).max())


def test_a_cpu_only_head_node_drives_a_gpu_node_with_device_cuda(image_folder, tmp_path, monkeypatch):
    """The driver sees no GPU and the head node hides it; only the second node has one. If an actor (or the
    task that resolves the network) ran on the head, its network would fail to reach cuda and the job too."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests"))  # the nodes' workers import the tiny backbone
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "num_gpus": 0,
            "include_dashboard": False,
            "env_vars": {"CUDA_VISIBLE_DEVICES": ""},
        },
    )
    try:
        cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "ray.parquet"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "featx",
                "extract",
                str(image_folder),
                "--backbone",
                TINY,
                "--weights",
                "none",
                "--device",
                "cuda",
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(out),
                "--engine",
                "ray",
                "--ray-address",
                cluster.address,
                "--quiet",
            ],
            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        cluster.shutdown()
    assert done.returncode == 0, done.stderr
    assert "computed: 6" in done.stdout and " cuda " in done.stderr, done.stderr
    (namespace,) = FeatureCache(tmp_path / "cache").namespaces()
    precision = namespace.fingerprint["precision"]  # what "auto" measured on the GPU node
    X, meta = load_features(out)
    here = extract_features(meta["path"].tolist(), TINY, weights=None, device="cuda", precision=precision)
    assert cosine(X, here).min() >= 0.9999
