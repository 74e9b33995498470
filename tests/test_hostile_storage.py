"""Hostile storage: namespace folders copied under another extractor's name with their ``namespace.json``
gone, damaged or not a file; shards copied in from another namespace; ``featx cache prune`` running beside
a job; and the temporary files a writer killed with ``kill -9`` leaves beside its output or in the cache."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings

import numpy as np
import pytest
from conftest import TINY_CLI, assert_same_vectors, encode, photo, write_shard
from test_cache import featx_cli, only_namespace

from featx import ParameterError, extract_features, load_features
from featx._files import HOST, TMP_PREFIX
from featx.cache import FeatureCache, Namespace
from featx.errors import OutputError

IMAGES = [photo(i) for i in range(6)]


def tiny(precision: str, cache) -> np.ndarray:
    return extract_features(IMAGES, "tiny", weights=None, precision=precision, cache_dir=cache)


@pytest.fixture
def two_precisions(tmp_path):
    """One cache holding the fp32 and the bf16 namespace of one network: (cache, fp32 folder, bf16 folder,
    fp32 vectors, bf16 vectors)."""
    fp32, bf16 = tiny("fp32", tmp_path), tiny("bf16", tmp_path)
    assert np.abs(fp32 - bf16).max() > 1e-3  # the same images, another extractor: other vectors
    folders = {ns.fingerprint["precision"]: ns.path for ns in FeatureCache(tmp_path).namespaces()}
    return tmp_path, folders["fp32"], folders["bf16"], fp32, bf16


@pytest.fixture
def alarm():
    """A call that blocks (opening a FIFO) fails the test instead of hanging it."""

    def expire(*_):
        raise TimeoutError("blocked")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def damage(meta, how):
    meta.unlink()
    if how == "truncated":
        meta.write_bytes(b"")
    elif how == "binary":
        meta.write_bytes(bytes(range(256)) * 4)
    elif how == "half":
        meta.write_text('{"backbone": "tiny", "precis')
    elif how == "link-loop":
        meta.symlink_to(meta.name)
    elif how == "dangling-link":
        meta.symlink_to("nowhere.json")


@pytest.mark.parametrize("how", ["deleted", "truncated", "binary", "half", "link-loop", "dangling-link"])
def test_a_copied_folder_whose_namespace_json_is_gone_or_garbage_is_refused_never_served(two_precisions, how):
    cache, fp32_folder, bf16_folder, _, _ = two_precisions
    shutil.rmtree(fp32_folder)
    shutil.copytree(bf16_folder, fp32_folder)  # bf16's vectors under fp32's name
    damage(fp32_folder / "namespace.json", how)
    with pytest.raises(
        ParameterError, match="hold another extractor's vectors.*copied or renamed"
    ) as refused:
        tiny("fp32", cache)
    assert "\n" not in str(refused.value) and f"--namespace {fp32_folder.name}" in str(refused.value)
    meta = fp32_folder / "namespace.json"  # never re-labelled with the job's fingerprint
    assert not meta.is_file() or b"fp32" not in meta.read_bytes()


def test_the_featx_job_on_a_copied_folder_without_namespace_json_exits_1_in_one_line(
    two_precisions, tmp_path
):
    cache, fp32_folder, bf16_folder, _, _ = two_precisions
    shutil.rmtree(fp32_folder)
    shutil.copytree(bf16_folder, fp32_folder)
    (fp32_folder / "namespace.json").unlink()
    folder = tmp_path / "images"
    folder.mkdir()
    for n, image in enumerate(IMAGES):
        (folder / f"{n}.png").write_bytes(encode(image))
    done = featx_cli("extract", folder, "--cache", cache, "--out", tmp_path / "f.parquet", *TINY_CLI)
    assert done.returncode == 1 and not (tmp_path / "f.parquet").exists()
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("featx: error:") and "another extractor's vectors" in line
    assert "Traceback" not in done.stderr
    # featx cache prune --namespace, as the line says, removes the folder; the next job computes afresh
    assert featx_cli("cache", "prune", cache, "--namespace", fp32_folder.name).returncode == 0
    assert featx_cli("extract", folder, "--cache", cache, *TINY_CLI).returncode == 0


@pytest.mark.parametrize("drop", [[], ["--drop"]])
def test_cache_verify_exits_1_while_a_namespace_it_could_not_check_is_left_even_with_drop(
    two_precisions, drop
):
    cache, fp32_folder, _, _, _ = two_precisions
    damage(fp32_folder / "namespace.json", "half")
    shards = sorted(path.name for path in fp32_folder.iterdir() if path.name != "namespace.json")
    done = featx_cli("cache", "verify", cache, *drop)
    assert done.returncode == 1, done.stdout
    assert (
        f"{fp32_folder.name}: 1 problem(s)" in done.stdout and "namespace.json is unreadable" in done.stdout
    )
    assert "(dropped)" not in done.stdout.split(fp32_folder.name)[1].splitlines()[0]
    assert ("not dropped" in done.stdout) == bool(drop)
    assert sorted(path.name for path in fp32_folder.iterdir() if path.name != "namespace.json") == shards


def test_a_missing_namespace_json_over_its_own_shards_is_rewritten_once_they_prove_theirs(two_precisions):
    cache, fp32_folder, _, fp32, _ = two_precisions
    (fp32_folder / "namespace.json").unlink()
    with pytest.warns(UserWarning, match="namespace.json was missing; rewritten: its .* shards proved"):
        again = tiny("fp32", cache)
    assert np.array_equal(again, fp32)  # served from the cache, bit for bit
    assert Namespace(fp32_folder).fingerprint["precision"] == "fp32"


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_a_namespace_json_that_is_a_fifo_a_device_or_a_folder_is_one_line_never_opened(
    two_precisions, kind, alarm
):
    cache, fp32_folder, _, _, _ = two_precisions
    meta = fp32_folder / "namespace.json"
    meta.unlink()
    if kind == "fifo":
        os.mkfifo(meta)
    elif kind == "folder":
        meta.mkdir()
    else:
        meta.symlink_to("/dev/zero")  # endless: read whole, it would never end
    named = {"fifo": "a FIFO", "folder": "a folder", "device": "a device"}[kind]
    with pytest.raises(
        ParameterError, match=f"namespace.json is {named}, not the file featx writes"
    ) as refused:
        tiny("fp32", cache)
    assert "\n" not in str(refused.value)
    info = featx_cli("cache", "info", cache)  # the cache commands do not block on it either
    assert info.returncode == 0 and fp32_folder.name in info.stdout
    verify = featx_cli("cache", "verify", cache)
    assert verify.returncode == 1 and "namespace.json: namespace.json is unreadable" in verify.stdout


def test_a_shard_copied_in_from_another_namespace_is_never_served(two_precisions):
    cache, fp32_folder, bf16_folder, fp32, _ = two_precisions
    for keys in bf16_folder.glob("*.keys.npy"):  # bf16's shards, named to win over fp32's for every key
        shard = keys.name[: -len(".keys.npy")]
        later = f"9{shard[1:]}"
        shutil.copy(bf16_folder / f"{shard}.vectors.npy", fp32_folder / f"{later}.vectors.npy")
        shutil.copy(keys, fp32_folder / f"{later}.keys.npy")
    assert_same_vectors(tiny("fp32", cache), fp32)  # recomputed: bf16's are never returned
    problems = Namespace(fp32_folder).verify()
    assert problems and all(p["problem"] == "checksum mismatch" and p["shard"][0] == "9" for p in problems)
    compacted = featx_cli("cache", "compact", cache)
    assert compacted.returncode == 0 and f"{len(IMAGES)} corrupt row(s) dropped" in compacted.stdout


def test_a_copied_folder_given_the_right_namespace_json_still_never_serves_its_vectors(two_precisions):
    cache, fp32_folder, bf16_folder, fp32, _ = two_precisions
    meta = (fp32_folder / "namespace.json").read_bytes()
    shutil.rmtree(fp32_folder)
    shutil.copytree(bf16_folder, fp32_folder)
    (fp32_folder / "namespace.json").write_bytes(meta)  # relabelled by hand: the label says fp32
    assert_same_vectors(tiny("fp32", cache), fp32)  # the checksums say bf16: recomputed
    assert np.array_equal(tiny("fp32", cache), tiny("fp32", cache))  # and served from then on


def test_a_namespace_of_an_older_cache_format_is_named_with_how_to_remove_it(image_folder, tmp_path):
    import json

    from featx.cache.files import fingerprint_id

    cache = tmp_path / "c"
    assert featx_cli("extract", image_folder, "--cache", cache, *TINY_CLI).returncode == 0
    current = only_namespace(cache)
    older = {**current.fingerprint, "format": 2}
    folder = cache / fingerprint_id(older)
    folder.mkdir()
    (folder / "namespace.json").write_text(json.dumps(older))
    done = featx_cli("extract", image_folder, "--cache", cache, *TINY_CLI)
    assert done.returncode == 0
    assert f"featx: note: {folder.name} holds this network's vectors in an older cache format" in done.stderr
    assert f"featx cache prune {cache} --namespace {folder.name}" in done.stderr
    assert featx_cli("cache", "prune", cache, "--namespace", folder.name).returncode == 0
    assert not folder.exists() and current.path.exists()


# -- featx cache prune beside a job ---------------------------------------------------------------------


def prune_every_read(monkeypatch, also=lambda: None):
    """Every read of a namespace starts after `featx cache prune --older-than 0` removed every shard."""
    read = Namespace.read

    def pruned_first(self, keys):
        self.remove_shards_older_than(0)
        also()
        return read(self, keys)

    monkeypatch.setattr(Namespace, "read", pruned_first)


def test_a_prune_before_every_read_of_the_job_is_recomputed_and_the_out_file_is_right(
    image_folder, tmp_path, monkeypatch
):
    reference = featx_cli(
        "extract", image_folder, "--cache", tmp_path / "r", "--out", tmp_path / "r.parquet", *TINY_CLI
    )
    assert reference.returncode == 0
    prune_every_read(monkeypatch)
    done = featx_cli(
        "extract", image_folder, "--cache", tmp_path / "c", "--out", tmp_path / "f.parquet", *TINY_CLI
    )
    assert done.returncode == 0, done.stderr
    vectors = load_features(tmp_path / "f.parquet")[0]
    assert_same_vectors(vectors, load_features(tmp_path / "r.parquet")[0])
    # every vector was read back after a prune: each was computed again, and the summary says so
    assert f"recomputed (vanished from the cache): {len(vectors)}" in done.stdout
    assert "recomputed" not in reference.stdout


def test_the_library_counts_vectors_computed_again_apart_from_those_found_or_computed(tmp_path, monkeypatch):
    from featx import build_network
    from featx.extract import extract

    network = build_network("tiny", weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path).namespace(network.fingerprint)
    prune_every_read(monkeypatch)
    result = extract(IMAGES, network, namespace)
    assert (result.n_cached, result.n_computed, result.n_recomputed) == (0, len(IMAGES), len(IMAGES))
    assert_same_vectors(result.features, tiny("fp32", tmp_path / "reference"))


def test_a_prune_during_a_stream_of_shards_job_is_recomputed(tmp_path, monkeypatch):
    for number in range(2):
        write_shard(
            tmp_path / f"s-{number}.tar",
            [(f"{number}-{i}", {"png": encode(photo(10 * number + i))}) for i in range(5)],
        )
    source = str(tmp_path / "s-{0..1}.tar")
    reference = featx_cli(
        "extract", source, "--cache", tmp_path / "r", "--out", tmp_path / "r.parquet", *TINY_CLI
    )
    assert reference.returncode == 0
    prune_every_read(monkeypatch)
    done = featx_cli("extract", source, "--cache", tmp_path / "c", "--out", tmp_path / "f.parquet", *TINY_CLI)
    assert done.returncode == 0, done.stderr
    assert_same_vectors(load_features(tmp_path / "f.parquet")[0], load_features(tmp_path / "r.parquet")[0])


def test_vectors_that_vanish_and_cannot_be_computed_again_fail_in_one_line_not_a_key_error(
    image_folder, tmp_path, monkeypatch
):
    from featx.job import run_job

    victim = sorted(image_folder.rglob("*.png"))[0]
    prune_every_read(monkeypatch, also=lambda: victim.unlink(missing_ok=True))
    with pytest.raises(
        OutputError, match=f"vanished from the feature cache .* {victim.name}|{victim.name}.* vanished"
    ) as failed:
        run_job(
            image_folder,
            "tiny",
            weights=None,
            precision="fp32",
            cache_dir=tmp_path / "c",
            out=tmp_path / "f.parquet",
        )
    assert "\n" not in str(failed.value) and "run the same command again" in str(failed.value)


def extract_beside(maintenance, image_folder, tmp_path):
    """``featx extract`` in batches of 2 while ``maintenance(cache)`` runs in a loop beside it (every
    5 ms until the job ends): the job must exit 0 without a traceback, with the vectors of a job run
    alone. Returns the cache folder."""
    for n in range(6, 24):  # enough batches of 2 for the maintenance to land between them
        (image_folder / "cat" / f"{n}.png").write_bytes(encode(photo(n)))
    cache, stop = tmp_path / "c", threading.Event()

    def loop():
        while not stop.is_set():
            maintenance(cache)
            time.sleep(0.005)

    beside = threading.Thread(target=loop)
    beside.start()
    try:
        args = ["--batch-size", "2", "--num-workers", "0"]
        done = featx_cli(
            "extract", image_folder, "--cache", cache, "--out", tmp_path / "f.parquet", *TINY_CLI, *args
        )
    finally:
        stop.set()
        beside.join()
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    reference = featx_cli(
        "extract", image_folder, "--cache", tmp_path / "r", "--out", tmp_path / "r.parquet", *TINY_CLI
    )
    assert reference.returncode == 0
    assert_same_vectors(load_features(tmp_path / "f.parquet")[0], load_features(tmp_path / "r.parquet")[0])
    return cache


def test_a_real_prune_loop_beside_a_running_job_never_kills_it(image_folder, tmp_path):
    pruned = []

    def prune(cache):  # `featx cache prune DIR --older-than 0`
        for namespace in FeatureCache(cache).namespaces():
            pruned.append(namespace.remove_shards_older_than(0))

    extract_beside(prune, image_folder, tmp_path)
    assert sum(pruned) > 0  # shards were removed under the job


def test_a_namespace_pruned_again_and_again_beside_a_job_is_made_again_and_the_job_ends_right(
    image_folder, tmp_path
):
    removed = []

    def prune_namespace(cache):  # `featx cache prune DIR --namespace NAME`, a few times
        if len(removed) < 5:
            for namespace in FeatureCache(cache).namespaces():
                FeatureCache(cache).remove_namespace(namespace.path.name)
                removed.append(namespace.path.name)
            time.sleep(0.015)  # 20 ms between removals, as before

    cache = extract_beside(prune_namespace, image_folder, tmp_path)
    assert removed  # the namespace was removed under the job
    assert not [p for p in cache.iterdir() if p.name.startswith(TMP_PREFIX)]  # nothing half-removed left


# -- leftovers of killed writers ------------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()  # reaped: no process holds this id now
    return process.pid


def tmp_name(pid: int, target: str, host: str = HOST) -> str:
    return f"{TMP_PREFIX}{pid}-{host}-{uuid.uuid4().hex[:8]}-{target}"


def test_a_writer_killed_mid_out_leaves_a_tmp_file_that_the_next_run_of_that_output_removes(
    image_folder, tmp_path
):
    out = tmp_path / "f.parquet"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\nfrom pathlib import Path\nfrom featx._files import temporary_sibling\n"
                "with temporary_sibling(Path(sys.argv[1]), '--out') as tmp:\n"
                "    tmp.write_bytes(bytes(1 << 20)); print(tmp, flush=True); time.sleep(600)\n"
            ),
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    left = writer.stdout.readline().strip()
    assert os.path.basename(left).startswith(TMP_PREFIX) and os.path.exists(left)
    writer.kill()  # kill -9: no cleanup runs
    writer.wait()
    assert os.path.exists(left)
    live = tmp_path / tmp_name(os.getppid(), out.name)  # a live process's, still writing
    other_host = tmp_path / tmp_name(dead_pid(), out.name, host="0badc0de")
    other_output = tmp_path / tmp_name(dead_pid(), "g.parquet")
    dead_errors = tmp_path / tmp_name(dead_pid(), "f.errors.csv")
    for path in (live, other_host, other_output, dead_errors):
        path.write_bytes(b"half")
    (image_folder / "bad.png").write_bytes(b"not an image")  # an errors CSV is written too
    done = featx_cli("extract", image_folder, "--cache", tmp_path / "c", "--out", out, *TINY_CLI)
    assert done.returncode == 0 and out.exists() and (tmp_path / "f.errors.csv").exists()
    assert not os.path.exists(left) and not dead_errors.exists()  # the killed writers' own siblings
    assert live.exists() and other_host.exists() and other_output.exists()  # never a live or unknown one


def test_prune_removes_and_names_the_leftovers_of_dead_writers_and_keeps_a_live_ones(tmp_path):
    namespace = FeatureCache(tmp_path).namespace({"backbone": "b", "node": "n"})
    namespace.write(["a" * 64], np.ones((1, 3)))
    dead, alive = dead_pid(), os.getppid()
    names = {
        "dead_tmp": tmp_name(dead, "1-2-3.vectors.npy"),
        "dead_vectors": f"{time.time_ns():020d}-{dead}-{HOST}-0123abcd.vectors.npy",  # never committed
        "live_tmp": tmp_name(alive, "1-2-3.keys.npy"),
        "live_vectors": f"{time.time_ns():020d}-{alive}-{HOST}-0123abcd.vectors.npy",
        "other_host_fresh": tmp_name(dead, "1-2-3.keys.npy", host="0badc0de"),
    }
    for name in names.values():
        (namespace.path / name).write_bytes(bytes(3_000_000))
    memo = tmp_path / "stat-memo"
    memo.mkdir()
    (memo / tmp_name(dead, "x.v2.parquet")).write_bytes(b"half")
    pruned = featx_cli("cache", "prune", tmp_path)
    assert pruned.returncode == 0
    assert "2 leftover file(s) of killed writers (6.0 MB)" in pruned.stdout
    assert names["dead_tmp"] in pruned.stdout and names["dead_vectors"] in pruned.stdout
    assert f"stat-memo/{TMP_PREFIX}{dead}-" in pruned.stdout
    left = {p.name for p in namespace.path.iterdir()}
    assert {names["live_tmp"], names["live_vectors"], names["other_host_fresh"]} <= left
    assert names["dead_tmp"] not in left and names["dead_vectors"] not in left
    assert len(Namespace(namespace.path)) == 1  # the committed shard is untouched


# -- shard files that are no files ----------------------------------------------------------------------


def unblock_later(fifos, seconds=30):
    """A timer that, after ``seconds``, opens each FIFO's writing end (and closes it): a reader blocked on
    opening one gets end-of-file instead of hanging the test run. ``timer.unblocked`` lists what it freed."""

    def unblock():
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # ENXIO unless a reader waits
                timer.unblocked.append(fifo)
            except OSError:
                pass

    timer = threading.Timer(seconds, unblock)
    timer.unblocked = []
    timer.start()
    return timer


@pytest.mark.parametrize("suffix", [".keys.npy", ".vectors.npy"])
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_shard_file_that_is_a_fifo_or_a_folder_is_recomputed_never_opened(two_precisions, suffix, kind):
    cache, fp32_folder, _, fp32, _ = two_precisions
    replaced = list(fp32_folder.glob(f"*{suffix}"))
    for path in replaced:
        path.unlink()
        os.mkfifo(path) if kind == "fifo" else path.mkdir()
    timer = unblock_later(replaced if kind == "fifo" else [])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unreadable vectors file is warned about
            vectors = tiny("fp32", cache)
    except Exception:
        vectors = None
    finally:
        timer.cancel()
    assert not timer.unblocked, "the job blocked opening a FIFO"
    assert_same_vectors(vectors, fp32)  # recomputed
    for command in ("info", "verify", "compact"):  # nor do the cache commands block or fail
        timer = unblock_later(replaced if kind == "fifo" else [])
        try:
            done = featx_cli("cache", command, cache)
        finally:
            timer.cancel()
        assert not timer.unblocked, f"cache {command} blocked opening a FIFO"
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("how", ["file", "dangling-link", "link-loop"])
def test_a_namespace_folder_that_is_no_folder_is_one_line(two_precisions, how):
    cache, fp32_folder, _, _, _ = two_precisions
    shutil.rmtree(fp32_folder)
    if how == "file":
        fp32_folder.write_bytes(b"x")
    else:
        fp32_folder.symlink_to("nowhere" if how == "dangling-link" else fp32_folder.name)
    with pytest.raises(OutputError, match="is in its place, not a folder; move it away") as refused:
        tiny("fp32", cache)
    assert "\n" not in str(refused.value)
