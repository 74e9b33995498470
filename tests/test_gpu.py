"""The CUDA path on a real GPU: skipped where there is none (CI), run on a lent GPU machine.

The CPU tests cover every rule; these check what only a GPU can show: the precision trial's choice on
CUDA, CUDA vectors against CPU ones, JPEGs decoded by nvJPEG against the CPU decoders, the decoding trial,
the pipelined job (no host wait in its issuing stage, nvJPEG's buffers kept by their lifetimes),
LinearProbe on the GPU, and a CPU-only Ray head node driving a GPU node.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, real_jpeg
from sklearn.datasets import load_digits

from featx import FeatureCache, LinearProbe, build_network, extract_features, load_features
from featx.engines.keyed import decode_jpegs
from featx.inputs.jpeg import decode_on_device
from featx.models import tuning
from featx.models.decoding import decoding_key
from featx.models.preprocessing import Preprocessing

TINY = "tiny_backbone:TINY"  # importable by Ray's worker processes (PYTHONPATH below)
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_auto_precision_on_cuda_measures_fp32_fp16_bf16_and_its_choice_keeps_the_cpu_vectors():
    images = [real_jpeg(n) for n in range(24)]  # the trial's bound holds for photos, not for noise
    # decoded alike (by the CPU): this compares precisions; the decoders are compared below
    common = dict(decoding="full", batch_size=8)
    on_cpu = extract_features(images, "efficientnet_lite0", device="cpu", precision="fp32", **common)
    network = build_network("efficientnet_lite0", device="cuda")
    why = network.precision_choice["why"]
    assert network.precision in {"fp32", "fp16", "bf16"}
    assert all(f"{p} " in why for p in ("fp32", "fp16", "bf16")), why  # each timed, each reported
    on_gpu = extract_features(images, "efficientnet_lite0", device="cuda", **common)
    assert cosine(on_gpu, on_cpu).min() >= 0.99
    exact = extract_features(images, "efficientnet_lite0", device="cuda", precision="fp32", **common)
    assert cosine(exact, on_cpu).min() >= 0.9999


def test_nvjpeg_decodes_a_batch_to_the_pixels_of_the_cpu_decoder():
    jpegs = [(n, f"photo {n}", f"key{n}", real_jpeg(n)) for n in range(12)]
    preprocessing = Preprocessing(decoding="device")
    on_gpu = decode_jpegs(jpegs, preprocessing, torch.device("cuda"), 10**8)
    on_cpu = decode_jpegs(jpegs, preprocessing, torch.device("cpu"), 10**8)
    assert on_gpu.pixels.device.type == "cuda" and on_gpu.keys == on_cpu.keys and not on_gpu.errors
    difference = (on_gpu.pixels.cpu().int() - on_cpu.pixels.int()).abs().float()
    assert difference.mean() < 1.5, difference.mean()


def _queued_sums_kept(decode) -> int:
    """How many sums of freed blocks, queued behind a long kernel, ``decode`` changed (0: none)."""
    jpegs = [real_jpeg(n) for n in range(8)]
    expected = 7 * 3 * 375 * 500
    wrong = 0
    for _ in range(20):
        tensors = [torch.full((3, 375, 500), 7, dtype=torch.uint8, device="cuda") for _ in jpegs]
        torch.cuda.synchronize()
        torch.cuda._sleep(20_000_000)  # tens of milliseconds of queued work ahead of the sums
        sums = [t.sum(dtype=torch.int64) for t in tensors]
        del tensors  # their blocks go back to the allocator while the sums are still queued
        decode(jpegs)
        wrong += sum(int(total) != expected for total in sums)
    return wrong


def test_decoding_on_the_gpu_never_writes_into_memory_that_queued_kernels_still_read():
    """torchvision's CUDA decoder writes at call time, whatever the stream order, into blocks it takes
    from the allocator (pytorch/vision#9606). featx decodes on a stream of its own, whose pool never holds
    the caller's freed blocks, and without draining any stream: the queued sums keep their values."""
    assert _queued_sums_kept(lambda jpegs: decode_on_device(jpegs, torch.device("cuda"))) == 0


@pytest.mark.xfail(
    strict=False, reason="shows the hazard only where torchvision still has pytorch/vision#9606"
)
def test_the_hazard_test_catches_the_use_after_free_ordering():
    """The same check, with the decoder called on the caller's stream and no drain: it must fail there,
    or the test above proves nothing."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def unsafe(jpegs):
        tensors = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
        decode_jpeg(tensors, mode=ImageReadMode.RGB, device="cuda")

    assert _queued_sums_kept(unsafe) > 0


def test_the_issuing_stage_never_makes_the_host_wait_for_the_device():
    """Crop (mixed sizes: the gather's index goes to the device from pinned memory), deduplicate (the
    same), normalise, the network and the pinned copy of its vectors, under sync debug mode "error"."""
    from featx.cache.store import MemoryNamespace
    from featx.engines.base import RunOptions
    from featx.engines.local.stages import LocalJob, Work

    network = build_network("resnet18", weights=None, device="cuda", precision="fp16", decoding="device")
    job = LocalJob(network, MemoryNamespace({}), RunOptions(batch_size=8))
    sizes = [(500, 375), (375, 500)]
    repeats = {14: 0, 15: 1, 30: 16, 31: 17}  # each half holds two contents twice: computed once
    jpegs = [(n, f"p{n}", f"k{repeats.get(n, n)}", real_jpeg(n, size=sizes[n % 3 == 0])) for n in range(32)]
    decoded = [job.decode(Work([], None, jpegs[n : n + 16], 32)) for n in (0, 16)]
    held = []
    job.batches._writer.put = lambda keys, vectors: held.append((keys, vectors))  # commits wait outside
    job.issue(decoded[0])  # warm-up: cuDNN's choices, pinned blocks
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        job.issue(decoded[1])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sum(len(keys) for keys, _ in held) == 24  # 28 distinct contents: three full batches of 8
    assert all(np.isfinite(vectors.result()).all() for _, vectors in held)


def test_the_pipelined_job_gives_the_vectors_of_decoding_and_running_one_batch_at_a_time(tmp_path):
    paths = []
    for n in range(22):
        paths.append(tmp_path / f"{n}.jpg")
        paths[-1].write_bytes(real_jpeg(n, size=[(500, 375), (375, 500)][n % 3 == 0]))
    common = dict(device="cuda", precision="fp32", decoding="device", weights=None, batch_size=4)
    piped = extract_features([str(p) for p in paths], "resnet18", num_workers=2, **common)
    network = build_network("resnet18", weights=None, device="cuda", precision="fp32", decoding="device")
    serial = []
    for start in range(0, len(paths), 4):
        batch = [(n, str(paths[n]), str(n), paths[n].read_bytes()) for n in range(start, min(start + 4, 22))]
        decoded = decode_jpegs(batch, network.preprocessing, network.device, 10**8)
        torch.cuda.synchronize()
        serial.append(network(decoded.pixels))
    np.testing.assert_allclose(piped, np.concatenate(serial), rtol=1e-4, atol=1e-4)


def test_jpegs_decoded_on_the_gpu_give_the_cpu_decoders_vectors_and_the_same_failures(jpeg_folder, tmp_path):
    paths = sorted(str(p) for p in jpeg_folder.iterdir()) + [str(tmp_path / "missing.jpg")]
    common = dict(device="cuda", precision="fp32", num_workers=2, on_error="nan", batch_size=4)
    full = extract_features(paths, "efficientnet_lite0", decoding="full", **common)
    on_gpu = extract_features(paths, "efficientnet_lite0", decoding="device", **common)
    failed = np.isnan(full).any(1)
    assert list(np.isnan(on_gpu).any(1)) == list(failed) and failed.sum() == 1
    assert cosine(on_gpu[~failed], full[~failed]).min() >= 0.999


def test_auto_decoding_on_cuda_times_both_decoders_and_remembers_its_choice():
    network = build_network("efficientnet_lite0", device="cuda", precision="fp32")
    choice = network.decoding_choice
    assert network.preprocessing.decoding == choice["decoding"] in {"device", "reduced"}
    assert choice["trials"]["device"] > 0 and choice["trials"]["cpu"] > 0, choice
    rates = {"reduced" if k == "cpu" else k: v for k, v in choice["trials"].items() if k != "cpu_workers"}
    assert choice["decoding"] == max(rates, key=rates.get)  # nvJPEG, DALI where installed, the CPU
    key = decoding_key(network.device, network.preprocessing)
    assert tuning.load_entries()[key]["decoding"] == choice["decoding"]  # the next run reads it back


def test_dali_decodes_a_batch_close_to_the_cpu_path_where_it_is_installed():
    from featx.inputs import dali

    if not dali.available():
        pytest.skip("NVIDIA DALI is not installed (the featx[dali] extra)")
    jpegs = [(n, f"photo {n}", f"key{n}", real_jpeg(n)) for n in range(12)]
    on_gpu = decode_jpegs(jpegs, Preprocessing(decoding="dali"), torch.device("cuda"), 10**8)
    on_cpu = decode_jpegs(jpegs, Preprocessing(decoding="device"), torch.device("cpu"), 10**8)
    assert on_gpu.pixels.shape == on_cpu.pixels.shape and on_gpu.keys == on_cpu.keys and not on_gpu.errors
    difference = (on_gpu.pixels.cpu().int() - on_cpu.pixels.int()).abs().float()
    assert difference.mean() < 3.0, difference.mean()  # DALI's resize is its own: its own fingerprint


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
