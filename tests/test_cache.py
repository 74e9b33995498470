"""The feature cache: fingerprints, checksums, crash safety, concurrent writers, sharing between doors."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, assert_same_vectors, encode, photo

from featx import (
    FeatureCache,
    FrozenNetwork,
    PretrainedFeatures,
    build_network,
    extract_features,
    load_features,
)
from featx.cache import Namespace


def write_images(folder: Path, n: int, size=(32, 32)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:05d}.png").write_bytes(encode(photo(i, size=size)))
    return folder


def featx_cli(*args, popen=False, fresh_process=False, **options):
    """``featx ARGS`` as a user runs it: its exit status, stdout and stderr. In this process by default (a
    new interpreter spends seconds importing torch), with the state a process keeps between calls reset,
    so each call starts as a new process would; in a process of its own with ``popen`` (a job to signal,
    race or wait for), ``fresh_process``, or subprocess ``options`` such as ``cwd``."""
    if popen or fresh_process or options:
        env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
        command = [sys.executable, "-m", "featx", *map(str, args)]
        if popen:
            return subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **options
            )
        return subprocess.run(command, env=env, capture_output=True, text=True, **options)
    return in_this_process([str(arg) for arg in args])


def in_this_process(argv: list[str]) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import warnings

    import torch
    from fsspec.config import conf

    from featx.cli import main
    from featx.inputs import timeouts

    kept = (
        dict(os.environ),
        {protocol: dict(settings) for protocol, settings in conf.items()},
        torch.get_num_threads(),
        (timeouts._configured, dict(timeouts._placed), dict(timeouts._unreachable)),
    )
    fresh_process_state()
    stdout, stderr = io.StringIO(), io.StringIO()

    def show(message, category, filename, lineno, file=None, line=None):
        stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        with (
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                code = main(argv)
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code if isinstance(exit.code, int) else 1
    finally:
        environment, fsspec_conf, threads, (configured, placed, unreachable) = kept
        os.environ.clear()
        os.environ.update(environment)
        conf.clear()
        conf.update(fsspec_conf)
        torch.set_num_threads(threads)
        fresh_process_state()
        timeouts._configured = configured
        timeouts._placed.update(placed)
        timeouts._unreachable.update(unreachable)
    return subprocess.CompletedProcess(["featx", *argv], code, stdout.getvalue(), stderr.getvalue())


def fresh_process_state() -> None:
    """Forget what featx remembers per process: servers found unreachable, the read timeout it placed in
    fsspec's configuration, files it has keyed, shards and tables it has indexed, filesystems fsspec made."""
    from fsspec.config import conf
    from fsspec.spec import AbstractFileSystem

    from featx.engines.local import seen
    from featx.inputs import sources, tables, timeouts

    for (protocol, key), value in timeouts._placed.items():
        if conf.get(protocol, {}).get(key) is value:
            del conf[protocol][key]
    timeouts._placed.clear()
    timeouts._configured = False
    timeouts._unreachable.clear()
    seen._SEEN.clear()
    seen._LEARNED.clear()
    for cached in (sources._shard_in, tables._table, tables._row_group):
        cached.cache_clear()
    filesystems = [AbstractFileSystem]
    while filesystems:
        filesystem = filesystems.pop()
        filesystem.clear_instance_cache()
        filesystems += filesystem.__subclasses__()


def only_namespace(cache: Path) -> Namespace:
    (namespace,) = FeatureCache(cache).namespaces()
    return namespace


@pytest.mark.parametrize(
    "change", [{"layer": "3"}, {"pooling": "avg", "layer": "3"}, {"precision": "fp32"}, {"weights": "file"}]
)
def test_a_fingerprint_change_misses_the_cache(tmp_path, change):
    base = {"backbone": "tiny", "weights": None, "precision": "bf16"}
    if change.get("weights") == "file":
        import torch
        from tiny_backbone import build_tiny

        torch.save(build_tiny().state_dict(), tmp_path / "w.pth")
        change = {"weights": tmp_path / "w.pth"}
    first, second = build_network(**base), build_network(**{**base, **change})
    cache = FeatureCache(tmp_path / "cache")
    cache.namespace(first.fingerprint).write(["k"], np.ones((1, first.n_features)))
    assert cache.namespace(second.fingerprint).missing(["k"]) == ["k"]
    assert cache.namespace(first.fingerprint).missing(["k"]) == []


def test_reads_are_memory_mapped_and_nothing_is_pickled(tmp_path):
    namespace = FeatureCache(tmp_path).namespace({"backbone": "b", "node": "n"})
    shard = namespace.write(["a", "b"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert isinstance(namespace._vectors(shard), np.memmap)
    for path in namespace.path.glob("*.npy"):
        np.load(path, allow_pickle=False)  # raises if any file needed pickle


def test_a_corrupted_vector_is_caught_by_verify_dropped_and_recomputed(tmp_path):
    images = [photo(i) for i in range(6)]
    reference = extract_features(images, "tiny", weights=None, cache_dir=tmp_path)
    namespace = only_namespace(tmp_path)
    (vectors_file,) = namespace.path.glob("*.vectors.npy")
    data = bytearray(vectors_file.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside the last vector
    vectors_file.write_bytes(bytes(data))

    problems = Namespace(namespace.path).verify()
    assert [p["problem"] for p in problems] == ["checksum mismatch"]
    result = featx_cli("cache", "verify", tmp_path)
    assert result.returncode == 1 and "checksum mismatch" in result.stdout
    # reading through the engine notices the checksum and recomputes (a batch of one) instead of returning
    # bad numbers: the flipped exponent byte is far outside rounding
    assert_same_vectors(extract_features(images, "tiny", weights=None, cache_dir=tmp_path), reference)
    assert featx_cli("cache", "verify", tmp_path, "--drop").returncode == 0
    assert Namespace(namespace.path).verify() == []


def test_debris_of_a_killed_writer_is_invisible_and_pruned(tmp_path):
    namespace = FeatureCache(tmp_path).namespace({"backbone": "b", "node": "n"})
    namespace.write(["a"], np.ones((1, 3)))
    (namespace.path / ".tmp-dead-x.keys.npy").write_bytes(b"half a file")
    (namespace.path / "123-1-dead.vectors.npy").write_bytes(b"uncommitted")
    assert len(Namespace(namespace.path)) == 1
    old = time.time() - 3600
    for debris in (".tmp-dead-x.keys.npy", "123-1-dead.vectors.npy"):
        os.utime(namespace.path / debris, (old, old))
    result = featx_cli("cache", "prune", tmp_path)
    assert "2 leftover file(s)" in result.stdout
    assert sorted(p.name.split(".", 1)[1] for p in namespace.path.glob("*.npy")) == [
        "keys.npy",
        "vectors.npy",
    ]


def test_cache_info_lists_namespaces_with_counts_and_prune_removes_a_namespace(tmp_path):
    extract_features([photo(0), photo(1)], "tiny", weights=None, cache_dir=tmp_path)
    name = only_namespace(tmp_path).path.name
    info = featx_cli("cache", "info", tmp_path).stdout
    assert name in info and "tiny" in info
    assert only_namespace(tmp_path).stats()["vectors"] == 2
    featx_cli("cache", "prune", tmp_path, "--namespace", name)
    assert FeatureCache(tmp_path).namespaces() == []


def test_the_job_and_the_transformer_share_one_cache(tmp_path, monkeypatch):
    folder = write_images(tmp_path / "images", 10)
    out = tmp_path / "features.parquet"
    result = featx_cli(
        "extract",
        folder,
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    X_job, meta = load_features(out)
    calls = []
    monkeypatch.setattr(FrozenNetwork, "submit", lambda self, batch: calls.append(batch))
    transformer = PretrainedFeatures("tiny_backbone:TINY", weights=None, cache_dir=tmp_path / "cache")
    X_notebook = transformer.fit_transform(meta["path"])
    assert calls == []  # everything came from the job's cache
    np.testing.assert_array_equal(X_notebook, X_job)


def test_two_processes_writing_one_cache_at_once(tmp_path):
    folder = write_images(tmp_path / "images", 120)
    cache = tmp_path / "cache"
    args = (
        "extract",
        folder,
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--precision",
        "fp32",
        "--batch-size",
        "4",
        "--cache",
        cache,
        "--quiet",
    )
    jobs = [featx_cli(*args, popen=True) for _ in range(2)]
    assert [job.wait(timeout=300) for job in jobs] == [0, 0]
    namespace = only_namespace(cache)
    assert namespace.verify() == [] and len(namespace) == 120
    reference = extract_features(
        sorted(folder.iterdir()), "tiny", weights=None, precision="fp32", batch_size=4
    )
    X, corrupt = namespace.read(_keys(folder))
    assert corrupt == []
    np.testing.assert_allclose(X, reference, rtol=1e-5, atol=1e-6)


def _keys(folder):
    from featx.inputs.images import content_key

    return [content_key(p) for p in sorted(folder.iterdir())]


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_result(tmp_path):
    folder = write_images(tmp_path / "images", 300)
    args = [
        "extract",
        folder,
        "--backbone",
        "resnet18",
        "--weights",
        "none",
        "--precision",
        "fp32",
        "--batch-size",
        "8",
        "--num-workers",
        "1",
        "--quiet",
    ]
    reference = featx_cli(*args, "--cache", tmp_path / "reference", "--out", tmp_path / "reference.parquet")
    assert reference.returncode == 0, reference.stderr

    cache, rng, kills = tmp_path / "cache", random.Random(7), 0
    for _ in range(3):
        committed = len(list(cache.rglob("*.keys.npy"))) if cache.exists() else 0
        job = featx_cli(*args, "--cache", cache, popen=True)
        deadline = (
            time.time() + 60
        )  # kill while it computes: after its first new batch, a random moment later
        while (
            job.poll() is None
            and time.time() < deadline
            and len(list(cache.rglob("*.keys.npy"))) <= committed
        ):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if job.poll() is None:
            job.send_signal(signal.SIGKILL)
            kills += 1
        job.wait()
        if cache.exists() and FeatureCache(cache).namespaces():
            assert only_namespace(cache).verify() == []  # a kill never leaves a corrupt committed shard
    assert kills >= 1
    done_before = len(only_namespace(cache))
    resumed = featx_cli(*args, "--cache", cache, "--out", tmp_path / "resumed.parquet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"cached: {done_before}" in resumed.stdout  # finished work was not recomputed
    X_ref, meta_ref = load_features(tmp_path / "reference.parquet")
    X, meta = load_features(tmp_path / "resumed.parquet")
    assert meta["key"].tolist() == meta_ref["key"].tolist()
    np.testing.assert_array_equal(X, X_ref)  # same vectors, bit for bit (fp32, same batch size)
    stats = only_namespace(cache).stats()
    assert stats["stored_rows"] == stats["vectors"] == 300  # no duplicates


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_keeping_finished_batches(tmp_path):
    folder, cache = write_images(tmp_path / "images", 300), tmp_path / "cache"
    job = featx_cli(
        "extract",
        folder,
        "--backbone",
        "resnet18",
        "--weights",
        "none",
        "--batch-size",
        "8",
        "--precision",
        "fp32",
        "--cache",
        cache,
        "--quiet",
        popen=True,
        # as typed at a terminal: a test run started in the background of a script (`pytest &`)
        # has SIGINT ignored, and its children inherit that, so the job would never see the signal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not (cache.exists() and any(cache.rglob("*.keys.npy"))):
        time.sleep(0.2)  # wait for the first committed batch
    job.send_signal(signal.SIGINT)
    returncode = job.wait(timeout=120)
    assert returncode == 130
    assert b"run the same command again to resume" in job.stderr.read()
    namespace = only_namespace(cache)
    assert 0 < len(namespace) < 300 and namespace.verify() == []
