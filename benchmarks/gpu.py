"""The GPU path, side by side in one run: the network alone (the ceiling) against featx end to end from JPEGs.

    python benchmarks/gpu.py                                   # resnet50 and efficientnet_lite0, 8,192 JPEGs
    python benchmarks/gpu.py --backbones resnet18 --images 1024

Needs CUDA (it says so and exits otherwise). For each backbone, on the same JPEG files (crops of
scikit-learn's two sample photographs, resized to 500x375, about an ImageNet photo):

- ``trial``: what ``precision="auto"`` measured and chose on this GPU (a fresh tuning file);
- ``bare_{fp32,fp16,bf16}``: ``FrozenNetwork`` alone on a uint8 batch of 256 already on the GPU;
- ``decode``: featx's CPU decoding alone (read, decode, resize, crop to uint8) in a DataLoader with the
  workers featx starts on a GPU machine (cores - 1): the most images/s the CPU can feed;
- ``decode_gpu``: featx's GPU decoding alone (nvJPEG, resize and crop on the GPU), 256 JPEGs a call, their
  bytes already in memory (in a job, the workers read them);
- ``featx_cold``: ``extract_features`` with its defaults (``decoding="auto"``: measured) into a fresh
  cache; ``featx_cold_device`` / ``featx_cold_cpu``: decoding forced to "device" / "reduced";
  ``featx_cold_b256``: the defaults at batch 256; ``featx_cold_loaded``: the defaults with the network
  loaded before the clock starts (what a long job tends to); ``featx_warm``: the first job again, every
  vector cached.

``--profile`` also prints where a loaded cold job of 2,048 photos spends its time (torch.profiler: host
operators and the GPU's busy share).

Each figure is a ratio to the bare network at the precision featx chose. The cold job is set against its
bound (benchmarks/gpu_bound.py): min(bare, decoding) where decoding runs beside the network (the GPU's
hardware JPEG engine, or the CPU), 1/(1/bare + 1/decoding) where it shares the SMs; the line says which
applied, whether torchvision's nvJPEG used the hardware engine, the GPU's busy share over a cold job
(torch.profiler), the bare network as CUDA graphs (``reduce-overhead``) against eager, and the chosen
decoding's vectors against the CPU's full decoding (least cosine). The goal is featx_cold >= 0.8x its bound
for ResNet-50. ``decode_dali`` where NVIDIA DALI is installed. ResNet-50's weights are random-init (speed does not depend on
the values); EfficientNet-Lite0's are the real ones from pip.
Rows go to benchmarks/results/gpu.csv with the GPU and CPU models.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.models as tvm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_bound  # noqa: E402
from speed import write_photos  # noqa: E402

from featx import FrozenNetwork, Preprocessing, build_network, extract_features  # noqa: E402
from featx._machine import cpu_model  # noqa: E402
from featx.cache import open_store  # noqa: E402
from featx.engines.local.workers import default_num_workers  # noqa: E402
from featx.extract import extract  # noqa: E402
from featx.inputs import dali  # noqa: E402
from featx.inputs.jpeg import decode_on_device  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
BARE_BATCH = 256


def write_jpegs(folder: Path, n: int) -> list[str]:
    """``n`` distinct photo JPEGs, written on every core (one writer would take a minute for 8,192)."""
    cores = os.cpu_count() or 1
    counts = [n // cores + (k < n % cores) for k in range(cores)]
    with ProcessPoolExecutor(cores) as pool:
        parts = pool.map(
            write_photos,
            [folder / str(k) for k in range(cores)],
            counts,
            [(500, 375)] * cores,
            [100 + k for k in range(cores)],
        )
        return [path for part in parts for path in part]


def bare(backbone: str, weights: str, precision: str, batch: torch.Tensor, repeats: int) -> float:
    """Images per second of the frozen network alone, the batch already on the GPU."""
    network = build_network(backbone, weights=weights, precision=precision, device="cuda", compile=False)
    for _ in range(3):
        network(batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        network(batch)  # returns a numpy array: the copy back synchronises
    return repeats * len(batch) / (time.perf_counter() - start)


class Decode(torch.utils.data.Dataset):
    """featx's decoding of one file (read, decode, resize, crop to uint8), and nothing else."""

    def __init__(self, paths: list[str], preprocessing: Preprocessing):
        self.paths, self.preprocessing = paths, preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.preprocessing.decode(self.paths[i])


def decode_rate(
    paths: list[str], preprocessing: Preprocessing, workers: int, pin_memory: bool = False
) -> float:
    """Images per second of featx's decoding alone in a DataLoader: what the decoders can feed a network."""
    loader = torch.utils.data.DataLoader(
        Decode(paths, preprocessing),
        batch_size=64,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )
    start = time.perf_counter()
    n = sum(len(batch) for batch in loader)
    return n / (time.perf_counter() - start)


def gpu_decode_rate(paths: list[str], preprocessing: Preprocessing, batch: int = 256) -> float:
    """Images per second of featx's GPU decoding alone: nvJPEG, then resize and crop on the GPU (or DALI's
    decoder and fused resize-crop, for ``decoding="dali"``)."""
    contents = [Path(path).read_bytes() for path in paths]
    device = torch.device("cuda")

    def decode(chunk: list[bytes]) -> None:
        if preprocessing.decoding == "dali":
            dali.decode_crop(chunk, preprocessing, device)
        else:
            preprocessing.crop_batch(decode_on_device(chunk, device))

    decode(contents[:batch])  # warm-up: nvJPEG's buffers, DALI's pipeline
    torch.cuda.synchronize()
    start = time.perf_counter()
    for first in range(0, len(contents), batch):
        decode(contents[first : first + batch])
    torch.cuda.synchronize()
    return len(contents) / (time.perf_counter() - start)


def featx_loaded(paths: list[str], network: FrozenNetwork, cache: Path) -> float:
    """Images per second of a cold job whose network is already loaded: the engine, the cache, the read."""
    start = time.perf_counter()
    vectors = extract(paths, network, open_store(network.fingerprint, cache)).features
    seconds = time.perf_counter() - start
    assert len(vectors) == len(paths) and np.isfinite(vectors).all()
    return len(paths) / seconds


def profile(paths: list[str], network: FrozenNetwork, cache: Path) -> None:
    """Where a loaded cold job's time goes: torch.profiler's host operators (every thread, each its own
    row) and how busy the GPU was over the job's wall time (the sum of its kernels' time). cProfile on
    Python 3.12 merges all threads' calls, so it cannot tell which one waits."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        extract(paths, network, open_store(network.fingerprint, cache))
    wall = time.perf_counter() - start
    averages = profiler.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=20), flush=True)
    busy = sum(event.self_device_time_total for event in averages) / 1e6
    print(f"GPU kernels {busy:.2f} s of {wall:.2f} s wall ({busy / wall:.0%} busy)", flush=True)


def featx(paths: list[str], backbone: str, weights: str, cache: Path, **options) -> float:
    start = time.perf_counter()
    vectors = extract_features(paths, backbone, weights=weights, cache_dir=cache, **options)
    seconds = time.perf_counter() - start
    assert len(vectors) == len(paths) and torch.isfinite(torch.from_numpy(vectors)).all()
    return len(paths) / seconds


def benchmark(backbone: str, paths: list[str], work: Path, show_profile: bool = False) -> list[dict]:
    weights = "DEFAULT"
    if backbone != "efficientnet_lite0":
        weights = str(work / f"{backbone}.pth")
        torch.save(tvm.get_model(backbone, weights=None).state_dict(), weights)
    start = time.perf_counter()
    chosen = build_network(backbone, weights=weights, device="cuda")  # both "auto": the timed trials
    print(f"{backbone}: FrozenNetwork with both trials {time.perf_counter() - start:.2f} s", flush=True)
    start = time.perf_counter()
    build_network(backbone, weights=weights, device="cuda")
    print(f"{backbone}: FrozenNetwork, trials remembered {time.perf_counter() - start:.2f} s", flush=True)
    print(f"{backbone} precision: {chosen.precision} ({chosen.precision_choice['why']})", flush=True)
    print(
        f"{backbone} decoding: {chosen.preprocessing.decoding} ({chosen.decoding_choice['why']})", flush=True
    )
    rows = [
        {"variant": "trial", "precision": chosen.precision, "why": chosen.precision_choice["why"]},
        {
            "variant": "decoding",
            "precision": chosen.preprocessing.decoding,
            "why": chosen.decoding_choice["why"],
        },
    ]

    crop = chosen.preprocessing.crop
    batch = torch.randint(0, 256, (BARE_BATCH, 3, crop, crop), dtype=torch.uint8, device="cuda")
    for precision in ("fp32", "fp16", "bf16"):
        rows.append(
            {
                "variant": f"bare_{precision}",
                "precision": precision,
                "images_per_s": bare(backbone, weights, precision, batch, repeats=20),
            }
        )
    workers = default_num_workers(len(paths), 64, torch.device("cuda"))  # as featx starts them there
    on_cpu = dataclasses.replace(chosen.preprocessing, decoding="reduced")
    rows.append({"variant": "decode", "images_per_s": decode_rate(paths, on_cpu, workers, True)})
    on_gpu = dataclasses.replace(chosen.preprocessing, decoding="device")
    rows.append({"variant": "decode_gpu", "images_per_s": gpu_decode_rate(paths, on_gpu)})
    if dali.available():
        with_dali = dataclasses.replace(chosen.preprocessing, decoding="dali")
        rows.append({"variant": "decode_dali", "images_per_s": gpu_decode_rate(paths, with_dali)})
    engine = gpu_bound.jpeg_engine([Path(p).read_bytes() for p in paths[:2048]])
    print(f"{backbone}: torchvision's nvJPEG decodes on the {engine['engine']} ({engine['why']})", flush=True)
    graphs = gpu_bound.reduce_overhead(chosen, batch)
    print(
        f"{backbone}: bare network at batch {BARE_BATCH}, eager vs CUDA graphs: {graphs['why']}", flush=True
    )
    if graphs["graphs"] is not None:
        rows.append(
            {"variant": "bare_graphs", "precision": chosen.precision, "images_per_s": graphs["graphs"]}
        )
    warm_up = paths[:512]  # CUDA context, cuDNN autotuning and worker start-up, outside the clock
    extract_features(warm_up, backbone, weights=weights, cache_dir=work / f"warm-up-{backbone}")
    variants = (
        ("featx_cold", {}),
        ("featx_cold_device", {"decoding": "device"}),
        ("featx_cold_cpu", {"decoding": "reduced"}),
        ("featx_cold_b256", {"batch_size": 256}),
    )
    for variant, options in variants:
        cache = work / f"cache-{backbone}-{variant}"
        rows.append(
            {
                "variant": variant,
                "precision": chosen.precision,
                "images_per_s": featx(paths, backbone, weights, cache, **options),
            }
        )
    rows.append(
        {
            "variant": "featx_cold_loaded",
            "precision": chosen.precision,
            "images_per_s": featx_loaded(paths, chosen, work / f"cache-{backbone}-loaded"),
        }
    )
    if show_profile:
        profile(paths[:2048], chosen, work / f"cache-{backbone}-profile")
    busy = gpu_bound.busy_share(paths[:4096], chosen, work / f"cache-{backbone}-busy")
    cosine = gpu_bound.min_cosine(paths[:256], backbone, weights, chosen.preprocessing.decoding)
    rows.append(
        {
            "variant": "featx_warm",
            "precision": chosen.precision,
            "images_per_s": featx(paths, backbone, weights, work / f"cache-{backbone}-featx_cold"),
        }
    )
    rate = {row["variant"]: row["images_per_s"] for row in rows if "images_per_s" in row}
    ceiling = rate[f"bare_{chosen.precision}"]
    decoding = chosen.preprocessing.decoding
    decoder = {"reduced": "decode", "full": "decode", "device": "decode_gpu", "dali": "decode_dali"}[decoding]
    # DALI's mixed decoder uses the hardware engine where there is one; nvJPEG through torchvision as measured
    shares = decoding == "device" and engine["engine"] == "SMs"
    bound, rule = gpu_bound.bound(ceiling, rate[decoder], shares)
    for row in rows:
        if "images_per_s" in row:
            row["of_bare"] = row["images_per_s"] / ceiling
            print(
                f"  {backbone:>18} {row['variant']:>18} {row.get('precision', ''):>5}: "
                f"{row['images_per_s']:9.1f} images/s  ({row['of_bare']:.2f}x bare {chosen.precision})",
                flush=True,
            )
    print(
        f"  {backbone}: featx cold {rate['featx_cold']:.0f} images/s = {rate['featx_cold'] / bound:.2f}x its "
        f"bound {bound:.0f} ({rule}; decoding {decoding} {rate[decoder]:.0f} images/s, network "
        f"{ceiling:.0f}); GPU busy {busy:.0%} of a cold job (profiler); vectors min cosine {cosine:.4f} "
        "of the CPU's full decoding (goal >= 0.8x)",
        flush=True,
    )
    rows.append(
        {
            "variant": "bound",
            "precision": chosen.precision,
            "images_per_s": bound,
            "why": f"{rule}; jpeg engine: {engine['engine']} ({engine['why']}); busy {busy:.3f}; "
            f"min cosine {cosine:.5f}; cold/bound {rate['featx_cold'] / bound:.3f}",
        }
    )
    return [{"backbone": backbone, **row} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", default="resnet50,efficientnet_lite0")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--profile", action="store_true", help="cProfile one loaded cold job per backbone")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA GPU; none is visible here")
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}; CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["FEATX_TUNING_FILE"] = str(work / "tuning.json")  # measure the trial anew
        start = time.perf_counter()
        paths = write_jpegs(work / "photos", args.images)
        print(f"{len(paths)} JPEGs written in {time.perf_counter() - start:.0f} s", flush=True)
        rows = [
            row
            for backbone in args.backbones.split(",")
            for row in benchmark(backbone, paths, work, args.profile)
        ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows).assign(gpu=gpu, cpu=cpu_model(), cores=os.cpu_count(), torch=torch.__version__)
    out = RESULTS / "gpu.csv"
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(frame.drop(columns=["why"]).to_string(index=False, float_format="{:.2f}".format))


if __name__ == "__main__":
    main()
