"""Cold vs warm feature cache, side by side in one process, on the same image files.

    python benchmarks/cache_cold_warm.py                     # efficientnet_lite0, 1,000 sample images
    python benchmarks/cache_cold_warm.py --backbone resnet18 --weights none --images 500

Cold: a fresh cache, every image decoded and run through the network. Warm: the same job again; every
image is hashed and found. Prints images/s for both, their ratio (goal: warm >= 50x cold on CPU) and the
disk bytes per cached vector; appends the row to benchmarks/results/cache_cold_warm.csv.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from featx import FeatureCache, build_network
from featx.engines import RunOptions
from featx.inputs.manifests import load_manifest
from featx.job import run_extract_job

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--manifest", default=REPO / "data" / "fashion_mnist" / "manifest.csv")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="DEFAULT")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()

    manifest = load_manifest(args.manifest).head(args.images)
    network = build_network(args.backbone, weights=args.weights)
    with tempfile.TemporaryDirectory() as cache_dir:
        namespace = FeatureCache(cache_dir).namespace(network.fingerprint)
        timings = {}
        for run in ("cold", "warm"):
            start = time.perf_counter()
            summary = run_extract_job(manifest, network, namespace, RunOptions(progress=False))
            timings[run] = time.perf_counter() - start
            assert summary.errors == [], summary.errors[:3]
        disk_bytes = sum(p.stat().st_size for p in namespace.path.iterdir())
    row = {
        "backbone": network.backbone.name,
        "precision": network.precision,
        "images": len(manifest),
        "cold_images_per_s": len(manifest) / timings["cold"],
        "warm_images_per_s": len(manifest) / timings["warm"],
        "warm_over_cold": timings["cold"] / timings["warm"],
        "disk_bytes_per_vector": disk_bytes / len(manifest),
        "vector_bytes": network.n_features * 4,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, {network.device}",
    }
    print(pd.DataFrame([row]).T.to_string(header=False))
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    out = results / "cache_cold_warm.csv"
    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
