"""Hostile damage to the cache that keeps every byte's checksum valid: a vectors file's header changed by
one byte, keys swapped between entries. A read must never serve a vector for the wrong image: the
damaged entries are recomputed, exactly like a flipped bit, and ``verify`` reports them."""

import shutil

import numpy as np
import pytest
from conftest import assert_same_vectors, photo
from test_cache import only_namespace

from featx import ParameterError, extract_features
from featx.cache import KEY_DTYPE, Namespace
from featx.cache.checksums import entry_checksums, key_tags


@pytest.mark.parametrize(
    "old, new", [(b"'<f4'", b"'>f4'"), (b"'fortran_order': False", b"'fortran_order': True ")]
)
def test_a_vectors_header_changed_by_a_byte_makes_the_shard_damaged_and_its_vectors_recomputed(
    tmp_path, old, new
):
    images = [photo(i) for i in range(14)]
    reference = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    namespace = only_namespace(tmp_path)
    for vectors_file in namespace.path.glob("*.vectors.npy"):
        data = vectors_file.read_bytes()
        assert old in data[:128]
        vectors_file.write_bytes(data.replace(old, new, 1))
    with pytest.warns(UserWarning, match="unreadable"):
        again = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    assert_same_vectors(again, reference)  # recomputed, not the same bytes read another way
    problems = Namespace(namespace.path).verify()
    assert problems and all("unreadable shard" in p["problem"] for p in problems)


def test_keys_swapped_between_two_entries_are_never_served_and_verify_reports_them(tmp_path):
    images = [photo(i) for i in range(6)]
    reference = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    namespace = only_namespace(tmp_path)
    (keys_file,) = sorted(namespace.path.glob("*.keys.npy"))[:1]
    rows = np.load(keys_file)
    assert len(rows) >= 2
    rows["key"][[0, 1]] = rows["key"][[1, 0]]  # the checksums stay where they were
    np.save(keys_file, rows)
    problems = Namespace(namespace.path).verify()
    assert sorted(p["key"] for p in problems) == sorted(k.decode() for k in rows["key"][:2])
    again = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    assert_same_vectors(again, reference)


def test_an_entry_checksum_binds_the_key_to_the_bytes():
    vectors = np.random.default_rng(0).random((3, 5), dtype=np.float32)
    keys = np.array([b"a" * 64, b"b" * 64, b"c" * 64], dtype=KEY_DTYPE["key"])
    bound = entry_checksums(keys, vectors)
    swapped = entry_checksums(keys[[1, 0, 2]], vectors)
    assert (bound[:2] != swapped[:2]).all() and bound[2] == swapped[2]
    tags = key_tags(np.array([f"{i:064x}".encode() for i in range(10_000)], dtype="S64"))
    assert len(set(tags.tolist())) == 10_000  # keys differing in one character get distinct tags


def test_a_namespace_copied_under_another_extractors_name_is_refused_never_served(tmp_path):
    images = [photo(i) for i in range(4)]
    fp32 = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path / "a")
    bf16 = extract_features(images, "tiny", weights=None, precision="bf16", cache_dir=tmp_path / "b")
    assert not np.array_equal(fp32, bf16)  # the same images, another extractor: other vectors
    theirs, ours = only_namespace(tmp_path / "a").path, only_namespace(tmp_path / "b").path
    shutil.rmtree(ours)
    shutil.copytree(theirs, ours)  # fp32's vectors under bf16's name: same shape, other values
    with pytest.raises(ParameterError, match=f"differ in precision.*Rename it back to {theirs.name}"):
        extract_features(images, "tiny", weights=None, precision="bf16", cache_dir=tmp_path / "b")


@pytest.mark.parametrize("garbage", ["{garbage", "[1, 2]", ""])
def test_an_unreadable_namespace_json_is_rewritten_with_a_warning_and_its_vectors_still_served(
    tmp_path, garbage
):
    images = [photo(i) for i in range(4)]
    reference = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    namespace = only_namespace(tmp_path)
    (namespace.path / "namespace.json").write_text(garbage)
    with pytest.warns(UserWarning, match="namespace.json was unreadable"):
        again = extract_features(images, "tiny", weights=None, precision="fp32", cache_dir=tmp_path)
    assert_same_vectors(again, reference)
    assert namespace.fingerprint["precision"] == "fp32"  # rewritten whole
