"""Images where they live (issue: millions of images): S3 objects and WebDataset tar shards give the same
vectors as the same images read from local files, and bad members are reported with shard and member."""

import io
import os
import socket
import subprocess
import sys
import tarfile
import time

import numpy as np
import pandas as pd
import pytest

from conftest import assert_same_vectors, encode, photo
from test_cache import featx_cli

from featx import extract_features, load_features

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("moto")

TINY = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--precision", "fp32", "--quiet"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A real S3 API on localhost (moto in server mode); the standard AWS variables point featx at it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    names = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
             "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        filesystem = fsspec.filesystem("s3", skip_instance_cache=True)
        filesystem.mkdir("bucket")
        yield filesystem
    finally:
        server.terminate()
        server.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_shard(path, samples):
    """A WebDataset shard: per sample, members ``<key>.<ext>`` in order."""
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def local_vectors(images):
    return extract_features(list(images), "tiny", weights=None, precision="fp32")


def test_s3_objects_a_manifest_on_s3_and_s3_shards_give_the_local_files_vectors(s3, tmp_path):
    pngs = [encode(photo(seed)) for seed in range(5)]
    expected = local_vectors(pngs)
    for i, data in enumerate(pngs):
        s3.pipe(f"bucket/images/{i}.png", data)
    urls = [f"s3://bucket/images/{i}.png" for i in range(5)]
    np.testing.assert_array_equal(local_vectors(urls), expected)

    s3.pipe("bucket/manifest.csv", pd.DataFrame({"path": [f"images/{i}.png" for i in range(5)],
                                                 "label": list("ababa")}).to_csv(index=False).encode())
    out = tmp_path / "from-manifest.parquet"
    result = featx_cli("extract", "s3://bucket/manifest.csv", *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    np.testing.assert_array_equal(X, expected)
    assert meta["path"].tolist() == urls  # relative paths resolve against the manifest's URL

    shard = write_shard(tmp_path / "shard-0000.tar",
                        [(f"{i:06d}", {"png": data, "cls": str(i % 2).encode()}) for i, data in enumerate(pngs)])
    s3.put(str(shard), "bucket/shards/shard-0000.tar")
    out = tmp_path / "from-shard.parquet"
    result = featx_cli("extract", "s3://bucket/shards/shard-0000.tar", *TINY, "--cache", tmp_path / "cache2",
                       "--out", out)
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    np.testing.assert_array_equal(X, expected)
    assert meta["label"].astype(str).tolist() == ["0", "1", "0", "1", "0"]  # from the .cls members
    assert meta["path"][0] == "tar://000000.png::s3://bucket/shards/shard-0000.tar"


def test_a_missing_s3_object_is_one_rows_error_naming_it(s3):
    with pytest.raises(Exception, match=r"s3://bucket/nothing-here.png.*missing"):
        local_vectors(["s3://bucket/nothing-here.png"])


def test_shards_with_a_corrupt_member_and_a_non_image_name_shard_and_member(tmp_path):
    jpeg = encode(photo(9), "JPEG")
    good = [encode(photo(seed)) for seed in range(3)]
    write_shard(tmp_path / "shards-0000.tar", [("a", {"png": good[0], "json": b'{"label": "cat"}'}),
                                               ("b", {"jpg": jpeg[: len(jpeg) // 2], "json": b'{"label": "dog"}'})])
    write_shard(tmp_path / "shards-0001.tar", [("c", {"png": good[1], "json": b'{"label": "cat"}'}),
                                               ("d", {"jpg": b"this is text, not a picture"}),
                                               ("e", {"txt": b"a caption without an image"}),
                                               ("f", {"png": good[2], "json": b'{"label": "dog"}'})])
    out = tmp_path / "x.parquet"
    result = featx_cli("extract", str(tmp_path / "shards-{0000..0001}.tar"), *TINY, "--cache", tmp_path / "cache",
                       "--out", out)
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(out.with_suffix(".errors.csv"))
    kinds = dict(zip(listed["path"], listed["kind"]))
    shard0, shard1 = tmp_path / "shards-0000.tar", tmp_path / "shards-0001.tar"
    assert kinds == {f"tar://b.jpg::{shard0}": "truncated", f"tar://d.jpg::{shard1}": "not_an_image",
                     f"tar://e::{shard1}": "skipped"}
    X, meta = load_features(out)
    assert meta["label"].tolist() == ["cat", "cat", "dog"]
    assert_same_vectors(X, local_vectors(good))  # the bad samples changed the batches


# -- Parquet tables of encoded images ---------------------------------------------------------------------

def image_table(path, cells, labels, row_group_size=2, struct=True):
    """A Parquet table like a Hugging Face dataset's: an ``image`` struct {bytes, path} and a label."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": cell, "path": f"{i}.png"} for i, cell in enumerate(cells)] if struct else cells
    pq.write_table(pa.table({"image": images, "label": labels}), path, row_group_size=row_group_size)
    return path


def test_a_parquet_table_of_encoded_images_gives_the_files_vectors_and_names_its_bad_cells(tmp_path):
    good = [encode(photo(seed)) for seed in range(4)]
    cells = [good[0], good[1], None, b"not a picture", good[2], good[3]]
    table = image_table(tmp_path / "train.parquet", cells, ["cat", "dog", "cat", "dog", "cat", "dog"])
    out = tmp_path / "x.parquet"
    result = featx_cli("extract", table, *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(out.with_suffix(".errors.csv"))
    assert dict(zip(listed["path"], listed["kind"])) == {f"row://image/2::{table}": "missing",
                                                         f"row://image/3::{table}": "not_an_image"}
    assert "cell is empty" in listed.set_index("kind").loc["missing", "message"]
    X, meta = load_features(out)
    assert meta["label"].tolist() == ["cat", "dog", "cat", "dog"]
    assert meta["path"].tolist()[-1] == f"row://image/5::{table}"
    assert_same_vectors(X, local_vectors(good))  # the failed cells changed the batches


@pytest.mark.parametrize("columns, message", [
    ({"a": [b"x"], "b": [b"y"]}, "several columns of bytes ['a', 'b']"),
    ({"image": ["cat.jpg"]}, "'image' column holds string, not encoded image bytes"),
])
def test_a_table_whose_image_column_is_unclear_is_refused_in_one_line(tmp_path, columns, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    result = featx_cli("extract", tmp_path / "t.parquet", *TINY, "--cache", tmp_path / "cache")
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_table_of_plain_bytes_on_s3_gives_the_same_vectors(s3, tmp_path):
    good = [encode(photo(seed)) for seed in range(3)]
    image_table(tmp_path / "t.parquet", good, ["a", "b", "c"], struct=False)
    s3.put(str(tmp_path / "t.parquet"), "bucket/tables/t.parquet")
    out = tmp_path / "x.npy"
    result = featx_cli("extract", "s3://bucket/tables/t.parquet", *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    assert meta["path"][0] == "row://image/0::s3://bucket/tables/t.parquet"
    np.testing.assert_array_equal(X, local_vectors(good))
