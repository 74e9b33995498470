"""Hostile tar shards: cut anywhere, a sample is kept or the cut is reported, never lost in silence."""

import io
import tarfile

import pandas as pd
import pytest
from conftest import encode, photo
from test_cache import featx_cli

from featx.errors import ShardReadError
from featx.inputs.shards import stream_samples

N_SAMPLES = 5


def write_tar(path, tar_format) -> tuple[bytes, list[int]]:
    """A shard of N_SAMPLES (png + cls) samples, and the byte offset where each sample's last member ends."""
    with tarfile.open(path, "w", format=tar_format) as tar:
        for number in range(N_SAMPLES):
            for extension, data in (("png", encode(photo(number, size=(8, 8)))), ("cls", b"1")):
                info = tarfile.TarInfo(f"{number:03d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        ends = [m.offset_data + m.size for m in tar.getmembers()][1::2]
    return path.read_bytes(), ends


def read_until_failure(path) -> tuple[list[str], ShardReadError | None]:
    keys = []
    try:
        for sample in stream_samples(str(path)):
            keys.append(sample.key)
    except ShardReadError as error:
        return keys, error
    return keys, None


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu", "pax"])
def test_a_shard_cut_anywhere_keeps_every_whole_sample_or_reports_the_cut(tmp_path, tar_format):
    data, ends = write_tar(tmp_path / "whole.tar", tar_format)
    archive_end = ends[-1] + (-ends[-1] % 512)  # where the end-of-archive blocks start
    cuts = sorted(set(range(512, archive_end + 1, 512)) | set(range(100, archive_end, 211)))
    for cut in cuts:
        path = tmp_path / "cut.tar"
        path.write_bytes(data[:cut])
        keys, error = read_until_failure(path)
        assert keys == [f"{n:03d}" for n in range(len(keys))], cut
        if error is None:
            assert len(keys) == N_SAMPLES, f"cut at byte {cut}: {len(keys)} samples and no error"
        else:
            whole = sum(end <= cut for end in ends)
            assert len(keys) >= whole, f"cut at byte {cut}: {whole} whole samples, {len(keys)} kept ({error})"


def test_a_whole_shard_reads_every_sample_and_no_error(tmp_path):
    _, _ = write_tar(tmp_path / "whole.tar", tarfile.PAX_FORMAT)
    keys, error = read_until_failure(tmp_path / "whole.tar")
    assert error is None and len(keys) == N_SAMPLES


def write_odd_shard(path):
    """Duplicate names, a second image suffix, link members, a sample without an image."""
    with tarfile.open(path, "w") as tar:

        def add(name, data=None, kind=tarfile.REGTYPE, target=""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("000.png", encode(photo(0)))
        add("000.png", encode(photo(1)))  # the same name again: a second image of sample 000
        add("000.cls", b"1")
        add("001.png", kind=tarfile.SYMTYPE, target="000.png")
        add("002.png", kind=tarfile.LNKTYPE, target="000.png")
        add("003.png", encode(photo(3)))
        add("003.jpg", encode(photo(4), "JPEG"))  # another suffix: a second image of sample 003
        add("004.txt", b"no image here")
    return path


def test_duplicate_image_members_and_link_members_are_each_recorded_never_dropped_in_silence(tmp_path):
    import pandas as pd

    shard = write_odd_shard(tmp_path / "odd.tar")
    out = tmp_path / "x.parquet"
    result = featx_cli(
        "extract", shard, "--backbone", "tiny_backbone:TINY", "--weights", "none", "--quiet",
        "--cache", tmp_path / "cache", "--out", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(tmp_path / "x.errors.csv")
    reasons = {
        path.split("::")[0].removeprefix("tar://"): message
        for path, message in zip(listed["path"], listed["message"])
    }
    assert "second image member" in reasons["000.png"] and "second image member" in reasons["003.jpg"]
    assert "symbolic link" in reasons["001.png"] and "hard link" in reasons["002.png"]
    assert "no image member" in reasons["004"]
    assert sorted(pd.read_parquet(out)["sample"]) == ["000", "003"]


def test_the_library_lists_and_reads_a_shard_by_the_rule_the_job_streams_it_with(tmp_path):
    import numpy as np

    from featx import extract_features, load_features
    from featx.inputs.manifests import load_manifest
    from featx.inputs.sources import read_bytes

    shard = write_odd_shard(tmp_path / "odd.tar")
    out = tmp_path / "job.parquet"
    args = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--precision", "fp32", "--quiet"]
    done = featx_cli("extract", shard, *args, "--cache", tmp_path / "cache", "--out", out)
    assert done.returncode == 0, done.stderr
    job_vectors, job_rows = load_features(out)
    listed = load_manifest(str(shard))  # the library's way: headers only, members read by name
    assert listed["path"].tolist() == job_rows["path"].tolist()
    assert listed["label"].tolist()[0] == "1"
    job_skipped = set(pd.read_csv(tmp_path / "job.errors.csv")["path"])
    assert {path for path, _ in listed.attrs["skipped"]} == job_skipped
    vectors = extract_features(listed["path"].tolist(), "tiny_backbone:TINY", weights=None, precision="fp32")
    np.testing.assert_array_equal(vectors, job_vectors)
    assert read_bytes(f"tar://000.png::{shard}") == encode(photo(0))  # the first of the two, as streamed
    with pytest.raises(ValueError, match="symbolic link member"):
        read_bytes(f"tar://001.png::{shard}")


def test_a_quoted_glob_of_shards_is_expanded_and_one_that_matches_nothing_is_one_line(tmp_path):
    from test_hostile_cli import one_line_error

    from featx import load_features

    for shard in range(3):
        with tarfile.open(tmp_path / f"part-{shard}.tar", "w") as tar:
            data = encode(photo(shard))
            info = tarfile.TarInfo(f"sample{shard}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "other.txt").write_text("not a shard")
    args = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--cache", tmp_path / "c", "--quiet"]
    done = featx_cli("extract", str(tmp_path / "part-*.tar"), *args, "--out", tmp_path / "o.parquet")
    assert done.returncode == 0, done.stderr
    X, meta = load_features(tmp_path / "o.parquet")
    assert len(X) == 3 and [p.split("::")[-1].rsplit("/", 1)[-1] for p in meta["path"]] == [
        "part-0.tar",
        "part-1.tar",
        "part-2.tar",
    ]
    one_line_error(featx_cli("extract", str(tmp_path / "nothing-*.tar"), *args), "matches no shard")


def test_gzipped_shards_named_tar_gz_or_tgz_are_shards_streamed_and_their_members_readable(tmp_path):
    from featx import load_features
    from featx.inputs.images import read_content

    shards = tmp_path / "shards"
    shards.mkdir()
    images = {}
    for shard, (name, mode) in enumerate([("a.tar", "w"), ("b.tar.gz", "w:gz"), ("c.tgz", "w:gz")]):
        with tarfile.open(shards / name, mode) as tar:
            images[name] = encode(photo(shard))
            info = tarfile.TarInfo(f"sample{shard}.png")
            info.size = len(images[name])
            tar.addfile(info, io.BytesIO(images[name]))
    args = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--cache", tmp_path / "c", "--quiet"]
    done = featx_cli("extract", shards, *args, "--out", tmp_path / "o.parquet")
    assert done.returncode == 0, done.stderr
    X, meta = load_features(tmp_path / "o.parquet")
    assert len(X) == 3 and sorted(p.rsplit("/", 1)[-1] for p in meta["path"]) == [
        "a.tar",
        "b.tar.gz",
        "c.tgz",
    ]
    member = [p for p in meta["path"] if p.endswith(".tgz")][0]
    assert read_content(member, 0) == images["c.tgz"]  # a member re-read (after a checksum failure) works too
