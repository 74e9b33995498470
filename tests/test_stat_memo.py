"""The stat memo kept beside the cache (featx.cache.stat_memo): what it keeps, and hostile disks and files.
That a new process reads no unchanged file, and reads a changed one, is in tests/test_engine.py."""

import os
import sys
import warnings

import pytest
from conftest import photo
from PIL import Image

from featx import FeatureCache, build_network, engines
from featx._files import TMP_PREFIX
from featx.cache import stat_memo
from featx.engines.base import RunOptions
from featx.engines.local import seen
from featx.errors import ImageError


def entries(*numbers, version=0):
    return {f"/images/{n}.png": ((n, version, version, n), f"{n}-{version}") for n in numbers}


def test_later_parts_win_and_merging_past_max_parts_keeps_each_paths_last_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(stat_memo, "MAX_PARTS", 3)
    for version in range(3):
        stat_memo.save(tmp_path, entries(version, version + 1, version=version))
    assert stat_memo.load(tmp_path, entries(0, 1, 2, 3)) == {
        **entries(0, version=0),
        **entries(1, version=1),
        **entries(2, 3, version=2),
    }
    stat_memo.save(tmp_path, entries(0, version=9))  # a fourth part: merged into one
    assert len(list((tmp_path / stat_memo.FOLDER).iterdir())) == 1
    assert stat_memo.load(tmp_path, entries(0, 1, 2, 3, 4)) == {
        **entries(0, version=9),
        **entries(1, version=1),
        **entries(2, 3, version=2),
    }


def test_an_unreadable_part_and_a_half_written_one_are_skipped_and_the_others_still_read(tmp_path):
    stat_memo.save(tmp_path, entries(1))
    folder = tmp_path / stat_memo.FOLDER
    (folder / "00000000000000000000-1-garbage.v2.parquet").write_bytes(b"PAR1 this is not parquet")
    (folder / f"{TMP_PREFIX}0-99999999999999999999-1-x.v2.parquet").write_bytes(b"being written")
    (folder / "00000000000000000000-1-format-1.parquet").write_bytes(b"a part of the old format: never read")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert stat_memo.load(tmp_path, entries(1)) == entries(1)
    assert [str(w.message).split(" (")[0] for w in caught] == [
        f"featx: skipping the unreadable stat memo part {folder / '00000000000000000000-1-garbage.v2.parquet'}"
    ]


def test_a_memo_that_cannot_be_written_costs_a_warning_and_the_job_goes_on(tmp_path, image_folder):
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    network = build_network("tiny", weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    (tmp_path / "cache" / stat_memo.FOLDER).write_text("a file where the memo's folder goes")
    with pytest.warns(UserWarning, match="cannot keep the stat memo in .*stat-memo"):
        filled = engines.get("local").fill(paths, network, namespace, RunOptions(batch_size=4, num_workers=0))
    assert filled.n_computed == len(paths) and not filled.errors


def test_a_job_that_stops_at_a_bad_file_keeps_what_it_learned_before(tmp_path, image_folder):
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    network = build_network("tiny", weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    seen._SEEN.clear()
    with pytest.raises(ImageError, match="broken.png"):
        engines.get("local").fill(
            [*paths[:4], str(broken), *paths[4:]],
            network,
            namespace,
            RunOptions(batch_size=2, num_workers=0, fail_fast=True),
        )
    kept = stat_memo.load(tmp_path / "cache", paths)
    assert set(paths[:4]) <= set(kept) and str(broken) not in kept
    assert all(kept[path] == (seen.signature(path), kept[path][1]) for path in kept)


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8")
def test_names_that_are_not_utf8_round_trip(tmp_path):
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9.png")
    Image.fromarray(photo(1)).save(path)
    stat_memo.save(tmp_path, {path: (seen.signature(path), "k")})
    assert stat_memo.load(tmp_path, [path]) == {path: (seen.signature(path), "k")}


def test_a_row_whose_key_was_moved_to_another_path_is_ignored_not_trusted(tmp_path):
    import pyarrow.parquet as pq

    stat_memo.save(tmp_path, entries(1, 2, 3))
    (part,) = (tmp_path / stat_memo.FOLDER).iterdir()
    table = pq.read_table(part)
    keys = table["key"].to_pylist()
    shuffled = table.set_column(table.schema.get_field_index("key"), "key", [[keys[1], keys[0], keys[2]]])
    pq.write_table(shuffled, part)
    assert stat_memo.load(tmp_path, entries(1, 2, 3)) == entries(3)  # the two moved keys are dropped
