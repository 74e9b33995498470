"""Images where they live (issue: millions of images): S3 objects and WebDataset tar shards give the same
vectors as the same images read from local files, and bad members are reported with shard and member."""

import contextlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_same_vectors, encode, photo, write_shard
from test_cache import featx_cli

from featx import extract_features, load_features
from featx.engines import RunOptions

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("moto")

TINY = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--precision", "fp32", "--quiet"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def moto_s3():
    """A real S3 API on localhost (moto in server mode), with a bucket; the standard AWS variables point
    featx at it. Yields (the file system, the server process)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    names = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
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
        yield filesystem, server
    finally:
        server.terminate()
        server.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as (filesystem, _):
        yield filesystem


def local_vectors(images):
    return extract_features(list(images), "tiny", weights=None, precision="fp32")


def test_s3_objects_a_manifest_on_s3_and_s3_shards_give_the_local_files_vectors(s3, tmp_path):
    pngs = [encode(photo(seed)) for seed in range(5)]
    expected = local_vectors(pngs)
    for i, data in enumerate(pngs):
        s3.pipe(f"bucket/images/{i}.png", data)
    urls = [f"s3://bucket/images/{i}.png" for i in range(5)]
    np.testing.assert_array_equal(local_vectors(urls), expected)

    s3.pipe(
        "bucket/manifest.csv",
        pd.DataFrame({"path": [f"images/{i}.png" for i in range(5)], "label": list("ababa")})
        .to_csv(index=False)
        .encode(),
    )
    out = tmp_path / "from-manifest.parquet"
    result = featx_cli(
        "extract", "s3://bucket/manifest.csv", *TINY, "--cache", tmp_path / "cache", "--out", out
    )
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    np.testing.assert_array_equal(X, expected)
    assert meta["path"].tolist() == urls  # relative paths resolve against the manifest's URL

    shard = write_shard(
        tmp_path / "shard-0000.tar",
        [(f"{i:06d}", {"png": data, "cls": str(i % 2).encode()}) for i, data in enumerate(pngs)],
    )
    s3.put(str(shard), "bucket/shards/shard-0000.tar")
    out = tmp_path / "from-shard.parquet"
    result = featx_cli(
        "extract", "s3://bucket/shards/shard-0000.tar", *TINY, "--cache", tmp_path / "cache2", "--out", out
    )
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    np.testing.assert_array_equal(X, expected)
    assert meta["label"].astype(str).tolist() == ["0", "1", "0", "1", "0"]  # from the .cls members
    assert meta["path"][0] == "tar://000000.png::s3://bucket/shards/shard-0000.tar"


def test_a_missing_s3_object_is_one_rows_error_naming_it(s3):
    with pytest.raises(Exception, match=r"s3://bucket/nothing-here.png.*missing"):
        local_vectors(["s3://bucket/nothing-here.png"])


def test_shards_are_streamed_with_bad_members_a_missing_shard_and_a_cut_one_named_and_a_rerun_reads_the_cache(
    messy_shards, tmp_path
):
    out = tmp_path / "x.parquet"
    run = ["extract", messy_shards["pattern"], *TINY, "--cache", tmp_path / "cache", "--out", out]
    result = featx_cli(*run)
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(out.with_suffix(".errors.csv"))
    assert dict(zip(listed["path"], listed["kind"])) == {
        **messy_shards["failed"],
        **{p: "skipped" for p in messy_shards["skipped"]},
    }
    cut = listed.set_index("kind").loc["unreadable", "message"]
    assert "g.png" in cut  # the member being read when the shard ended
    X, meta = load_features(out)
    assert meta["label"].astype(str).tolist() == messy_shards["labels"]
    assert meta["sample"].tolist() == ["a", "c", "f"]  # in shard order, the samples before the cut kept
    assert_same_vectors(X, local_vectors(messy_shards["good"]))
    assert "4 shards ->" in result.stderr

    again = featx_cli(*run)
    assert "images: 5  cached: 3  computed: 0  failed: 2  shards failed: 2" in again.stdout  # a, b, c, d, f
    np.testing.assert_array_equal(load_features(out)[0], X)


def test_on_error_raise_stops_in_one_line_naming_the_shard_and_keeps_what_it_computed(messy_shards, tmp_path):
    run = [
        "extract",
        messy_shards["pattern"],
        *TINY,
        "--cache",
        tmp_path / "cache",
        "--num-workers",
        "0",
        "--errors",
        tmp_path / "errors.csv",
    ]
    result = featx_cli(*run, "--on-error", "raise")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "shards-0000.tar" in result.stderr and "truncated" in result.stderr  # sample b, the first failure
    again = featx_cli(*run)
    assert "cached: 3  computed: 0" in again.stdout  # the good samples of the batch that failed were kept


def test_odd_shards_fail_one_by_one_naming_themselves_beside_good_and_gzipped_ones(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    pngs = [encode(photo(seed)) for seed in range(2)]
    write_shard(folder / "0-good.tar", [("a", {"png": pngs[0]})])
    with tarfile.open(folder / "1-gzipped.tar", "w:gz") as tar:  # compression is detected, as in WebDataset
        info = tarfile.TarInfo("b.png")
        info.size = len(pngs[1])
        tar.addfile(info, io.BytesIO(pngs[1]))
    (folder / "2-empty.tar").write_bytes(b"")
    (folder / "3-noise.tar").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "4-folder.tar").mkdir()
    out = tmp_path / "x.parquet"
    result = featx_cli("extract", folder, *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(out.with_suffix(".errors.csv"))
    assert sorted(os.path.basename(p) for p in listed["path"]) == [
        "2-empty.tar",
        "3-noise.tar",
        "4-folder.tar",
    ]
    assert set(listed["kind"]) == {"unreadable"}
    X, meta = load_features(out)
    assert meta["sample"].tolist() == ["a", "b"]
    assert_same_vectors(X, local_vectors(pngs))


def test_shard_members_listed_in_this_process_read_correctly_in_forked_decoding_workers(tmp_path):
    """The index of a shard listed here must not be shared by forked workers: its open file would share one
    offset across processes, and their reads would interleave ("unexpected end of data")."""
    from featx.inputs.manifests import load_manifest

    pngs = [encode(photo(seed, size=(160, 120))) for seed in range(48)]
    for number in range(4):
        write_shard(
            tmp_path / f"listed-{number}.tar",
            [(f"{number}-{i:02d}", {"png": pngs[12 * number + i]}) for i in range(12)],
        )
    members = load_manifest(str(tmp_path / "listed-{0..3}.tar"))["path"].tolist()  # indexes each shard here
    X = extract_features(members, "tiny", weights=None, precision="fp32", batch_size=2, num_workers=2)
    assert_same_vectors(X, local_vectors(pngs))


def test_members_of_a_shard_cut_off_mid_member_fail_as_unreadable_not_as_a_crash(messy_shards):
    from featx import build_network
    from featx.extract import extract

    cut = messy_shards["pattern"].replace("{0000..0003}", "0003")
    result = extract([f"tar://f.png::{cut}", f"tar://g.png::{cut}"], build_network("tiny", weights=None))
    # the tar index cannot be built past the cut, so its members before the cut fail too (the job streams
    # such a shard instead, and keeps them)
    assert [(e.index, e.kind) for e in result.errors] == [(0, "unreadable"), (1, "unreadable")]
    assert all("ReadError" in e.reason and cut in e.source for e in result.errors)


@pytest.mark.slow
def test_a_shard_job_killed_mid_way_resumes_without_recomputing_and_gives_the_uninterrupted_result(tmp_path):
    from test_cache import only_namespace

    for number in range(4):
        write_shard(
            tmp_path / f"kill-{number}.tar",
            [(f"{number}-{i:03d}", {"png": encode(photo(100 * number + i))}) for i in range(40)],
        )
    args = [
        "extract",
        str(tmp_path / "kill-{0..3}.tar"),
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

    cache = tmp_path / "cache"
    job = featx_cli(*args, "--cache", cache, popen=True)
    deadline = time.time() + 120
    while job.poll() is None and time.time() < deadline and len(list(cache.rglob("*.keys.npy"))) < 3:
        time.sleep(0.05)
    assert job.poll() is None, "the job ended before it could be killed"
    job.kill()
    job.wait()
    namespace = only_namespace(cache)
    assert namespace.verify() == [] and 0 < len(namespace) < 160  # a kill leaves no corrupt committed shard
    done_before = len(namespace)
    resumed = featx_cli(*args, "--cache", cache, "--out", tmp_path / "resumed.parquet")
    assert resumed.returncode == 0, resumed.stderr
    assert f"cached: {done_before}  computed: {160 - done_before}" in resumed.stdout
    X_ref, meta_ref = load_features(tmp_path / "reference.parquet")
    X, meta = load_features(tmp_path / "resumed.parquet")
    assert (
        meta["key"].tolist() == meta_ref["key"].tolist()
        and meta["sample"].tolist() == meta_ref["sample"].tolist()
    )
    assert_same_vectors(X, X_ref)  # the resumed run cut other batches


def test_a_job_over_s3_shards_fetches_each_shard_once_in_the_decoding_workers_never_in_the_driver(
    s3, tmp_path, monkeypatch
):
    """WebDataset's way: a shard is streamed once, front to back, by the worker that decodes it; indexing
    a remote tar instead fetched it whole in the driver and again in every worker touching it."""
    import s3fs

    from featx import FeatureCache, build_network
    from featx.inputs import remote_files
    from featx.inputs.shards import Shards
    from featx.job import run_extract_job

    sizes = {}
    for n in range(3):
        shard = write_shard(
            tmp_path / f"s-{n}.tar",
            [(f"{n}-{i}", {"png": encode(photo(10 * n + i)), "cls": b"1"}) for i in range(6)],
        )
        s3.put(str(shard), f"bucket/streamed/s-{n}.tar")
        sizes[f"bucket/streamed/s-{n}.tar"] = shard.stat().st_size
    log = tmp_path / "fetches.log"
    fetch, stream = s3fs.core.S3File._fetch_range, remote_files._BoundedFile.readinto

    def note(path, n):
        with open(log, "a") as handle:  # the DataLoader's forked workers append here too
            handle.write(f"{os.getpid()} {path} {n}\n")

    def fetched_by_range(self, start, end):
        data = fetch(self, start, end)
        note(self.path, len(data))
        return data

    def streamed(self, buffer):
        n = stream(self, buffer)
        note(self._path, n)
        return n

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", fetched_by_range)  # fsspec's files
    monkeypatch.setattr(remote_files._BoundedFile, "readinto", streamed)  # featx's, within deadlines
    network = build_network("tiny", weights=None, precision="fp32")
    namespace = FeatureCache(tmp_path / "cache").namespace(network.fingerprint)
    shards = Shards([f"s3://{name}" for name in sizes])
    for run in ("cold", "warm"):
        log.write_text("")
        summary = run_extract_job(
            shards, network, namespace, RunOptions(batch_size=4, num_workers=2, progress=False)
        )
        assert (summary.n_images, len(summary.errors)) == (18, 0)
        fetches = [line.split() for line in log.read_text().splitlines()]
        assert fetches and not [f for f in fetches if int(f[0]) == os.getpid()], (
            run
        )  # the driver read nothing
        fetched = {name: sum(int(f[2]) for f in fetches if f[1] == name) for name in sizes}
        assert fetched == sizes, run  # each shard's bytes exactly once
        assert len({f[0] for f in fetches}) == 2  # both workers streamed


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
    assert dict(zip(listed["path"], listed["kind"])) == {
        f"row://image/2::{table}": "missing",
        f"row://image/3::{table}": "not_an_image",
    }
    assert "cell is empty" in listed.set_index("kind").loc["missing", "message"]
    X, meta = load_features(out)
    assert meta["label"].tolist() == ["cat", "dog", "cat", "dog"]
    assert meta["path"].tolist()[-1] == f"row://image/5::{table}"
    assert_same_vectors(X, local_vectors(good))  # the failed cells changed the batches


@pytest.mark.parametrize(
    "columns, message",
    [
        ({"a": [b"x"], "b": [b"y"]}, "several columns of bytes ['a', 'b']"),
        ({"image": ["cat.jpg"]}, "'image' column holds string, not encoded image bytes"),
    ],
)
def test_a_table_whose_image_column_is_unclear_is_refused_in_one_line(tmp_path, columns, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    result = featx_cli("extract", tmp_path / "t.parquet", *TINY, "--cache", tmp_path / "cache")
    assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, (
        result.stderr
    )


def test_a_table_of_plain_bytes_on_s3_gives_the_same_vectors(s3, tmp_path):
    good = [encode(photo(seed)) for seed in range(3)]
    image_table(tmp_path / "t.parquet", good, ["a", "b", "c"], struct=False)
    s3.put(str(tmp_path / "t.parquet"), "bucket/tables/t.parquet")
    out = tmp_path / "x.npy"
    result = featx_cli(
        "extract", "s3://bucket/tables/t.parquet", *TINY, "--cache", tmp_path / "cache", "--out", out
    )
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    assert meta["path"][0] == "row://image/0::s3://bucket/tables/t.parquet"
    np.testing.assert_array_equal(X, local_vectors(good))


def test_an_s3_folder_is_a_source_by_the_rules_of_a_local_one_and_relative_dots_resolve(s3, tmp_path):
    pngs = [encode(photo(seed)) for seed in range(4)]
    expected = local_vectors(pngs)
    for i, data in enumerate(pngs):
        s3.pipe(f"bucket/folder/{'cat' if i % 2 else 'dog'}/{i}.png", data)
    s3.pipe("bucket/folder/cat/notes.txt", b"not an image")
    s3.pipe("bucket/folder/.hidden/9.png", pngs[0])
    out = tmp_path / "folder.parquet"
    done = featx_cli("extract", "s3://bucket/folder/", *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert done.returncode == 0, done.stderr
    X, meta = load_features(out)
    order = [int(p.rsplit("/", 1)[1][0]) for p in meta["path"]]
    np.testing.assert_array_equal(X, expected[order])
    assert set(zip(meta["label"], order)) == {("cat", 1), ("cat", 3), ("dog", 0), ("dog", 2)}
    assert meta["path"][0].startswith("s3://bucket/folder/")
    assert "skipped (not images): 2" in done.stdout  # notes.txt and the hidden folder's image

    s3.pipe("bucket/lists/train.csv", b"path\n../folder/dog/0.png\n./../folder/cat/1.png\n")
    done = featx_cli(
        "extract", "s3://bucket/lists/train.csv", *TINY, "--cache", tmp_path / "cache", "--out", out
    )
    assert done.returncode == 0, done.stderr
    X, meta = load_features(out)
    assert meta["path"].tolist() == ["s3://bucket/folder/dog/0.png", "s3://bucket/folder/cat/1.png"]
    np.testing.assert_array_equal(X, expected[[0, 1]])


def test_an_s3_folder_of_shards_is_streamed_and_an_empty_one_is_one_line(s3, tmp_path):
    pngs = [encode(photo(seed)) for seed in range(3)]
    shard = write_shard(tmp_path / "s.tar", [(f"{i:06d}", {"png": d}) for i, d in enumerate(pngs)])
    s3.put(str(shard), "bucket/shardfolder/shard-0000.tar")
    out = tmp_path / "shards.parquet"
    done = featx_cli("extract", "s3://bucket/shardfolder", *TINY, "--cache", tmp_path / "c", "--out", out)
    assert done.returncode == 0, done.stderr
    X, meta = load_features(out)
    np.testing.assert_array_equal(X, local_vectors(pngs))
    assert meta["path"][0] == "tar://000000.png::s3://bucket/shardfolder/shard-0000.tar"
    s3.pipe("bucket/nothing/readme.md", b"# no images")
    empty = featx_cli("extract", "s3://bucket/nothing/", *TINY, "--cache", tmp_path / "c")
    assert empty.returncode != 0 and "holds no image files" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_object_store_killed_mid_job_ends_in_one_line_with_its_rows_listed_and_a_rerun_completes_it(
    tmp_path,
):
    pngs = [encode(photo(seed, (64, 64))) for seed in range(400)]
    expected = local_vectors(pngs)
    cache, out = tmp_path / "cache", tmp_path / "f.parquet"
    job = ["extract", "s3://bucket/img/", *TINY, "--cache", cache, "--out", out, "--batch-size", "8"]
    with moto_s3() as (filesystem, server):
        for i, data in enumerate(pngs):
            filesystem.pipe(f"bucket/img/{i:03d}.png", data)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
        running = subprocess.Popen(
            [sys.executable, "-m", "featx", *map(str, job), "--num-workers", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not list(cache.glob("*/*.npy")) and running.poll() is None:
            time.sleep(0.02)
        server.kill()  # the store dies with the job under way
        stdout, stderr = running.communicate(timeout=300)
    assert running.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert (
        last.startswith("featx: error: ")
        and "could not be reached" in last
        and "run the same command" in last
    )
    errors = pd.read_csv(tmp_path / "f.errors.csv")
    assert len(errors) > 0 and set(errors["kind"]) == {"unreachable"}
    extracted = load_features(out)[1]["path"].tolist()
    assert len(extracted) + len(errors) == 400 and not set(extracted) & set(errors["path"])
    with moto_s3() as (filesystem, _):  # the store is back, with the same objects
        for i, data in enumerate(pngs):
            filesystem.pipe(f"bucket/img/{i:03d}.png", data)
        again = featx_cli(*job)
    assert again.returncode == 0, again.stderr
    assert f"computed: {len(errors)}" in again.stdout  # only what could not be read before
    np.testing.assert_array_equal(load_features(out)[0], expected)
