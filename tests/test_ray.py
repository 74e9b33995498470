"""The Ray engine on a local 2-CPU Ray instance: the local engine's vectors, errors and resumability."""

import dataclasses
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPEATED, REPO, assert_same_vectors, repeated_paths
from test_cache import featx_cli
from torch.utils.data import DataLoader

from featx import FeatureCache, FrozenNetwork, build_network, load_features
from featx.errors import ParameterError
from featx.inputs.manifests import load_job_source, load_manifest
from featx.job import run_extract_job
from featx.models.spec import NetworkSpec

ray = pytest.importorskip("ray", reason="the Ray engine is an optional extra: pip install 'featx[ray]'")
from featx import engines  # noqa: E402
from featx.engines.base import RunOptions  # noqa: E402

TINY = "tiny_backbone:TINY"  # importable by Ray's worker processes (PYTHONPATH below), unlike a registration


@pytest.fixture(scope="module")
def local_ray():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPO / "tests"))  # Ray's workers inherit the driver's environment
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield
        ray.shutdown()


def job(manifest, tmp_path, engine, name):
    network = build_network(TINY, weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / f"cache-{name}").namespace(network.fingerprint)
    out = tmp_path / f"{name}.parquet"
    summary = run_extract_job(
        load_job_source(manifest),
        network,
        namespace,
        RunOptions(batch_size=4, progress=False),
        out=out,
        engine=engines.get(engine),
    )
    return summary, out


def test_ray_engine_gives_the_local_engines_vectors_and_errors_and_a_rerun_computes_nothing(
    local_ray, messy_folder, tmp_path
):
    local, local_out = job(messy_folder, tmp_path, "local", "local")
    remote, remote_out = job(messy_folder, tmp_path, "ray", "ray")
    assert [(e.index, e.kind) for e in remote.errors] == [(e.index, e.kind) for e in local.errors]
    assert {e.kind for e in remote.errors} == {
        "empty",
        "truncated",
        "not_an_image",
        "decompression_bomb",
        "missing",
    }
    assert (remote.n_computed, remote.n_cached) == (local.n_computed, 0) == (6, 0)
    X_local, meta_local = load_features(local_out)
    X_ray, meta_ray = load_features(remote_out)
    assert meta_ray["path"].tolist() == meta_local["path"].tolist()
    # fp32 on the CPU: Ray cuts the same batches here, so the vectors are bit-identical
    np.testing.assert_array_equal(X_ray, X_local)

    again, _ = job(messy_folder, tmp_path, "ray", "ray")
    assert (again.n_computed, again.n_cached, len(again.errors)) == (0, 6, 5)


def test_ray_streams_shards_as_the_local_engine_does_same_rows_vectors_failures_and_skips(
    local_ray, messy_shards, tmp_path
):
    local, local_out = job(messy_shards["pattern"], tmp_path, "local", "local")
    remote, remote_out = job(messy_shards["pattern"], tmp_path, "ray", "ray")
    assert {e.source: e.kind for e in remote.errors} == messy_shards["failed"]
    assert [(e.index, e.source, e.kind) for e in remote.errors] == [
        (e.index, e.source, e.kind) for e in local.errors
    ]
    assert [entry for entry, _ in remote.skipped] == messy_shards["skipped"]
    assert (
        (remote.n_images, remote.n_computed, remote.n_cached)
        == (local.n_images, local.n_computed, 0)
        == (5, 3, 0)
    )
    X_local, meta_local = load_features(local_out)
    X_ray, meta_ray = load_features(remote_out)
    pd.testing.assert_frame_equal(meta_ray, meta_local)
    assert meta_ray["label"].astype(str).tolist() == messy_shards["labels"]
    assert_same_vectors(X_ray, X_local)  # the batches differ (shards end them), so rounding may too

    again, _ = job(messy_shards["pattern"], tmp_path, "ray", "ray")
    assert (again.n_computed, again.n_cached, len(again.errors)) == (0, 3, 4)


def test_a_local_job_in_a_process_connected_to_ray_starts_its_decoders_from_a_fork_server(
    local_ray, messy_folder, tmp_path, monkeypatch
):
    """A worker forked from a Ray driver inherits its gRPC state mid-flight, which gRPC does not support
    (docs/ray.md)."""
    from featx.engines.local import engine as local_engine

    contexts = []

    def recording_loader(*args, **kwargs):
        contexts.append(kwargs.get("multiprocessing_context"))
        return DataLoader(*args, **kwargs)

    monkeypatch.setattr(local_engine, "DataLoader", recording_loader)
    local, _ = job(messy_folder, tmp_path, "local", "local")  # 11 inputs in batches of 4: one decoder
    assert local.n_computed == 6
    assert [context.get_start_method() for context in contexts] == ["forkserver"]
    servers = [
        pid for pid in child_pids(os.getpid()) if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert servers, "no fork server among the driver's children: the decoder was forked from the driver"


@pytest.mark.slow
def test_ray_jobs_between_local_jobs_in_one_process_leave_the_raylet_standing(
    local_ray, messy_folder, messy_shards, tmp_path
):
    """The pattern that preceded Ray 2.60's raylet aborts (docs/contributing.md): a local job forking
    decoders in a Ray driver just after a Ray job's actors were killed, then a Ray stream, whose first
    lease request carried a 28-byte lease ID."""
    job(messy_folder, tmp_path, "local", "local-files")
    job(messy_folder, tmp_path, "ray", "ray-files")
    again, _ = job(messy_folder, tmp_path, "ray", "ray-files")
    job(messy_shards["pattern"], tmp_path, "local", "local-shards")
    streamed, _ = job(messy_shards["pattern"], tmp_path, "ray", "ray-shards")
    assert again.n_cached == 6 and streamed.n_computed > 0
    assert [node["Alive"] for node in ray.nodes()] == [True]  # an aborted raylet also ends this process


def child_pids(parent: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.parametrize("backbone", [TINY, "timm/test_vit.r160_in1k"])  # a user's module; timm's zoo by name
def test_ray_vectors_land_in_the_namespace_the_local_engine_and_transformer_read(
    local_ray, image_folder, tmp_path, backbone
):
    network = build_network(backbone, weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    summary = run_extract_job(
        load_manifest(image_folder), network, namespace, RunOptions(progress=False), engine=engines.get("ray")
    )
    assert summary.n_computed == 6
    local_rerun = run_extract_job(load_manifest(image_folder), network, namespace, RunOptions(progress=False))
    assert (local_rerun.n_computed, local_rerun.n_cached) == (0, 6)


def test_a_list_of_files_is_cut_into_blocks_so_that_every_actor_can_get_work(
    local_ray, image_folder, tmp_path, monkeypatch
):
    """One block would be one task: one actor doing the whole job while the others (the cluster's GPUs) idle."""
    import warnings

    from featx.engines.ray import engine as ray_engine

    monkeypatch.setattr(ray_engine, "BLOCK_BATCHES", 1)
    paths = load_manifest(image_folder)["path"].tolist()
    network = build_network(TINY, weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filled = engines.get("ray", concurrency=2).fill(paths, network, namespace, RunOptions(batch_size=2))
    assert filled.n_computed == 6 and not filled.errors
    assert not [w for w in caught if "won't fully utilize the available concurrency" in str(w.message)]


def test_ray_engine_refuses_an_in_memory_store_by_name(local_ray):
    from featx.cache import MemoryNamespace

    network = build_network(TINY, weights=None)
    with pytest.raises(ValueError, match="on-disk cache that every node sees"):
        engines.get("ray").fill(["x.png"], network, MemoryNamespace(network.fingerprint))


@pytest.mark.slow
def test_featx_extract_engine_ray_on_the_command_line(image_folder, tmp_path):
    out = tmp_path / "ray.parquet"
    done = featx_cli(
        "extract",
        image_folder,
        "--backbone",
        TINY,
        "--weights",
        "none",
        "--precision",
        "fp32",
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
        "--engine",
        "ray",
        "--quiet",
        fresh_process=True,  # the command starts and stops a Ray instance of its own
    )
    assert done.returncode == 0, done.stderr
    assert "computed: 6" in done.stdout
    X, meta = load_features(out)
    assert X.shape == (6, 64) and sorted(set(meta["label"])) == ["cat", "dog"]
    assert pd.read_parquet(out).shape[0] == 6


USER_SESSION = """
import dataclasses
import sys

import ray
from featx import FeatureCache, engines
from featx.engines.base import RunOptions
from featx.errors import FeatxError
from featx.inputs.manifests import load_manifest
from featx.models.spec import NetworkSpec

folder, shards, cache = sys.argv[1:]
paths = load_manifest(folder)["path"].tolist()
engine = engines.get("ray")
network = engine.network(NetworkSpec("tiny_backbone:TINY", weights=None, precision="fp32"))
namespace = FeatureCache(cache).namespace(network.fingerprint)
print("fill", engine.fill(paths, network, namespace, RunOptions(batch_size=2)).n_computed, flush=True)
foreign = {**network.fingerprint, "precision": "bf16"}  # refused by every actor: the job stops mid-way
try:
    engine.fill(paths, dataclasses.replace(network, fingerprint=foreign), FeatureCache(cache).namespace(foreign))
except FeatxError:
    print("refused", flush=True)
manifest, filled = engine.stream([shards], network, namespace, RunOptions(batch_size=2))
print("stream", len(manifest), flush=True)
ray.shutdown()  # and a new local instance for the next job, in the same process
print("again", engine.fill(paths, network, namespace, RunOptions(batch_size=2)).n_cached, flush=True)
"""


@pytest.mark.slow
def test_a_users_jobs_back_to_back_in_one_process_each_run_after_one_refused_mid_way_and_a_restart(
    image_folder, tmp_path
):
    """Ray 2.60's raylet abort (docs/contributing.md) came with a dataset starting just after another's
    actors were killed: here a user's process runs a job, one stopped mid-way, a stream, then a job on a
    new Ray instance, and each must finish with its own result."""
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(image_folder.rglob("*.png")):
            tar.add(path, arcname=f"{path.parent.name}-{path.stem}.png")
    done = subprocess.run(
        [sys.executable, "-c", USER_SESSION, str(image_folder), str(shard), str(tmp_path / "cache")],
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["fill", "6", "refused", "stream", "6", "again", "6"]


USER_SCRIPT = """
import sys
import ray
from featx import FeatureCache, build_network
from featx.engines import RunOptions
from featx.inputs.manifests import load_manifest
from featx.job import run_extract_job


def main():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    network = build_network("tiny_backbone:TINY", weights=None, precision="fp32")
    namespace = FeatureCache(sys.argv[2]).namespace(network.fingerprint)
    summary = run_extract_job(load_manifest(sys.argv[1]), network, namespace, RunOptions(batch_size=2))
    print("computed", summary.n_computed)

"""


@pytest.mark.slow
@pytest.mark.parametrize("guarded", [True, False])
def test_a_script_that_runs_a_local_job_beside_ray_needs_a_main_guard_and_is_told_so(
    image_folder, tmp_path, guarded
):
    """Decoders from the fork server import the script again (docs/ray.md): an unguarded job there starts
    processes while the worker starts, which Python refuses; featx's error says what to write."""
    script = tmp_path / "job.py"
    script.write_text(USER_SCRIPT + ('if __name__ == "__main__":\n    main()\n' if guarded else "main()\n"))
    done = subprocess.run(
        [sys.executable, str(script), str(image_folder), str(tmp_path / "cache")],
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if guarded:
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split() == ["computed", "6"]
    else:
        assert done.returncode != 0 and "computed" not in done.stdout
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("featx.errors.FeatxError: DataLoader worker")
        assert 'put the job under `if __name__ == "__main__":`, or pass num_workers=0' in last


def test_a_worker_whose_network_differs_from_the_jobs_fingerprint_refuses_and_the_job_stops_in_one_error(
    local_ray, image_folder, tmp_path
):
    from featx.engines.ray.engine import _Embed
    from featx.errors import FeatxError

    engine = engines.get("ray")
    network = engine.network(NetworkSpec(TINY, weights=None, precision="fp32"))
    foreign = {**network.fingerprint, "precision": "bf16"}  # as if "auto" had resolved otherwise elsewhere
    refusing = _Embed(network.spec, foreign, str(tmp_path / "direct"), threads=1)
    assert "differs from the job's in ['precision']" in refusing.refusal
    assert not (tmp_path / "direct").exists()

    namespace = FeatureCache(tmp_path / "cache").namespace(foreign)
    with pytest.raises(
        FeatxError, match=r"differs from the job's in \['precision'\].*refusing to write"
    ) as caught:
        engine.fill(
            load_manifest(image_folder)["path"].tolist(),
            dataclasses.replace(network, fingerprint=foreign),
            namespace,
            RunOptions(batch_size=4),
        )
    assert type(caught.value) is FeatxError  # featx's own error, so the command line prints one line
    assert not list(namespace.path.glob("*.vectors.npy"))
    assert _Embed(network.spec, network.fingerprint, str(tmp_path / "direct"), threads=1).refusal == ""


def test_an_actor_does_not_compute_again_content_it_committed_for_an_earlier_batch(image_folder, tmp_path):
    from featx.engines.ray.engine import _Embed
    from featx.engines.ray.tasks import read_key_decode_batch

    network = build_network(TINY, weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    actor = _Embed(network.spec, network.fingerprint, str(namespace.path), threads=1)
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    batch = read_key_decode_batch(
        {"index": np.arange(3), "path": np.array(paths[:3])}, network.preprocessing, 10**8, known=set()
    )
    assert actor(batch)["computed"].all()
    shards = namespace.shard_names()
    assert not actor(batch)["computed"].any() and namespace.shard_names() == shards


def test_rows_naming_one_path_many_times_are_read_once_and_each_gets_its_own_outcome(
    local_ray, tmp_path, monkeypatch
):
    from featx.engines.ray.engine import RayEngine

    paths = repeated_paths(tmp_path, 400)
    sent = []
    original = RayEngine._run
    monkeypatch.setattr(
        RayEngine,
        "_run",
        lambda self, ray, paths, *rest: sent.extend(paths) or original(self, ray, paths, *rest),
    )
    network = build_network(TINY, weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    filled = engines.get("ray").fill(paths, network, namespace, RunOptions(batch_size=4))
    assert sent == paths[:4]  # the decoding tasks see each path once
    assert (filled.n_computed, filled.n_cached) == (2, 198)
    assert (filled.keys[0::4] == filled.keys[0]).all() and (filled.keys[1::4] == filled.keys[1]).all()
    assert [e.index for e in filled.errors] == [row for row in range(400) if row % 4 >= 2]
    kinds = {(REPEATED[e.index % 4], e.kind) for e in filled.errors}
    assert kinds == {("missing.png", "missing"), ("garbage.png", "not_an_image")}
    assert all(e.source == paths[e.index] for e in filled.errors)  # each row under its own name


def test_a_parquet_table_is_read_by_ray_datas_own_reader_with_the_local_engines_vectors_and_named_errors(
    local_ray, tmp_path, monkeypatch
):
    from conftest import encode, photo
    from test_sources import image_table

    good = [encode(photo(seed)) for seed in range(5)]
    cells = [good[0], good[1], None, b"not a picture", good[2], good[3], good[4], good[0]]
    table = image_table(tmp_path / "train.parquet", cells, list("abababab"), row_group_size=3)
    read = []
    real = ray.data.read_parquet
    monkeypatch.setattr(
        ray.data, "read_parquet", lambda *args, **kwargs: read.append(args) or real(*args, **kwargs)
    )
    local, local_out = job(table, tmp_path, "local", "local")
    remote, remote_out = job(table, tmp_path, "ray", "ray")
    assert read == [(str(table),)]  # the driver read the footer only; tasks read each row group once
    named = [(f"row://image/2::{table}", "missing"), (f"row://image/3::{table}", "not_an_image")]
    assert [(e.source, e.kind) for e in remote.errors] == [(e.source, e.kind) for e in local.errors] == named
    # row 7 repeats row 0 in another batch: the actor that computed row 0 computes it once, as locally
    assert (local.n_computed, remote.n_computed, remote.n_cached) == (5, 5, 0)
    X_local, meta_local = load_features(local_out)
    X_ray, meta_ray = load_features(remote_out)
    assert meta_ray["path"].tolist() == meta_local["path"].tolist() and meta_ray["label"].tolist() == list(
        "ababab"
    )
    assert_same_vectors(X_ray, X_local)
    again, _ = job(table, tmp_path, "ray", "ray")
    assert (again.n_computed, again.n_cached) == (0, 6)


def test_a_ray_decoding_task_reads_each_image_once_and_decodes_only_what_the_cache_lacks(
    image_folder, monkeypatch
):
    from featx.engines.ray.tasks import read_key_decode_batch
    from featx.inputs import images
    from featx.inputs.images import MAX_PIXELS, content_key

    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    known = frozenset({content_key(paths[0]), content_key(paths[3])})
    calls = []
    original_open, original_decode = images._open_file, images._decode
    monkeypatch.setattr(
        images,
        "_open_file",
        lambda path, *rest: calls.append(("read", str(path))) or original_open(path, *rest),
    )
    monkeypatch.setattr(
        images,
        "_decode",
        lambda data, index, source, *rest: (
            calls.append(("decode", source)) or original_decode(data, index, source, *rest)
        ),
    )
    preprocessing = build_network(TINY, weights=None).preprocessing
    batch = read_key_decode_batch(
        {"index": np.arange(len(paths)), "path": np.array(paths, dtype=object)},
        preprocessing,
        MAX_PIXELS,
        known,
    )
    assert [p for what, p in calls if what == "read"] == paths
    assert [p for what, p in calls if what == "decode"] == [p for i, p in enumerate(paths) if i not in (0, 3)]
    assert [pixels.shape for pixels in batch["pixels"]] == [
        (0, 0, 0),
        *[(3, 32, 32)] * 2,
        (0, 0, 0),
        *[(3, 32, 32)] * 2,
    ]
    assert list(batch["key"]) == [content_key(p) for p in paths]


def test_the_driver_never_loads_the_network_a_worker_resolves_it_and_runs_even_its_recomputations(
    local_ray, image_folder, tmp_path, monkeypatch
):
    """As on a CPU-only head node driving GPU workers: the driver only ever holds the resolved spec."""
    from featx.engines.ray import engine as ray_engine

    monkeypatch.setattr(
        FrozenNetwork, "__init__", lambda *a, **k: pytest.fail("the driver loaded the network")
    )
    engine = engines.get("ray")
    network = engine.network(NetworkSpec(TINY, weights=None))  # precision "auto": measured on the worker
    assert isinstance(network, ray_engine.RemoteNetwork)
    assert (network.spec.device, network.fingerprint["precision"]) == ("cpu", network.spec.precision)
    assert network.spec.precision != "auto" and network.n_features == 64
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    first = run_extract_job(
        load_manifest(image_folder),
        network,
        namespace,
        RunOptions(batch_size=4, progress=False),
        engine=engine,
    )
    assert (first.n_computed, first.n_cached) == (6, 0)
    shard = sorted(namespace.path.glob("*.vectors.npy"))[
        0
    ]  # flip a bit: reading it back recomputes, on a worker
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x10
    shard.write_bytes(bytes(data))
    again = run_extract_job(
        load_manifest(image_folder),
        network,
        namespace,
        RunOptions(batch_size=4, progress=False),
        engine=engine,
        out=tmp_path / "ray.parquet",
    )
    assert (again.n_computed, again.n_cached) == (0, 6)
    monkeypatch.undo()
    here = build_network(network.spec)  # the same resolved network, loaded here only to check the vectors
    assert here.fingerprint == network.fingerprint
    run_extract_job(
        load_manifest(image_folder),
        here,
        FeatureCache(tmp_path / "local").namespace(here.fingerprint),
        RunOptions(batch_size=4, progress=False),
        out=tmp_path / "local.parquet",
    )
    assert_same_vectors(
        load_features(tmp_path / "ray.parquet")[0], load_features(tmp_path / "local.parquet")[0]
    )


def test_device_cuda_on_a_cluster_without_gpus_is_refused_in_one_line_before_any_task_waits(local_ray):
    with pytest.raises(ParameterError, match="the Ray cluster has no GPUs"):
        engines.get("ray").network(NetworkSpec(TINY, weights=None, device="cuda"))


def test_a_workers_failure_to_resolve_the_network_arrives_as_featx_own_one_line_error(local_ray, tmp_path):
    with pytest.raises(ParameterError, match=r"weights='.*missing\.pth' is neither a weights name") as caught:
        engines.get("ray").network(NetworkSpec(TINY, weights=str(tmp_path / "missing.pth")))
    assert "Traceback" not in str(caught.value)


def test_the_driver_keeps_64_bytes_a_key_and_only_the_failed_inputs_of_a_streamed_run():
    from featx.engines.ray.engine import _Outcome

    paths = [f"/data/{i}.png" for i in range(6)]
    outcome = _Outcome(np.zeros(len(paths), dtype="S64"))
    for rows in ([4, 0, 2], [1, 5, 3]):  # batches arrive in any order
        index = np.array(rows)
        failed = index == 5
        keys = np.array(["" if f else f"{i:064x}" for i, f in zip(rows, failed)], dtype=object)
        outcome.add(
            {
                "index": index,
                "key": keys,
                "cached": ~failed & (index % 2 == 0),
                "computed": ~failed & (index % 2 == 1),
                "error_kind": np.where(failed, "missing", ""),
                "error_reason": np.where(failed, "no such file", ""),
            },
            paths,
        )
    assert outcome.keys.nbytes == 64 * len(paths)
    assert outcome.keys.tolist() == [f"{i:064x}".encode() for i in range(5)] + [b""]
    assert (outcome.n_cached, outcome.n_computed) == (3, 2)
    assert [(e.index, e.source, e.kind) for e in outcome.failures] == [(5, "/data/5.png", "missing")]
