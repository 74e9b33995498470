"""The Ray engine's overhead on one machine: the same job on the local engine and on Ray Data.

    python benchmarks/ray_overhead.py                      # resnet18, 1,024 images
    python benchmarks/ray_overhead.py --backbone efficientnet_lite0 --weights DEFAULT --images 512

Both engines run `featx extract`'s job (hash, decode, network, cache writes, Parquet out) on fresh caches,
in one process; Ray's start-up (ray.init) is timed apart. Prints images/s, their ratio, and appends a row
to benchmarks/results/ray_overhead.csv. On one 2-core machine Ray can only add overhead; it pays when a
job outgrows one machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import RESULTS, machine, write_images  # noqa: E402

from featx import FeatureCache, build_network, engines  # noqa: E402
from featx.engines import RunOptions
from featx.engines.ray import engine as ray_engine  # noqa: E402
from featx.job import run_extract_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = pd.DataFrame({"path": write_images(work / "images", args.images, seed=1)})
        network = build_network(args.backbone, weights=args.weights, compile=False)
        start = time.perf_counter()
        ray_engine.connect(num_cpus=torch.get_num_threads())
        ray_start = time.perf_counter() - start
        row = {"backbone": network.backbone.name, "images": args.images, "ray_init_s": ray_start}
        for engine in ("local", "ray"):
            namespace = FeatureCache(work / f"cache-{engine}").namespace(network.fingerprint)
            summary = run_extract_job(
                manifest,
                network,
                namespace,
                RunOptions(progress=False),
                out=work / f"{engine}.parquet",
                engine=engines.get(engine),
            )
            assert summary.n_computed == args.images and not summary.errors, summary
            row[f"{engine}_images_per_s"] = summary.images_per_second
    row["ray_over_local"] = row["ray_images_per_s"] / row["local_images_per_s"]
    row["machine"] = machine()
    print(pd.DataFrame([row]).T.to_string(header=False))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "ray_overhead.csv"
    pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
