"""The cache at scale: the array index (found keys, bytes per key, reuse across opens) and compaction
beside running writers and readers. The figures at a million vectors come from benchmarks/cache_scale.py."""

import fcntl
import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_cache import featx_cli
from test_hostile_inputs import fill_disk, leftovers, one_line_failure, tmpfs

from featx.cache import FeatureCache, Namespace, index
from featx.cache.compact import LOCK_NAME, compact
from featx.cache.index import KeyIndex

FINGERPRINT = {"backbone": "sim", "node": "pool", "dim": 4}


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def vector(i: int) -> np.ndarray:
    return np.full(4, i, dtype=np.float32)


def write_shards(namespace: Namespace, numbers: list[int], per_shard: int) -> None:
    for start in range(0, len(numbers), per_shard):
        chunk = numbers[start : start + per_shard]
        namespace.write([key(i) for i in chunk], np.stack([vector(i) for i in chunk]))


def fresh_namespace(cache) -> Namespace:
    """A namespace opened as a new process would: no index shared with earlier opens."""
    namespace = FeatureCache(cache).namespace(FINGERPRINT)
    namespace._shared_index = KeyIndex()
    return namespace


def test_the_index_finds_every_key_across_shards_in_24_bytes_a_key(tmp_path):
    writer = FeatureCache(tmp_path).namespace(FINGERPRINT)
    write_shards(writer, list(range(500)), per_shard=7)
    # two keys that share their first 64 bits, and keys that are not sha256 hex
    twins = ["ab" * 8 + "0" * 48, "ab" * 8 + "f" * 48]
    writer.write(twins + ["a", "b"], np.stack([vector(-1), vector(-2), vector(-3), vector(-4)]))
    namespace = fresh_namespace(tmp_path)
    assert namespace.missing([key(i) for i in range(495, 505)] + ["a", "c", twins[1]]) == [
        key(i) for i in range(500, 505)
    ] + ["c"]
    wanted = [key(i) for i in (3, 499, 250)] + twins + ["b"]
    X, corrupt = namespace.read(wanted)
    assert corrupt == []
    np.testing.assert_array_equal(X[:, 0], [3, 499, 250, -1, -2, -4])
    assert len(namespace) == 504 and namespace.index().nbytes == 24 * 504


def test_a_second_open_in_one_process_reads_only_the_keys_files_committed_since(tmp_path, monkeypatch):
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(40)), per_shard=4)
    monkeypatch.setattr(index, "_SHARED", {})  # as if this process had not written them
    loads = []
    original = Namespace._load_keys
    monkeypatch.setattr(
        Namespace, "_load_keys", lambda self, shard: loads.append(shard) or original(self, shard)
    )
    first = FeatureCache(tmp_path).namespace(FINGERPRINT)
    assert first.missing([key(0)]) == [] and len(loads) == 10
    # another process commits one shard
    subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import numpy as np
        from featx.cache import FeatureCache
        FeatureCache({str(tmp_path)!r}).namespace({FINGERPRINT!r}).write([{key(40)!r}], np.full((1, 4), 40.0))
    """),
        ],
        check=True,
    )
    second = FeatureCache(tmp_path).namespace(FINGERPRINT)
    assert second.missing([key(0), key(40)]) == [] and len(loads) == 11


def test_compaction_merges_small_shards_keeps_one_copy_of_each_key_and_drops_corrupt_rows(tmp_path):
    namespace = FeatureCache(tmp_path).namespace(FINGERPRINT)
    write_shards(namespace, list(range(60)), per_shard=3)
    write_shards(namespace, list(range(10)), per_shard=5)  # the first ten again
    damaged = namespace.shard_names()[4]  # keys 12..14
    vectors = np.load(namespace.path / f"{damaged}.vectors.npy")
    vectors[1] += 1  # key 13's vector no longer matches its checksum
    np.save(namespace.path / f"{damaged}.vectors.npy", vectors)

    report = compact(namespace, shard_bytes=4 * 4 * 50)  # 50 vectors a merged shard
    assert (report.merged_shards, report.duplicates, report.corrupt, report.rows) == (22, 10, 1, 59)
    reopened = fresh_namespace(tmp_path)
    assert reopened.stats()["shards"] == report.written_shards == 2
    assert reopened.stats()["stored_rows"] == 59
    assert reopened.missing([key(i) for i in range(60)]) == [key(13)]  # to be recomputed, never returned
    good = [i for i in range(60) if i != 13]
    np.testing.assert_array_equal(reopened.read([key(i) for i in good])[0][:, 0], good)


READER = """
import sys, time, warnings
import numpy as np
from featx.cache import FeatureCache
warnings.simplefilter("error")  # a warning (an 'unreadable shard') is a failure here
cache, fingerprint, stop = sys.argv[1], eval(sys.argv[2]), sys.argv[3]
if sys.argv[4] == "threaded":  # pieces of 4 rows on two threads, as a bulk read of gigabytes runs
    import os
    from featx.cache import reader
    reader.PIECE_BYTES, reader.PARALLEL_BYTES, reader.THREADS = 64, 0, 2
    os.sched_getaffinity = lambda pid: {0, 1}
keys = {__import__("hashlib").sha256(str(i).encode()).hexdigest(): i for i in range(3000)}
reads = 0
while True:
    done = __import__("os").path.exists(stop)
    namespace = FeatureCache(cache).namespace(fingerprint)
    absent = set(namespace.missing(keys))
    present = [k for k in keys if k not in absent]
    if present:
        X, corrupt = namespace.read(present)
        assert not corrupt and (X[:, 0] == [keys[k] for k in present]).all(), "wrong vectors"
        reads += 1
    if done:
        break
print(reads)
"""

WRITER = """
import sys, time, hashlib
import numpy as np
from featx.cache import FeatureCache
namespace = FeatureCache(sys.argv[1]).namespace(eval(sys.argv[2]))
for start in range(0, 3000, 10):
    numbers = range(start, start + 10)
    namespace.write([hashlib.sha256(str(i).encode()).hexdigest() for i in numbers],
                    np.stack([np.full(4, i, dtype=np.float32) for i in numbers]))
    time.sleep(0.002)
"""


@pytest.mark.parametrize("pieces", ["serial", "threaded"])
def test_compaction_beside_a_running_writer_and_reader_loses_nothing_and_duplicates_nothing(tmp_path, pieces):
    cache, stop = tmp_path / "cache", tmp_path / "stop"
    namespace = FeatureCache(cache).namespace(FINGERPRINT)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(cache), repr(FINGERPRINT)])
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(cache), repr(FINGERPRINT), str(stop), pieces],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    compactions = 0
    while writer.poll() is None:
        compactions += compact(namespace, shard_bytes=4 * 4 * 400).merged_shards > 0
    assert writer.returncode == 0
    stop.touch()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    compact(namespace, shard_bytes=1 << 20)
    reopened = fresh_namespace(cache)
    assert compactions >= 3 and int(out) >= 3  # they really ran side by side
    assert reopened.stats()["stored_rows"] == len(reopened) == 3000 and reopened.stats()["shards"] == 1
    np.testing.assert_array_equal(reopened.read([key(i) for i in range(3000)])[0][:, 0], np.arange(3000))


def test_a_second_compaction_of_the_same_namespace_is_refused_in_one_line(tmp_path):
    namespace = FeatureCache(tmp_path).namespace(FINGERPRINT)
    write_shards(namespace, list(range(6)), per_shard=2)
    with open(namespace.path / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        one_line_failure(
            featx_cli("cache", "compact", tmp_path), "another `featx cache compact`", str(namespace.path)
        )
    result = featx_cli("cache", "compact", tmp_path)
    assert result.returncode == 0 and "merged 3 shard(s) into 1" in result.stdout


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_compaction_on_a_full_or_read_only_disk_fails_in_one_line_and_loses_nothing(tmp_path, trouble):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        namespace = FeatureCache(disk).namespace(FINGERPRINT)
        write_shards(namespace, list(range(12)), per_shard=2)
        if trouble == "full":
            fill_disk(disk)
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        one_line_failure(
            featx_cli("cache", "compact", disk),
            str(namespace.path),
            "No space left" if trouble == "full" else "Read-only file system",
        )
        assert leftovers(disk) == []
        reopened = fresh_namespace(disk)
        assert reopened.stats()["shards"] == 6
        np.testing.assert_array_equal(reopened.read([key(i) for i in range(12)])[0][:, 0], np.arange(12))


def test_a_read_whose_shards_were_merged_away_finds_every_vector_in_the_requested_order(tmp_path):
    namespace = FeatureCache(tmp_path).namespace(FINGERPRINT)
    write_shards(namespace, list(range(10)), per_shard=5)
    assert namespace.missing([key(i) for i in range(10)]) == []  # this instance's index knows both shards
    compact(FeatureCache(tmp_path).namespace(FINGERPRINT))  # merged into one; the two are gone
    order = [5, 0, 6, 1, 7, 2, 8, 3, 9, 4]  # alternating between the two vanished shards
    X, corrupt = namespace.read([key(i) for i in order])
    assert corrupt == [] and X[:, 0].tolist() == order


COMPACTOR = """
import sys
from featx.cache import FeatureCache
from featx.cache.compact import compact
namespace = FeatureCache(sys.argv[1]).namespace(eval(sys.argv[2]))
print("ready", flush=True)
compact(namespace, shard_bytes=4 * 4 * 100)  # about 0.25 s: 500 shards merged into 20
"""


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.1, 0.15, 0.2])
def test_a_compaction_killed_at_any_moment_loses_nothing_and_the_next_one_removes_its_duplicates(
    tmp_path, delay
):
    import signal
    import time

    namespace = FeatureCache(tmp_path).namespace(FINGERPRINT)
    write_shards(namespace, list(range(2000)), per_shard=4)
    compactor = subprocess.Popen(
        [sys.executable, "-c", COMPACTOR, str(tmp_path), repr(FINGERPRINT)], stdout=subprocess.PIPE, text=True
    )
    assert compactor.stdout.readline() == "ready\n"
    time.sleep(delay)
    compactor.send_signal(signal.SIGKILL)
    compactor.wait()
    survivor = fresh_namespace(tmp_path)
    np.testing.assert_array_equal(survivor.read([key(i) for i in range(2000)])[0][:, 0], np.arange(2000))
    compact(survivor, shard_bytes=1 << 20)
    survivor.remove_debris(older_than_s=0)
    final = fresh_namespace(tmp_path)
    assert final.stats()["stored_rows"] == len(final) == 2000 and final.stats()["shards"] == 1
    assert [p.name for p in final.path.iterdir() if p.name.startswith(".tmp")] == []


def test_a_read_in_storage_order_and_a_gather_return_the_same_vectors_and_both_catch_a_flipped_bit(tmp_path):
    """Rows asked in storage order arrive by one file read per shard, others through the memory map."""
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(60)), per_shard=30)
    shuffled = np.random.default_rng(0).permutation(60)
    for order in (np.arange(60), shuffled):
        vectors, corrupt = fresh_namespace(tmp_path).read([key(i) for i in order])
        assert corrupt == [] and np.array_equal(vectors, np.stack([vector(i) for i in order]))
    namespace = fresh_namespace(tmp_path)
    first_shard = namespace.shard_names()[0]
    path = namespace.path / f"{first_shard}.vectors.npy"
    data = bytearray(path.read_bytes())
    data[namespace._vectors(first_shard).offset + 7 * 16 + 2] ^= 0x01  # one bit of row 7's first float
    path.write_bytes(bytes(data))
    for order in (np.arange(60), shuffled):
        vectors, corrupt = fresh_namespace(tmp_path).read([key(i) for i in order])
        assert corrupt == [key(7)]


def test_a_vectors_file_cut_short_after_it_was_mapped_is_recomputed_not_a_crash(tmp_path):
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(20)), per_shard=20)
    namespace = fresh_namespace(tmp_path)
    namespace.read([key(0)])  # the shard is mapped now
    (path,) = namespace.path.glob("*.vectors.npy")
    with open(path, "r+b") as handle:
        handle.truncate(namespace._vectors(namespace.shard_names()[0]).offset + 5 * 16)
    with pytest.warns(
        UserWarning, match=r"is unreadable \(the file ends before its last vector\).*recomputed"
    ):
        _, corrupt = namespace.read([key(i) for i in range(20)])
    assert corrupt == [key(i) for i in range(20)]
