"""The batch job on Ray Data: hash and decode in CPU tasks, run the frozen network in an actor pool.

    featx extract SOURCE --backbone resnet50 --cache /shared/cache --engine ray [--ray-address ADDR]

The unit of work is the local engine's: a batch of decoded images -> ``FrozenNetwork`` -> one atomic
``Namespace.write`` into the on-disk cache. So a re-run computes only what is missing, a killed run keeps
its finished shards, and everything downstream reads the same namespaces. Every node must see the cache
directory (shared storage) and the image paths. Ray stays optional: ``pip install 'featx[ray]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from featx.cache import FeatureCache, Namespace, Store
from featx.datasets import load_manifest
from featx.engines.base import Filled
from featx.engines.plan import plan
from featx.errors import FeatxError, ImageError, ParameterError
from featx.images import MAX_PIXELS, content_key
from featx.job import JobSummary, run_extract_job
from featx.network import FrozenNetwork, NetworkSpec
from featx.preprocessing import Preprocessing


def _ray():
    try:
        import ray
    except ImportError as error:
        raise ImportError("the Ray engine needs Ray Data: pip install 'featx[ray]'") from error
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster at ``address`` ('auto' finds a running one), or start a local Ray instance."""
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _failure_columns(errors: Sequence[ImageError | None]) -> dict[str, np.ndarray]:
    return {
        "error_kind": np.array([e.kind if e else "" for e in errors], dtype=object),
        "error_reason": np.array([e.reason if e else "" for e in errors], dtype=object),
    }


def _hash_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Content keys, as the local engine computes them; unreadable inputs get an empty key and a reason."""
    keys, errors = [], []
    for index, path in zip(batch["index"], batch["path"]):
        try:
            keys.append(content_key(str(path), int(index)))
            errors.append(None)
        except ImageError as error:
            keys.append("")
            errors.append(error)
    return {"index": batch["index"], "key": np.array(keys, dtype=object), **_failure_columns(errors)}


def _decode_batch(batch: dict[str, np.ndarray], preprocessing: Preprocessing,
                  max_pixels: int) -> dict[str, np.ndarray]:
    """Decode, resize and crop to uint8 (the local workers' step); failures keep a zero image, never stored."""
    pixels = np.zeros((len(batch["index"]), 3, preprocessing.crop, preprocessing.crop), dtype=np.uint8)
    errors = []
    for row, (index, path) in enumerate(zip(batch["index"], batch["path"])):
        try:
            pixels[row] = preprocessing.decode(str(path), int(index), max_pixels).numpy()
            errors.append(None)
        except ImageError as error:
            errors.append(error)
    return {"index": batch["index"], "key": batch["key"], "pixels": pixels, **_failure_columns(errors)}


class _Embed:
    """A Ray actor: one frozen network, loaded once; each batch is computed and committed to the cache.

    It is built from the driver's resolved spec (its measured precision, not "auto") and refuses to start
    unless its own fingerprint is the driver's: vectors are never stored under a fingerprint they do not
    match (another torch, another quantization, another precision on that node).
    """

    def __init__(self, spec: NetworkSpec, fingerprint: dict[str, Any], cache_path: str, threads: int):
        torch.set_num_threads(threads)
        self.network = FrozenNetwork(spec)
        if self.network.fingerprint != fingerprint:
            differing = sorted(k for k in {**fingerprint, **self.network.fingerprint}
                               if fingerprint.get(k) != self.network.fingerprint.get(k))
            raise FeatxError(f"this worker's network differs from the driver's in {differing} "
                             f"({ {k: self.network.fingerprint.get(k) for k in differing} } here, "
                             f"{ {k: fingerprint.get(k) for k in differing} } on the driver); refusing to write "
                             "its vectors into the driver's cache namespace")
        self.namespace = Namespace(Path(cache_path))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        good = batch["error_kind"] == ""
        if good.any():
            vectors = self.network(torch.from_numpy(np.ascontiguousarray(batch["pixels"][good])))
            self.namespace.write([str(k) for k in batch["key"][good]], vectors)
        return {"index": batch["index"], "error_kind": batch["error_kind"], "error_reason": batch["error_reason"]}


def _errors(frame, paths: Sequence[str]) -> list[ImageError]:
    failed = frame[frame["error_kind"] != ""]
    return [ImageError(int(i), paths[int(i)], kind, reason)
            for i, kind, reason in zip(failed["index"], failed["error_kind"], failed["error_reason"])]


class RayEngine:
    """The local engine's work on Ray Data: the same keys, errors and counts, the same cache.

    ``address`` joins a cluster ('auto': the running one; default: start a local instance).
    ``concurrency`` model actors (default: one per GPU, else one); ``num_workers`` caps the decoding tasks
    running at once (default: Ray's choice). ``fail_fast`` raises the first failure after the run.
    """

    def __init__(self, address: str | None = None, concurrency: int | None = None):
        self.address, self.concurrency = address, concurrency

    def fill(
        self,
        images: Sequence[str | os.PathLike],
        network: FrozenNetwork,
        store: Store,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        progress: bool = False,
        fail_fast: bool = False,
        max_pixels: int = MAX_PIXELS,
    ) -> Filled:
        if not isinstance(store, Namespace):
            raise ParameterError("the Ray engine writes to an on-disk cache that every node sees: pass cache_dir / --cache")
        if network.device.type not in ("cpu", "cuda"):
            raise ParameterError(f"the Ray engine runs on cpu or cuda, not {network.device}")
        ray = _ray()
        connect(self.address)
        ray.data.DataContext.get_current().enable_progress_bars = progress  # Ray Data's own bars
        paths = [os.fspath(p) for p in images]
        items = ray.data.from_items([{"index": i, "path": p} for i, p in enumerate(paths)])
        hashed = items.map_batches(_hash_batch, batch_size=1024).to_pandas().sort_values("index")
        keys = [k or None for k in hashed["key"]]
        unreadable = _errors(hashed, paths)
        if fail_fast and unreadable:
            raise unreadable[0]
        todo = plan(keys, unreadable, store)
        decode_errors: list[ImageError] = []
        n_computed = 0
        if todo.todo:
            done = self._compute(ray, paths, keys, todo.todo, network, store, batch_size, num_workers, max_pixels)
            decode_errors = _errors(done, paths)
            n_computed = len(done) - len(decode_errors)
        filled = todo.finish(decode_errors, n_computed)
        if fail_fast and filled.errors:
            raise filled.errors[0]
        return filled

    def _compute(self, ray, paths: list[str], keys: list[str | None], todo: list[int], network: FrozenNetwork,
                 store: Namespace, batch_size: int, num_workers: int | None, max_pixels: int):
        gpus = int(ray.cluster_resources().get("GPU", 0)) if network.device.type == "cuda" else 0
        actors = self.concurrency or max(1, gpus)
        # On CPUs each actor's thread pool takes its share of the cluster's cores, while reserving one
        # logical CPU only, so Ray still schedules the decoding tasks (which yield to it, as locally).
        threads = 1 if gpus else max(1, int(ray.cluster_resources().get("CPU", 1)) // actors)
        items = ray.data.from_items([{"index": i, "path": paths[i], "key": keys[i]} for i in todo])
        decoded = items.map_batches(_decode_batch, fn_kwargs={"preprocessing": network.preprocessing,
                                                                   "max_pixels": max_pixels},
                                    batch_size=batch_size, concurrency=num_workers)
        embedded = decoded.map_batches(
            _Embed, fn_constructor_kwargs={"spec": network.spec.replace(precision=network.precision),
                                           "fingerprint": network.fingerprint, "cache_path": str(store.path),
                                           "threads": threads},
            batch_size=batch_size, concurrency=actors, num_gpus=1 if gpus else 0, num_cpus=1,
        )
        done = embedded.to_pandas()
        store.refresh()  # the actors committed shards from their own processes
        return done


def extract(
    source: str | os.PathLike,
    backbone: str = "resnet50",
    *,
    cache_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    weights: Any = "DEFAULT",
    layer: str | None = None,
    pooling: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 64,
    on_error: str = "skip",
    address: str | None = None,
    concurrency: int | None = None,
    progress: bool = False,
) -> JobSummary:
    """``featx extract SOURCE --engine ray`` from Python: cache a manifest's features, optionally write ``out``."""
    network = FrozenNetwork(NetworkSpec(backbone, weights, layer, pooling, device, precision))
    namespace = FeatureCache(cache_dir).namespace(network.fingerprint)
    return run_extract_job(load_manifest(source), network, namespace, batch_size=batch_size, on_error=on_error,
                           out=out, progress=progress, engine=RayEngine(address, concurrency))
