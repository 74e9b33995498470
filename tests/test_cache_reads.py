"""Bulk reads (featx.cache.reader): keys in storage order found without searching for each, pieces copied by
threads and verified by one crc32 each, the rows that fail named exactly, open files bounded. The speed
against np.load comes from benchmarks/cache_scale.py."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from isal import isal_zlib
from test_cache_scale import FINGERPRINT, fresh_namespace, key, vector, write_shards

from featx.cache import FeatureCache, reader
from featx.cache.checksums import combined_checksums, vector_checksums
from featx.cache.index import KeyIndex


@pytest.mark.parametrize("row_bytes", [16, 2048])
def test_a_pieces_checksum_combined_from_its_rows_checksums_is_the_checksum_of_its_bytes(row_bytes):
    rng = np.random.default_rng(row_bytes)
    rows = rng.random((300, row_bytes // 4), dtype=np.float32)
    starts = np.array([0, 1, 2, 5, 12, 13, 64, 65, 192, 299])  # pieces of 1 to 127 rows
    combined = combined_checksums(vector_checksums(rows), starts, row_bytes)
    ends = np.append(starts[1:], len(rows))
    assert combined.tolist() == [isal_zlib.crc32(rows[a:b].tobytes()) for a, b in zip(starts, ends)]
    flipped = rows.copy()
    flipped.view(np.uint8)[70, 1] ^= 0x10  # a bit of row 70, inside the piece 65:192
    stale = combined_checksums(vector_checksums(rows), starts, row_bytes)
    assert [isal_zlib.crc32(flipped[a:b].tobytes()) == c for a, b, c in zip(starts, ends, stale)] == [
        True
    ] * 7 + [False, True, True]


def test_keys_in_storage_order_are_found_with_one_index_search_in_STRIDE(tmp_path, monkeypatch):
    write_shards(FeatureCache(tmp_path / "one").namespace(FINGERPRINT), list(range(160)), per_shard=160)
    write_shards(FeatureCache(tmp_path / "four").namespace(FINGERPRINT), list(range(160)), per_shard=40)
    searched = []
    original = KeyIndex.locate
    monkeypatch.setattr(
        KeyIndex, "locate", lambda self, keys: searched.append(len(keys)) or original(self, keys)
    )
    vectors, corrupt = fresh_namespace(tmp_path / "one").read([key(i) for i in range(160)])
    assert corrupt == [] and vectors[:, 0].tolist() == list(range(160))
    assert sum(searched) == 160 // reader.STRIDE
    # a shard boundary between two heads (at 40, 80, 120): the STRIDE - 1 keys between them are searched
    searched.clear()
    vectors, corrupt = fresh_namespace(tmp_path / "four").read([key(i) for i in range(160)])
    assert corrupt == [] and vectors[:, 0].tolist() == list(range(160))
    assert sum(searched) == 160 // reader.STRIDE + 3 * (reader.STRIDE - 1)
    # one key out of place: it alone is searched for; the comparison still places its neighbours
    order = list(range(160))
    order[20] = 150
    searched.clear()
    vectors, corrupt = fresh_namespace(tmp_path / "one").read([key(i) for i in order])
    assert corrupt == [] and vectors[:, 0].tolist() == order
    assert sum(searched) == 160 // reader.STRIDE + 1


def test_a_row_that_failed_its_checksum_is_not_read_again_by_the_storage_order_path(tmp_path):
    """Its key still sits in its old row, so the comparison alone would find it there: the index's record of
    untrusted rows has the last word, and the recomputed copy is read."""
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(40)), per_shard=40)
    namespace = fresh_namespace(tmp_path)
    flip_a_bit(namespace, namespace.shard_names()[0], 5)
    assert namespace.read([key(i) for i in range(40)])[1] == [key(5)]
    namespace.write([key(5)], vector(5)[None])  # what the caller does: compute it again
    vectors, corrupt = namespace.read([key(i) for i in range(40)])
    assert corrupt == [] and vectors[:, 0].tolist() == list(range(40))


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 4 rows of 4 floats, every read on the thread pool, as a bulk read of 2 GB would run."""
    monkeypatch.setattr(reader, "PIECE_BYTES", 64)
    monkeypatch.setattr(reader, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(reader, "THREADS", 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    threads = set()
    original = reader.BulkRead._copy_piece
    monkeypatch.setattr(
        reader.BulkRead,
        "_copy_piece",
        lambda self, piece: threads.add(threading.current_thread().name) or original(self, piece),
    )
    return threads


def flip_a_bit(namespace, shard: str, row: int) -> None:
    path = namespace.vectors_path(shard)
    data = bytearray(path.read_bytes())
    data[namespace.shard_vectors(shard, None).offset + row * 16 + 1] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("as_array", [False, True], ids=["strings", "S64 array"])
def test_threaded_pieces_copy_every_vector_and_name_exactly_the_rows_that_fail(
    tmp_path, small_pieces, as_array
):
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(300)), per_shard=100)
    namespace = fresh_namespace(tmp_path)
    first, _, third = namespace.shard_names()
    flip_a_bit(namespace, first, 5)
    flip_a_bit(namespace, third, 99)
    rng = np.random.default_rng(0)
    # storage order (runs), shuffled (gathers), and runs mixed with gathers
    mixed = np.concatenate([np.arange(0, 150), rng.permutation(np.arange(150, 300))])
    for order in (np.arange(300), rng.permutation(300), mixed):
        keys = [key(i) for i in order]
        vectors, corrupt = fresh_namespace(tmp_path).read(np.array(keys, dtype="S64") if as_array else keys)
        assert sorted(corrupt) == sorted([key(5), key(299)])  # strings either way
        good = ~np.isin(order, [5, 299])
        np.testing.assert_array_equal(vectors[good], np.stack([vector(i) for i in order[good]]))
    assert any(name.startswith("featx-read") for name in small_pieces)
    # a key not (or no longer) stored is named for the caller to compute, like a corrupt one
    vectors, lost = namespace.read(np.array([key(0), key(300)], dtype="S64"))
    assert lost == [key(300)] and np.array_equal(vectors[0], vector(0))


@pytest.mark.parametrize("order", ["stored", "shuffled"])
def test_a_vectors_file_cut_short_since_it_was_mapped_is_recomputed_from_the_cut_not_a_crash(
    tmp_path, small_pieces, order
):
    """Runs meet the end of the file in preadv; gathers check the file's size first (reading past the end
    of a shortened memory map would kill the process with SIGBUS)."""
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(40)), per_shard=40)
    namespace = fresh_namespace(tmp_path)
    namespace.read([key(0)])  # mapped now
    (shard,) = namespace.shard_names()
    with open(namespace.vectors_path(shard), "r+b") as handle:
        handle.truncate(namespace.shard_vectors(shard, None).offset + 10 * 16)
    numbers = np.arange(40) if order == "stored" else np.random.default_rng(0).permutation(40)
    with pytest.warns(UserWarning, match=r"is unreadable \(the file ends before its last vector\)"):
        vectors, corrupt = namespace.read([key(i) for i in numbers])
    assert sorted(corrupt) == sorted(key(i) for i in range(8, 40))  # pieces of 4 rows: 8 whole before the cut
    whole = numbers < 8
    np.testing.assert_array_equal(vectors[whole, 0], numbers[whole])


def test_a_read_across_more_shards_than_the_process_may_open_files_succeeds(tmp_path):
    write_shards(FeatureCache(tmp_path).namespace(FINGERPRINT), list(range(1200)), per_shard=2)
    script = textwrap.dedent(f"""
        import resource
        import numpy as np
        from featx.cache import FeatureCache
        from test_cache_scale import key
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        namespace = FeatureCache({str(tmp_path)!r}).namespace({FINGERPRINT!r})
        vectors, corrupt = namespace.read([key(i) for i in range(1200)])
        assert corrupt == [] and vectors[:, 0].tolist() == list(range(1200)), len(corrupt)
        print("read", len(namespace.shard_names()), "shards")
    """)
    tests = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tests,
        env={**os.environ, "PYTHONPATH": tests},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "read 600 shards\n"
