"""The engine's own cost, with a network that costs nothing: how close a cold job comes to its decoders.

    python benchmarks/engine_overhead.py                 # 2,048 JPEG photos of 500x375, 224-pixel crops
    python benchmarks/engine_overhead.py --images 4096 --workers 4

On a GPU the network takes milliseconds a batch, so what the engine does around it (moving pixels between
processes, committing shards) sets the pace. Here a backbone that only pools its input stands in for an
infinitely fast network, so those costs show on any CPU. Side by side in one run, best of ``--repeats``,
interleaved, with the same number of decoding workers:

- ``decode``: featx's decoding alone (read, decode, resize, crop to uint8) in a DataLoader: the ceiling;
- ``featx_cold``: ``extract_features`` into a fresh cache, batch 64 (keys, pixels to the network, commits).

Prints images/s and featx_cold / decode; appends to benchmarks/results/engine_overhead.csv with the CPU model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu import decode_rate, write_jpegs  # noqa: E402

from featx import Backbone, Preprocessing, build_network, extract_features, register_backbone  # noqa: E402
from featx._machine import cpu_model  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
POOL_ONLY = Backbone(
    name="pool_only",
    build=lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
    node="1",
    pooling="flatten",
    preprocessing=Preprocessing(resize=256, crop=224),
    description="benchmark-only: a network that costs nothing",
)


def featx_cold(paths: list[str], workers: int, cache: Path) -> float:
    start = time.perf_counter()
    extract_features(
        paths,
        POOL_ONLY,
        weights=None,
        device="cpu",
        precision="fp32",
        cache_dir=cache,
        num_workers=workers,
        compile=False,
    )
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    register_backbone(POOL_ONLY)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_jpegs(work / "photos", args.images)
        featx_cold(paths[:128], args.workers, work / "warm-up")
        preprocessing = build_network(POOL_ONLY, weights=None, device="cpu").preprocessing
        best = {"decode": 0.0, "featx_cold": 0.0}
        for round in range(args.repeats):
            best["decode"] = max(best["decode"], decode_rate(paths, preprocessing, args.workers))
            best["featx_cold"] = max(
                best["featx_cold"], featx_cold(paths, args.workers, work / f"cache-{round}")
            )
    ratio = best["featx_cold"] / best["decode"]
    print(
        f"{cpu_model()}, {args.workers} workers, {args.images} photos: decode {best['decode']:.0f} images/s, "
        f"featx cold {best['featx_cold']:.0f} images/s ({ratio:.2f}x decode)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "engine_overhead.csv"
    row = pd.DataFrame([{**vars(args), **best, "ratio": ratio, "cpu": cpu_model()}])
    row.to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
