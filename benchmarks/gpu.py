"""The GPU path, side by side in one run: the network alone (the ceiling) against featx end to end from JPEGs.

    python benchmarks/gpu.py                                   # resnet50 and efficientnet_lite0, 8,192 JPEGs
    python benchmarks/gpu.py --backbones resnet18 --images 1024

Needs CUDA (it says so and exits otherwise). For each backbone, on the same JPEG files (crops of
scikit-learn's two sample photographs, resized to 500x375, about an ImageNet photo):

- ``trial``: what ``precision="auto"`` measured and chose on this GPU (a fresh tuning file);
- ``bare_{fp32,fp16,bf16}``: ``FrozenNetwork`` alone on a uint8 batch of 256 already on the GPU;
- ``decode``: featx's decoding alone (read, decode, resize, crop to uint8) in a DataLoader with the
  workers featx starts on a GPU machine (cores - 1): the most images/s the CPU can feed;
- ``featx_cold``: ``extract_features`` with its defaults into a fresh cache; ``featx_cold_b256``: batch 256;
  ``featx_warm``: the same job again, every vector cached.

The ratio is featx_cold against bare at the precision featx chose (goal: >= 0.8 for ResNet-50). ResNet-50's
weights are random-init (speed does not depend on the values); EfficientNet-Lite0's are the real ones from pip.
Rows go to benchmarks/results/gpu.csv with the GPU and CPU models.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import torchvision.models as tvm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from speed import write_photos  # noqa: E402

from featx import FrozenNetwork, Preprocessing, extract_features  # noqa: E402
from featx._machine import cpu_model  # noqa: E402
from featx.engines.local.workers import default_num_workers  # noqa: E402

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
    network = FrozenNetwork(backbone, weights=weights, precision=precision, device="cuda", compile=False)
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


def featx(paths: list[str], backbone: str, weights: str, cache: Path, **options) -> float:
    start = time.perf_counter()
    vectors = extract_features(paths, backbone, weights=weights, cache_dir=cache, **options)
    seconds = time.perf_counter() - start
    assert len(vectors) == len(paths) and torch.isfinite(torch.from_numpy(vectors)).all()
    return len(paths) / seconds


def benchmark(backbone: str, paths: list[str], work: Path) -> list[dict]:
    weights = "DEFAULT"
    if backbone != "efficientnet_lite0":
        weights = str(work / f"{backbone}.pth")
        torch.save(tvm.get_model(backbone, weights=None).state_dict(), weights)
    chosen = FrozenNetwork(backbone, weights=weights, device="cuda")  # precision="auto": the timed trial
    print(f"{backbone} trial: {chosen.precision} ({chosen.precision_choice['why']})", flush=True)
    rows = [{"variant": "trial", "precision": chosen.precision, "why": chosen.precision_choice["why"]}]

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
    rows.append(
        {"variant": "decode", "images_per_s": decode_rate(paths, chosen.preprocessing, workers, True)}
    )
    warm_up = paths[:512]  # CUDA context, cuDNN autotuning and worker start-up, outside the clock
    extract_features(warm_up, backbone, weights=weights, cache_dir=work / f"warm-up-{backbone}")
    for variant, options in (("featx_cold", {}), ("featx_cold_b256", {"batch_size": 256})):
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
            "variant": "featx_warm",
            "precision": chosen.precision,
            "images_per_s": featx(paths, backbone, weights, work / f"cache-{backbone}-featx_cold"),
        }
    )
    ceiling = next(r["images_per_s"] for r in rows if r["variant"] == f"bare_{chosen.precision}")
    for row in rows:
        if "images_per_s" in row:
            row["of_bare"] = row["images_per_s"] / ceiling
            print(
                f"  {backbone:>18} {row['variant']:>16} {row.get('precision', ''):>5}: "
                f"{row['images_per_s']:9.1f} images/s  ({row['of_bare']:.2f}x bare {chosen.precision})",
                flush=True,
            )
    return [{"backbone": backbone, **row} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbones", default="resnet50,efficientnet_lite0")
    parser.add_argument("--images", type=int, default=8192)
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
        rows = [row for backbone in args.backbones.split(",") for row in benchmark(backbone, paths, work)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows).assign(gpu=gpu, cpu=cpu_model(), cores=os.cpu_count(), torch=torch.__version__)
    out = RESULTS / "gpu.csv"
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(frame.drop(columns=["why"]).to_string(index=False, float_format="{:.2f}".format))


if __name__ == "__main__":
    main()
