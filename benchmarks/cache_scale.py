"""The feature cache at 100k and 1M simulated vectors, before and after ``featx cache compact``.

    python benchmarks/cache_scale.py                         # 100k and 1M vectors of 512 floats
    python benchmarks/cache_scale.py --sizes 100000          # a quicker run

A job commits one shard per batch, so the simulated cache holds shards of ``--shard-rows`` (64: 15,625
shards at 1M). For each size, side by side in one process, it prints:

- open + 10-key lookup in a fresh process's state (goal: <= 0.3 s at 1M), and again in the same process
  (a second ``transform`` of a grid search: only shards committed since are read);
- the index's bytes per key (goal: <= 64), and all the memory an open namespace keeps (tracemalloc);
- reading every vector through the cache (checksums verified) against one ``np.load`` of the same
  matrix (goal: >= 0.8x), in storage order and shuffled, ``--rounds`` interleaved rounds, best and median;
  in storage order both with the keys as strings and as the S64 array engines hold them (``s64_keys``: how
  ``extract`` and the job read, without encoding the keys again).

Then one job's overhead per image outside the network, at 10k and 100k small PNGs with a tiny backbone
(``--job-images``): the whole warm re-run (every vector cached: read, hash, look up, write the output) in
a new process's state without the stat memo kept beside the cache (every file read to key it), with it,
and again in the same process (files keyed by their stat signature, not read), and
its parts measured alone: reading, hashing, the cache lookup and the output writing. ``--sizes`` with no
value skips the cache part.

Rows go to benchmarks/results/cache_scale.csv and cache_scale_job.csv with the CPU model. Needs about
4.5 GB of disk at 1M.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
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
from featx.cache import FeatureCache, entry_checksums, index, stat_memo  # noqa: E402
from featx.cache.compact import compact  # noqa: E402
from featx.cache.files import KEY_DTYPE  # noqa: E402
from featx.engines import RunOptions  # noqa: E402
from featx.engines.local import seen  # noqa: E402
from featx.feature_files import write_features  # noqa: E402
from featx.inputs.images import content_key, read_content  # noqa: E402
from featx.inputs.manifests import load_manifest  # noqa: E402
from featx.job import run_extract_job  # noqa: E402
from featx.models.build import build_network  # noqa: E402

FINGERPRINT = {"backbone": "simulated", "node": "pool"}


def simulate(root: Path, n: int, dim: int, shard_rows: int, seed: int = 0) -> tuple[list[str], Path]:
    """Shards in the cache's own format (written without fsync: this is set-up, not the thing measured),
    and the same matrix as one .npy for the comparison."""
    namespace = FeatureCache(root / "cache").namespace(FINGERPRINT)
    rng = np.random.default_rng(seed)
    keys = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(n)]
    matrix = np.lib.format.open_memmap(root / "matrix.npy", mode="w+", dtype=np.float32, shape=(n, dim))
    for number, start in enumerate(range(0, n, shard_rows)):
        vectors = rng.random((min(shard_rows, n - start), dim), dtype=np.float32)
        matrix[start : start + len(vectors)] = vectors
        rows = np.empty(len(vectors), dtype=KEY_DTYPE)
        rows["key"] = [k.encode() for k in keys[start : start + len(vectors)]]
        rows["crc32"] = entry_checksums(rows["key"], vectors, namespace.tag)
        shard = f"{number:020d}-0-simulated"
        np.save(namespace.path / f"{shard}.vectors.npy", vectors)
        np.save(namespace.path / f"{shard}.keys.npy", rows)
    matrix.flush()
    del matrix
    return keys, root / "cache"


def measure(cache: Path, keys: list[str], matrix_path: Path, label: str, rounds: int) -> dict:
    rng = np.random.default_rng(1)
    probe = [keys[i] for i in rng.choice(len(keys), 10, replace=False)]
    index._SHARED.clear()  # a fresh process's state
    start = time.perf_counter()
    namespace = FeatureCache(cache).namespace(FINGERPRINT)
    assert namespace.missing(probe) == []
    namespace.read(probe)
    cold = time.perf_counter() - start
    index._SHARED.clear()
    tracemalloc.start()
    retained = FeatureCache(cache).namespace(FINGERPRINT)
    retained.missing(probe)
    retained_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    start = time.perf_counter()
    again = FeatureCache(cache).namespace(FINGERPRINT)
    assert again.missing(probe) == []
    again.read(probe)
    warm = time.perf_counter() - start
    shuffled = [keys[i] for i in rng.permutation(len(keys))]
    encoded = np.asarray(keys, dtype="S64")  # as engines hold keys, and extract and the job read them
    times: dict[str, list[float]] = {"load": [], "stored": [], "encoded": [], "shuffled": []}
    for _ in range(rounds):  # interleaved: page faults on this kind of VM vary from call to call
        for name, call in (
            ("load", lambda: np.load(matrix_path)),
            ("stored", lambda: again.read(keys)),
            ("encoded", lambda: again.read(encoded)),
            ("shuffled", lambda: again.read(shuffled)),
        ):
            start = time.perf_counter()
            result = call()
            times[name].append(time.perf_counter() - start)
            del result
    vectors, corrupt = again.read(keys)
    assert not corrupt and np.array_equal(vectors, np.load(matrix_path))
    best = {name: min(values) for name, values in times.items()}
    median = {name: float(np.median(values)) for name, values in times.items()}
    return {
        "cache": label,
        "vectors": len(keys),
        "shards": again.stats()["shards"],
        "open_lookup10_s": round(cold, 3),
        "reopen_lookup10_s": round(warm, 4),
        "index_bytes_per_key": round(again.index().nbytes / len(keys), 1),
        "retained_bytes_per_key": round(retained_bytes / len(keys), 1),
        "np_load_s": round(best["load"], 3),
        "bulk_read_s": round(best["stored"], 3),
        "bulk_vs_np_load": round(best["load"] / best["stored"], 2),
        "median_bulk_vs_np_load": round(median["load"] / median["stored"], 2),
        "s64_keys_vs_np_load": round(best["load"] / best["encoded"], 2),
        "median_s64_keys_vs_np_load": round(median["load"] / median["encoded"], 2),
        "shuffled_read_s": round(best["shuffled"], 3),
        "shuffled_vs_np_load": round(best["load"] / best["shuffled"], 2),
    }


def job_overhead(n: int, workdir: Path | None) -> dict:
    """Microseconds per image of a warm re-run, whole and by part (tiny backbone, 32x32 PNGs)."""
    root = Path(tempfile.mkdtemp(prefix="featx-job-overhead-", dir=workdir))
    try:
        folder = root / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
        manifest = load_manifest(folder)
        network = build_network("tiny", weights=None, precision="fp32", compile=False)
        namespace = FeatureCache(root / "cache").namespace(network.fingerprint)
        start = time.perf_counter()
        run_extract_job(
            manifest, network, namespace, RunOptions(batch_size=256, progress=False), out=root / "cold.npy"
        )
        cold = time.perf_counter() - start
        warm = {}
        for process in ("new_no_memo", "new", "same"):  # a new process's state, then the same process again
            if process.startswith("new"):
                index._SHARED.clear()
                seen._SEEN.clear()
            if process == "new_no_memo":
                shutil.rmtree(root / "cache" / stat_memo.FOLDER)  # every file read to key it (and memoized)
            start = time.perf_counter()
            namespace = FeatureCache(root / "cache").namespace(network.fingerprint)
            warm_summary = run_extract_job(
                manifest,
                network,
                namespace,
                RunOptions(batch_size=256, progress=False),
                out=root / "warm.npy",
            )
            warm[process] = time.perf_counter() - start
            assert warm_summary.n_computed == 0
        paths = manifest["path"].tolist()
        start = time.perf_counter()
        contents = [read_content(p) for p in paths]
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        keys = [content_key(c) for c in contents]
        hash_s = time.perf_counter() - start
        index._SHARED.clear()
        start = time.perf_counter()
        fresh = FeatureCache(root / "cache").namespace(network.fingerprint)
        assert fresh.missing(keys) == []
        vectors, _ = fresh.read(keys)
        lookup_s = time.perf_counter() - start
        start = time.perf_counter()
        write_features(
            root / "again.npy",
            [(manifest, vectors)],
            vectors.shape[1],
            len(vectors),
            network.fingerprint,
            manifest.iloc[:0],
        )
        write_s = time.perf_counter() - start
        per = 1e6 / n
        return {
            "images": n,
            "cold_run_us": round(cold * per),
            "warm_new_process_no_memo_us": round(warm["new_no_memo"] * per),
            "warm_new_process_us": round(warm["new"] * per),
            "warm_same_process_us": round(warm["same"] * per),
            "read_us": round(read_s * per, 1),
            "hash_us": round(hash_s * per, 1),
            "lookup_and_read_vectors_us": round(lookup_s * per, 1),
            "write_out_us": round(write_s * per, 1),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--shard-rows", type=int, default=64)
    parser.add_argument("--job-images", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds of each bulk read (best and median)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to build the caches (default: a temp dir)"
    )
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="featx-cache-scale-", dir=args.workdir))
        try:
            start = time.perf_counter()
            keys, cache = simulate(root, n, args.dim, args.shard_rows)
            print(f"{n} vectors simulated in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            rows.append(measure(cache, keys, root / "matrix.npy", "as jobs leave it", args.rounds))
            start = time.perf_counter()
            compacted = compact(FeatureCache(cache).namespace(FINGERPRINT))
            compact_s = time.perf_counter() - start
            print(f"compact: {compacted} in {compact_s:.1f} s", file=sys.stderr)
            rows.append(
                {
                    **measure(cache, keys, root / "matrix.npy", "compacted", args.rounds),
                    "compact_s": round(compact_s, 1),
                }
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    out = REPO / "benchmarks" / "results" / "cache_scale.csv"
    out.parent.mkdir(exist_ok=True)
    if rows:
        table = pd.DataFrame(rows).assign(cpu=cpu_model())
        print(table.drop(columns="cpu").to_string(index=False))
        table.to_csv(out, index=False)
    print(f"CPU: {cpu_model()}")
    if args.job_images:
        jobs = pd.DataFrame([job_overhead(n, args.workdir) for n in args.job_images]).assign(cpu=cpu_model())
        print("\none job's overhead per image outside the network (microseconds; tiny backbone, 32x32 PNGs):")
        print(jobs.drop(columns="cpu").to_string(index=False))
        jobs.to_csv(out.with_name("cache_scale_job.csv"), index=False)


if __name__ == "__main__":
    main()
