"""A job over WebDataset shards on S3: the bytes each process fetches and the time, side by side.

    python benchmarks/remote_shards.py                      # 4 shards of 200 samples, 2 decoding workers
    python benchmarks/remote_shards.py --shards 8 --samples 500

A real S3 API on localhost (moto in server mode) holds the shards; each sample is a 224x224 JPEG of noise
(about 100 kB) and a ``.cls``. Both ways run the local engine with a tiny backbone, cold (empty cache):

- **listed**: the manifest is built first by indexing each shard through fsspec's ``tar://`` filesystem
  (what featx did before shards were streamed), then the decoding workers read the members by range;
- **streamed**: the job's own way, each shard read once, front to back, by the worker that decodes it.

Every ``S3File._fetch_range`` is counted with its process (forked workers inherit the counter), so the
table shows what the driver fetched and what the workers fetched, against the shards' own size, and the
driver's Python memory (tracemalloc): its peak during the job and what it still holds after. Rows go to
benchmarks/results/remote_shards.csv with the CPU model.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import tiny_backbone  # noqa: E402,F401  (registers "tiny")
from PIL import Image  # noqa: E402

from featx._machine import cpu_model  # noqa: E402
from featx.cache import FeatureCache  # noqa: E402
from featx.engines import RunOptions  # noqa: E402
from featx.inputs import sources  # noqa: E402
from featx.inputs.shards import Shards, shard_manifest  # noqa: E402
from featx.job import run_extract_job  # noqa: E402
from featx.models.build import build_network  # noqa: E402
from featx.models.network import FrozenNetwork  # noqa: E402


def start_s3() -> subprocess.Popen:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    raise RuntimeError("moto did not start")


def shard_bytes(number: int, samples: int) -> bytes:
    rng = np.random.default_rng(number)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(samples):
            image = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(
                image, "JPEG", quality=95
            )
            for extension, data in (("jpg", image.getvalue()), ("cls", str(i % 10).encode())):
                info = tarfile.TarInfo(f"{number:04d}-{i:06d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run_once(way: str, shards: list[str], network: FrozenNetwork, log: Path, workers: int) -> dict:
    """One cold job, its time, the bytes each process fetched, and the driver's Python memory."""
    log.write_text("")
    namespace = FeatureCache(tempfile.mkdtemp()).namespace(network.fingerprint)
    tracemalloc.start()
    start = time.perf_counter()
    source = shard_manifest(shards) if way == "listed" else Shards(shards)
    summary = run_extract_job(source, network, namespace, RunOptions(num_workers=workers, progress=False))
    seconds = time.perf_counter() - start
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    fetches = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    driver = sum(size for pid, size in fetches if pid == os.getpid())
    fetched = sum(size for _, size in fetches)
    return {
        "way": way,
        "images": summary.n_images,
        "seconds": round(seconds, 2),
        "driver_MB": round(driver / 1e6, 1),
        "workers_MB": round((fetched - driver) / 1e6, 1),
        "fetched": fetched,
        "requests": len(fetches),
        "driver_peak_MB": round(peak / 1e6, 1),
        "driver_held_after_MB": round(held / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each way, interleaved; the best time counts"
    )
    args = parser.parse_args()

    import fsspec
    import fsspec.implementations.tar
    import s3fs

    server = start_s3()
    try:
        filesystem = fsspec.filesystem("s3", skip_instance_cache=True)
        filesystem.mkdir("bench")
        total = 0
        for number in range(args.shards):
            data = shard_bytes(number, args.samples)
            filesystem.pipe(f"bench/shard-{number:04d}.tar", data)
            total += len(data)
        shards = [f"s3://bench/shard-{number:04d}.tar" for number in range(args.shards)]
        log = Path(tempfile.mkdtemp()) / "fetches.log"
        fetch = s3fs.core.S3File._fetch_range

        def counted(self, start, end):
            data = fetch(self, start, end)
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()} {len(data)}\n")
            return data

        s3fs.core.S3File._fetch_range = counted
        network = build_network("tiny", weights=None, precision="fp32", compile=False)
        rows: dict[str, dict] = {}
        for _ in range(args.repeats):
            for way in ("listed", "streamed"):
                row = run_once(way, shards, network, log, args.workers)
                row.update(
                    shards_MB=round(total / 1e6, 1),
                    fetched_per_shard_byte=round(row.pop("fetched") / total, 2),
                )
                best = rows.get(way)
                rows[way] = row if best is None or row["seconds"] < best["seconds"] else best
                sources._shard_in.cache_clear()  # the listed way's memos: each run starts cold
                fsspec.implementations.tar.TarFileSystem.clear_instance_cache()
    finally:
        server.terminate()
    columns = [
        "way",
        "images",
        "seconds",
        "shards_MB",
        "driver_MB",
        "workers_MB",
        "fetched_per_shard_byte",
        "requests",
        "driver_peak_MB",
        "driver_held_after_MB",
    ]
    table = pd.DataFrame(list(rows.values()))[columns].assign(
        cpu=cpu_model(), workers=args.workers, repeats=args.repeats
    )
    print(table.drop(columns="cpu").to_string(index=False))
    print(
        f"CPU: {cpu_model()}; best of {args.repeats}, streamed / listed time: "
        f"{rows['streamed']['seconds'] / rows['listed']['seconds']:.2f}x"
    )
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    table.to_csv(results / "remote_shards.csv", index=False)


if __name__ == "__main__":
    main()
