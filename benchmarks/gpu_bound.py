"""What bounds a cold GPU job, measured on the lent GPU (used by benchmarks/gpu.py).

- ``jpeg_engine``: whether torchvision's nvJPEG decodes on the GPU's hardware JPEG engine (A100, H100,
  H200 have one) or on the SMs, from NVML's JPEG-engine utilisation while it decodes (pynvml, where
  installed) and from torch.profiler: how much kernel time the SMs spend per decoded image.
- ``bound``: the cold job's bound. Decoding on the hardware engine (or on the CPU) runs beside the network:
  min(network, decoding). Decoding on the SMs shares them with the network: 1 / (1/network + 1/decoding).
- ``busy_share``: the GPU's busy share over a cold job's wall time (torch.profiler: its kernels' time).
- ``reduce_overhead``: the bare network under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) at
  the job's static batch, against eager, so the job's network is chosen by measurement.
- ``min_cosine``: the chosen decoding's vectors against those of the CPU's full decoding.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch

from featx import FrozenNetwork, extract_features
from featx.cache import open_store
from featx.extract import extract
from featx.inputs.jpeg import decode_on_device


def _nvml_jpeg_peak(run) -> float | None:
    """The peak of NVML's JPEG-engine utilisation (percent) while ``run()`` runs; None without pynvml."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        pynvml.nvmlDeviceGetJpgUtilization(handle)
    except Exception:  # no pynvml, no NVML, or a driver without the query: unknown
        return None
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], float(pynvml.nvmlDeviceGetJpgUtilization(handle)[0]))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return peak[0]


def jpeg_engine(contents: list[bytes], batch: int = 256) -> dict:
    """Where torchvision's nvJPEG decodes here: ``{"engine": "hardware" | "SMs", "why": ...}``."""
    device = torch.device("cuda")

    def decode_all() -> None:
        for first in range(0, len(contents), batch):
            decode_on_device(contents[first : first + batch], device)
        torch.cuda.synchronize()

    decode_all()  # warm-up
    peak = _nvml_jpeg_peak(decode_all)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        decode_all()
    kernel_s = sum(e.self_device_time_total for e in profiler.key_averages()) / 1e6
    per_image_us = 1e6 * kernel_s / len(contents)
    if peak is not None:
        engine = "hardware" if peak > 0 else "SMs"
        why = f"NVML JPEG engine peak {peak:.0f}% busy; SM kernels {per_image_us:.1f} us/image"
    else:  # a hybrid decode's IDCT and colour conversion run as kernels: tens of microseconds an image
        engine = "hardware" if per_image_us < 5 else "SMs"
        why = f"no NVML JPEG query; SM kernels {per_image_us:.1f} us/image (under 5: hardware)"
    return {"engine": engine, "why": why}


def bound(network: float, decoding: float, shares_the_sms: bool) -> tuple[float, str]:
    """The cold job's bound (images/s) and the rule that gave it."""
    if shares_the_sms:
        return 1 / (1 / network + 1 / decoding), "1/(1/network + 1/decoding): decoding shares the SMs"
    return min(network, decoding), "min(network, decoding): decoding runs beside the network"


def busy_share(paths: list[str], network: FrozenNetwork, cache: Path) -> float:
    """The GPU's busy share over a loaded cold job: its kernels' time over the wall time."""
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        extract(paths, network, open_store(network.fingerprint, cache))
    wall = time.perf_counter() - start
    return sum(e.self_device_time_total for e in profiler.key_averages()) / 1e6 / wall


def reduce_overhead(network: FrozenNetwork, batch: torch.Tensor, repeats: int = 20) -> dict:
    """Images/s of the bare network eager and as CUDA graphs (``reduce-overhead``) at ``len(batch)``."""
    module = network._pipeline  # the network featx runs: normalise, truncated network, pooling

    def rate(run) -> float:
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
        return repeats * len(batch) / (time.perf_counter() - start)

    eager = rate(lambda: network._forward(module, batch))
    try:
        graphed = torch.compile(module, mode="reduce-overhead", dynamic=False)
        graphs = rate(lambda: network._forward(graphed, batch).clone())
    except Exception as error:  # not capturable here: eager stays
        return {"eager": eager, "graphs": None, "why": f"{type(error).__name__}: {str(error)[:120]}"}
    return {"eager": eager, "graphs": graphs, "why": f"graphs {graphs / eager:.2f}x eager"}


def min_cosine(paths: list[str], backbone: str, weights: str, decoding: str) -> float:
    """The least cosine between ``decoding``'s vectors and the CPU's full decoding's, in fp32."""
    common = dict(weights=weights, device="cuda", precision="fp32", batch_size=64)
    chosen = extract_features(paths, backbone, decoding=decoding, **common)
    full = extract_features(paths, backbone, decoding="full", **common)
    cos = (chosen * full).sum(1) / np.linalg.norm(chosen, axis=1) / np.linalg.norm(full, axis=1)
    return float(cos.min())
