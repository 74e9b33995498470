"""Hostile inputs, one class per section (issue: hardening). Each case asserts the outcome: the error kind
and the path named, the good files extracted, the exit code, and no temporary files left behind."""

import contextlib
import io
import os
import subprocess
import sys
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPEATED, encode, photo, repeated_paths
from PIL import Image
from test_cache import featx_cli

import featx
from featx import (
    FeatureCache,
    FeatxError,
    ImageError,
    ParameterError,
    PretrainedFeatures,
    load_features,
)
from featx.cli import main

TINY = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--quiet"]


def tiny(**params) -> PretrainedFeatures:
    return PretrainedFeatures("tiny", weights=None, precision="fp32", **params)


def strip_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.startswith(".tmp")]


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A real small filesystem (full disks, read-only mounts); skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(folder: Path) -> None:
    """Write until the filesystem is full: the next write of any data fails with ENOSPC."""
    with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as handle:
        while True:
            handle.write(b"\0" * 4096)


# -- 1. sizes that explode after decoding ------------------------------------------------------------------


def test_a_thin_strip_whose_resize_would_be_enormous_is_refused_as_too_large_not_allocated():
    strip = strip_png(1, 100_000)  # 100 kpx, a few hundred bytes: 36 x 3.6 million once resized (tiny: 36 px)
    images = [photo(0), strip, photo(1)]
    with pytest.warns(UserWarning, match="1 of 3 images failed"):
        X = tiny(on_error="nan").fit_transform(images)
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
    estimator = tiny(on_error="nan", max_pixels=10_000)
    with pytest.warns(UserWarning):
        estimator.fit_transform([photo(0), strip_png(1, 400)])  # 400 px decoded, 36 x 14,400 resized
    (error,) = estimator.errors_
    assert (error.index, error.kind) == (1, "too_large") and "36x14400" in error.reason


def test_max_pixels_is_a_parameter_of_the_cli_and_refuses_per_image(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "strip.png").write_bytes(strip_png(2, 2000))
    (folder / "ok.png").write_bytes(encode(photo(0)))
    out = tmp_path / "x.parquet"
    result = featx_cli(
        "extract", folder, *TINY, "--cache", tmp_path / "cache", "--out", out, "--max-pixels", "20000"
    )
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(out.with_suffix(".errors.csv"))
    assert listed[["kind"]].values.ravel().tolist() == ["too_large"] and listed["path"][0].endswith(
        "strip.png"
    )
    assert load_features(out)[0].shape == (1, 64)


def test_max_pixels_above_pils_own_bound_is_honoured_and_pils_bound_is_put_back(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(strip_png(13_500, 13_400))  # 180.9 MP: over PIL's refusal (twice 89.5 MP), 0.2 MB
    pils_own = Image.MAX_IMAGE_PIXELS
    X = tiny(max_pixels=200_000_000).fit_transform([str(big)])
    assert np.isfinite(X).all() and pils_own == Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match="180,900,000 pixels exceeds the limit of 89,478,485; raise"):
        tiny().fit_transform([str(big)])  # PIL refuses first; featx's message names featx's bound


def test_decodes_with_several_pixel_bounds_in_threads_each_keep_their_own_and_pils_is_restored(
    monkeypatch,
):
    from featx.inputs.images import load_rgb

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL refuses over 2,000 pixels
    data = encode(photo(0, size=(60, 60)))  # 3,600 pixels
    bounds = [5_000, 3_000, 1_500, 4_000] * 25

    def outcome(max_pixels: int) -> str:
        try:
            load_rgb(data, max_pixels=max_pixels)
            return "decoded"
        except ImageError as error:
            assert f"exceeds the limit of {max_pixels:,}" in error.reason
            return error.kind

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(outcome, bounds))
    expected = ["decoded" if bound >= 3_600 else "decompression_bomb" for bound in bounds]
    assert outcomes == expected and Image.MAX_IMAGE_PIXELS == 1_000


def test_the_byte_bound_grows_with_max_pixels_so_a_raised_bound_reads_what_it_may_decode(
    tmp_path, monkeypatch
):
    from featx.inputs import bounds, images

    monkeypatch.setattr(bounds, "MAX_PIXELS", 10)  # byte bound: 16 bytes a pixel, never below 160 bytes
    odd = tmp_path / "odd.png"
    odd.write_bytes(bytes(1_000))
    with pytest.raises(ImageError, match="too_large: .* it was not read further"):
        images.load_rgb(odd, max_pixels=10)
    with pytest.raises(ImageError, match="not_an_image"):  # 16,000 bytes may hold 1,000 pixels: read
        images.load_rgb(odd, max_pixels=1_000)


# -- 2. folders as they really are ----------------------------------------------------------------------


def test_every_entry_of_an_odd_folder_is_extracted_reported_or_counted_and_nothing_hangs(tmp_path):
    root = tmp_path / "odd"
    (root / "cats").mkdir(parents=True)
    (root / "empty").mkdir()
    for name in ("top1.png", "top2.png", "cats/c.png"):
        (root / name).write_bytes(encode(photo(len(name))))
    os.symlink("nowhere.png", root / "broken.png")
    os.symlink("loop.png", root / "loop.png")  # a link to itself
    os.symlink(".", root / "dirloop")  # a link to its own folder
    os.mkfifo(root / "fifo.png")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as handle:  # Latin-1 name, not UTF-8
        handle.write(encode(photo(7)))
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")
    out, errors = tmp_path / "out.parquet", tmp_path / "errors.csv"
    command = [
        sys.executable,
        "-m",
        "featx",
        "extract",
        str(root),
        *TINY,
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--errors",
        str(errors),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,  # a FIFO must not hang it
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr
    assert (
        "images: 7" in result.stdout
        and "failed: 3" in result.stdout
        and "skipped (not images): 3" in result.stdout
    )
    X, meta = load_features(out)
    names = sorted(Path(p).name for p in meta["path"])
    assert names == ["c.png", "caf\\xe9.png", "top1.png", "top2.png"]  # the top-level images are not ignored
    unlabelled = dict(zip(meta["path"].map(lambda p: Path(p).name), meta["label"].isna()))
    assert unlabelled == {"c.png": False, "caf\\xe9.png": True, "top1.png": True, "top2.png": True}
    listed = pd.read_csv(errors).assign(name=lambda f: f["path"].map(lambda p: Path(p).name))
    kinds = dict(zip(listed["name"], listed["kind"]))
    assert kinds == {
        "broken.png": "missing",
        "fifo.png": "not_a_file",
        "loop.png": "unreadable",
        "dirloop": "skipped",
        "notes.txt": "skipped",
        ".DS_Store": "skipped",
    }


def test_names_with_newlines_or_terminal_escapes_stay_one_line_on_stderr_and_verbatim_in_the_errors_csv(
    tmp_path,
):
    root = tmp_path / "names"
    root.mkdir()
    (root / "good.png").write_bytes(encode(photo(0)))
    odd = ["two\nlines.png", "\x1b[2Jclears.png", "bell\x07\x9b.png"]  # damaged: each a failed row
    for name in odd:
        (root / name).write_bytes(b"not an image")
    errors = tmp_path / "errors.csv"
    result = featx_cli("extract", root, *TINY, "--cache", tmp_path / "cache", "--errors", errors)
    assert result.returncode == 0, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("  failed")]
    assert len(failed) == 3 and all("not_an_image" in line for line in failed)  # each message one line
    assert not any(c in result.stderr for c in "\x1b\x07\x9b")  # nothing reaches the terminal raw
    assert "two\\x0alines.png" in result.stderr and "\\x1b[2Jclears.png" in result.stderr
    listed = pd.read_csv(errors, keep_default_na=False)
    assert sorted(Path(p).name for p in listed["path"]) == sorted(odd)  # the file's real name, to act on


# -- 3. writes that fail --------------------------------------------------------------------------------


def one_line_failure(result, *words):
    """Exit 1 and a last line 'featx: error: ...' with ``words``; no traceback (info lines may come before)."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("featx: error:") and "Traceback" not in result.stderr, result.stderr
    assert all(word in lines[-1] for word in words), lines[-1]


def test_a_cache_that_is_a_file_ends_in_one_line_naming_it(image_folder, tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("I am a file")
    one_line_failure(featx_cli("extract", image_folder, *TINY, "--cache", cache), str(cache))


def test_an_int8_calibration_set_that_is_a_lone_or_broken_image_ends_in_one_line_naming_it(
    image_folder, tmp_path
):
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    Image.fromarray(photo(0)).save(calibration / "only.png")
    one_line_failure(
        featx_cli(
            "extract",
            image_folder,
            *TINY,
            "--cache",
            tmp_path / "cache",
            "--precision",
            "int8",
            "--calibration",
            calibration,
        ),
        str(calibration),
        "at least 2",
    )
    (calibration / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    one_line_failure(
        featx_cli(
            "extract",
            image_folder,
            *TINY,
            "--cache",
            tmp_path / "cache",
            "--precision",
            "int8",
            "--calibration",
            calibration,
        ),
        "broken.jpg",
        "choose another calibration set",
    )


def test_a_read_only_cache_ends_in_one_line_before_any_work(image_folder, tmp_path):
    with tmpfs(tmp_path / "ro", "1m") as mount:
        FeatureCache(mount)  # the cache folder exists, then becomes read-only
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        one_line_failure(
            featx_cli("extract", image_folder, *TINY, "--cache", mount / "cache"),
            str(mount),
            "Read-only file system",
        )


def test_unwritable_errors_path_and_wrong_out_suffix_are_refused_before_extracting(image_folder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cache = tmp_path / "cache"
    one_line_failure(
        featx_cli("extract", image_folder, *TINY, "--cache", cache, "--errors", blocker / "e.csv"),
        "--errors",
        str(blocker),
    )
    one_line_failure(
        featx_cli("extract", image_folder, *TINY, "--cache", cache, "--out", tmp_path / "x.csv"),
        "x.csv",
        ".parquet or .npy",
    )
    assert not cache.exists()  # refused before the cache was even opened


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_a_full_disk_under_out_fails_in_one_line_leaves_no_temporary_files_and_keeps_the_old_output(
    image_folder, tmp_path, suffix
):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        out = disk / f"features{suffix}"
        first = featx_cli("extract", image_folder, *TINY, "--cache", tmp_path / "cache", "--out", out)
        assert first.returncode == 0, first.stderr
        before = load_features(out)[0]
        fill_disk(disk)
        (image_folder / "dog" / "new.png").write_bytes(encode(photo(99)))
        one_line_failure(
            featx_cli("extract", image_folder, *TINY, "--cache", tmp_path / "cache", "--out", out),
            str(out),
            "No space left on device",
        )
        assert leftovers(disk) == []
        X, meta = load_features(out)  # the old pair, whole and aligned
        np.testing.assert_array_equal(X, before)
        assert len(meta) == len(X) == 6


def test_a_full_disk_under_the_cache_fails_in_one_line_and_leaves_no_temporary_files(image_folder, tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        first = featx_cli("extract", image_folder, *TINY, "--cache", disk, "--batch-size", "2")
        assert first.returncode == 0, first.stderr
        fill_disk(disk)
        (image_folder / "dog" / "new.png").write_bytes(encode(photo(98)))
        one_line_failure(
            featx_cli("extract", image_folder, *TINY, "--cache", disk),
            "feature cache",
            "No space left on device",
        )
        assert leftovers(disk) == []


# -- 4. outputs that must match ---------------------------------------------------------------------------


def test_load_features_refuses_a_matrix_without_its_meta_or_with_another_runs_meta(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ParameterError, match="x.meta.csv"):
        load_features(tmp_path / "x.npy")
    pd.DataFrame({"path": ["a", "b"]}).to_csv(tmp_path / "x.meta.csv", index=False)
    with pytest.raises(ParameterError, match="3 rows but x.meta.csv has 2"):
        load_features(tmp_path / "x.npy")


def hostile_feature_files(folder: Path, good: Path) -> dict[str, tuple[Path, list[str]]]:
    """Feature files as users damage or rewrite them, each with what its one-line refusal must say."""
    X, meta = load_features(good)
    files: dict[str, tuple[Path, list[str]]] = {}

    def parquet(name: str, features: list, *words: str, **columns) -> None:
        meta.assign(features=features, **columns).to_parquet(folder / name)
        files[name] = (folder / name, [name, *words])

    def npy(name: str, matrix: np.ndarray | bytes, *words: str) -> None:
        if isinstance(matrix, bytes):
            (folder / name).write_bytes(matrix)
        else:
            np.save(folder / name, matrix, allow_pickle=True)
        meta.head(len(matrix) if isinstance(matrix, np.ndarray) else 1).to_csv(
            folder / name.replace(".npy", ".meta.csv"), index=False
        )
        files[name] = (folder / name, [name, *words])

    rows = list(X)
    parquet("ragged.parquet", [r[:3] if i == 4 else r for i, r in enumerate(rows)], "row 4 is 3 long")
    parquet("null-row.parquet", [None if i == 1 else r for i, r in enumerate(rows)], "row 1 is null")
    parquet("text.parquet", ["abc"] * len(rows), "not vectors")
    parquet("not-finite.parquet", [r * np.nan if i == 2 else r for i, r in enumerate(rows)], "not finite")
    parquet("no-labels.parquet", rows, "two classes", "every label is blank", label=None)
    parquet("one-label.parquet", rows, "two classes", "one class, 'cat'", label="cat")
    (folder / "garbage.parquet").write_bytes(os.urandom(300))
    files["garbage.parquet"] = (folder / "garbage.parquet", ["garbage.parquet", "cannot read"])
    npy("garbage.npy", os.urandom(300), "not a .npy matrix")
    npy("objects.npy", np.array([[1, "a"]] * 3, dtype=object), "Python objects", "never loads")
    npy("one-d.npy", X[:, 0].copy(), "1-D", "2-D")
    return files


def test_a_features_file_users_damaged_or_rewrote_is_one_line_naming_it_and_never_offers_to_unpickle(
    image_folder, tmp_path
):
    good = tmp_path / "good.parquet"
    assert (
        featx_cli("extract", image_folder, *TINY, "--cache", tmp_path / "cache", "--out", good).returncode
        == 0
    )
    for name, (path, words) in hostile_feature_files(tmp_path, good).items():
        result = featx_cli("compare", path, "--classifiers", "logreg", "--cv", "2", "--quiet")
        one_line_failure(result, *words)
        assert "pickle" not in result.stderr, name


def test_a_features_parquet_saved_again_by_pandas_reads_back_the_same_writable_matrix(image_folder, tmp_path):
    good = tmp_path / "good.parquet"
    assert (
        featx_cli("extract", image_folder, *TINY, "--cache", tmp_path / "cache", "--out", good).returncode
        == 0
    )
    X, meta = load_features(good)
    pd.read_parquet(good).assign(label="relabelled").to_parquet(tmp_path / "again.parquet")  # a list column
    again, again_meta = load_features(tmp_path / "again.parquet")
    np.testing.assert_array_equal(again, X)
    assert again.dtype == np.float32 and (again_meta["label"] == "relabelled").all()
    X[0] = 0  # writable, as np.load's arrays are
    assert (X[0] == 0).all()


@pytest.mark.parametrize("suffix", [".npy", ".parquet"])
def test_when_every_input_fails_the_errors_csv_and_an_empty_output_are_written_and_the_job_exits_1(
    tmp_path, suffix
):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_text("not a png")
    (folder / "b.jpg").write_bytes(b"")
    out = tmp_path / f"x{suffix}"
    result = featx_cli("extract", folder, *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 1 and "every input failed (2)" in result.stderr, result.stderr
    assert sorted(pd.read_csv(out.with_suffix(".errors.csv"))["kind"]) == ["empty", "not_an_image"]
    X, meta = load_features(out)
    assert X.shape == (0, 64) and len(meta) == 0 and "path" in meta.columns


# -- 5. damaged shards ------------------------------------------------------------------------------------


def test_garbled_truncated_and_reshaped_shards_are_recomputed_with_a_warning(tmp_path):
    images = [photo(i) for i in range(8)]
    estimator = tiny(cache_dir=tmp_path / "cache", batch_size=2, num_workers=0).fit(images)
    for start in range(0, 8, 2):  # one job per shard: a job may group its batches into fewer shards
        estimator.transform(images[start : start + 2])
    expected = estimator.transform(images)
    (namespace,) = FeatureCache(tmp_path / "cache").namespaces()
    assert len(namespace.shard_names()) == 4
    shards = [namespace.path / f"{s}.vectors.npy" for s in namespace.shard_names()]
    shards[0].write_bytes(b"\x93NUMPY garbage" + shards[0].read_bytes()[14:])  # garbled header
    shards[1].write_bytes(shards[1].read_bytes()[:100])  # truncated
    np.save(shards[2], np.load(shards[2]).reshape(4, 32))  # reshaped
    (namespace.path / f"{namespace.shard_names()[3]}.keys.npy").write_bytes(b"garbage")  # unreadable keys
    with pytest.warns(UserWarning, match="unreadable"):
        again = tiny(cache_dir=tmp_path / "cache", batch_size=2, num_workers=0).fit(images).transform(images)
    np.testing.assert_array_equal(again, expected)


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]"])
def test_cache_info_survives_a_garbage_namespace_json_and_an_unreadable_keys_file(
    image_folder, tmp_path, garbage
):
    cache = tmp_path / "cache"
    assert featx_cli("extract", image_folder, *TINY, "--cache", cache, "--batch-size", "2").returncode == 0
    (namespace,) = FeatureCache(cache).namespaces()
    (namespace.path / f"{namespace.shard_names()[0]}.keys.npy").write_bytes(b"junk")
    other = cache / "other-ns"
    other.mkdir()
    (other / "namespace.json").write_text(garbage)
    result = featx_cli("cache", "info", cache)
    assert result.returncode == 0, result.stderr
    assert "unreadable namespace.json" in result.stdout and namespace.path.name in result.stdout


# -- 6. manifests -----------------------------------------------------------------------------------------


def test_a_blank_path_cell_is_a_per_row_error_and_the_other_rows_are_extracted(image_folder, tmp_path):
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))][:2]
    (tmp_path / "m.csv").write_text(f"path,label\n{paths[0]},a\n,b\n{paths[1]},c\n")
    out = tmp_path / "x.parquet"
    result = featx_cli("extract", tmp_path / "m.csv", *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 0, result.stderr
    listed = pd.read_csv(out.with_suffix(".errors.csv"))
    assert listed["index"].tolist() == [1] and listed["kind"].tolist() == ["missing"]
    assert "blank" in listed["message"][0]
    assert load_features(out)[1]["label"].tolist() == ["a", "c"]


@pytest.mark.parametrize("column", ["features", "key"])
def test_a_manifest_column_featx_writes_is_refused_up_front_naming_it(image_folder, tmp_path, column):
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))]
    pd.DataFrame({"path": paths, column: range(len(paths))}).to_csv(tmp_path / "m.csv", index=False)
    one_line_failure(
        featx_cli("extract", tmp_path / "m.csv", *TINY, "--cache", tmp_path / "cache"),
        f"'{column}'",
        "rename",
    )


def test_a_missing_split_value_under_cv_split_is_one_clear_line(image_folder, tmp_path):
    paths = [str(p) for p in sorted(image_folder.rglob("*.png"))]
    frame = pd.DataFrame(
        {"path": paths, "label": ["a", "b"] * 3, "split": ["train"] * 3 + ["test", "test", None]}
    )
    frame.to_csv(tmp_path / "m.csv", index=False)
    one_line_failure(
        featx_cli(
            "compare",
            tmp_path / "m.csv",
            "--backbone",
            "tiny_backbone:TINY",
            "--weights",
            "none",
            "--cache",
            tmp_path / "cache",
            "--cv",
            "split",
            "--classifiers",
            "logreg",
            "--quiet",
        ),
        "split",
        "1 row",
    )


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("utf16.csv", "path\nphoto.png\n".encode("utf-16"), ["not UTF-8", "0xff", "save it as UTF-8"]),
        ("latin1.csv", "path,label\nphoto.png,caf\xe9\n".encode("latin-1"), ["not UTF-8", "0xe9"]),
        ("header.csv", b"path,label\n", ["lists no images", "no rows"]),
        ("empty.parquet", pd.DataFrame({"path": pd.Series([], dtype=str)}), ["lists no images"]),
        ("numbers.parquet", pd.DataFrame({"path": [1, 2]}), ["'path' column holds int64", "as text"]),
    ],
    ids=["utf16", "latin1", "header-only", "empty-parquet", "number-paths"],
)
def test_a_manifest_featx_cannot_take_as_written_is_one_line_naming_it_and_what_to_do(
    tmp_path, name, content, words
):
    manifest = tmp_path / name
    if isinstance(content, bytes):
        manifest.write_bytes(content)
    else:
        content.to_parquet(manifest)
    result = featx_cli("extract", manifest, *TINY, "--cache", tmp_path / "cache")
    one_line_failure(result, name, *words)
    assert not (tmp_path / "cache").exists()  # refused before any work


@pytest.mark.parametrize(
    "source, words",
    [
        ("images/*.png", ["a pattern of image files is not a SOURCE", "folder"]),
        ("images/one.png", ["is one image", "[path]"]),
        ("no-such-folder", ["does not exist", "a SOURCE is"]),
        ("fifo", ["is not a folder or a file"]),
        ("images.zip", ["does not read .zip archives", "tar shards"]),
    ],
    ids=["glob", "one-image", "missing", "fifo", "zip"],
)
def test_a_source_that_is_no_folder_or_manifest_says_what_a_source_is(tmp_path, monkeypatch, source, words):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "one.png").write_bytes(encode(photo(0)))
    os.mkfifo(tmp_path / "fifo")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        archive.write(tmp_path / "images" / "one.png", "one.png")
    monkeypatch.chdir(tmp_path)
    one_line_failure(featx_cli("extract", source, *TINY, "--cache", "cache"), source, *words)
    assert not (tmp_path / "cache").exists()


# -- 7. inputs that change meaning silently ------------------------------------------------------------------


def test_a_float_tiff_in_0_1_gives_the_vector_of_the_same_8_bit_image(tmp_path):
    grey = photo(3)[..., 0]
    Image.fromarray(grey.astype(np.float32) / 255, mode="F").save(tmp_path / "f.tif")
    Image.fromarray(grey).save(tmp_path / "g.png")
    X = tiny().fit_transform([str(tmp_path / "f.tif"), str(tmp_path / "g.png")])
    np.testing.assert_array_equal(X[0], X[1])


def test_a_float_image_outside_0_1_is_refused_as_ambiguous_not_decoded_black(tmp_path):
    Image.fromarray(photo(3)[..., 0].astype(np.float32), mode="F").save(tmp_path / "f255.tif")  # 0..255
    estimator = tiny(on_error="nan")
    with pytest.warns(UserWarning):
        estimator.fit_transform([str(tmp_path / "f255.tif")])
    assert estimator.errors_[0].kind == "ambiguous" and "[0, 1]" in estimator.errors_[0].reason


def test_an_rgba_array_and_the_same_rgba_pil_image_get_the_same_vector():
    rgba = np.dstack([photo(4), np.linspace(0, 255, 48 * 40).reshape(48, 40).astype(np.uint8)])
    X = tiny().fit_transform([rgba, Image.fromarray(rgba, "RGBA")])
    np.testing.assert_array_equal(X[0], X[1])


def test_a_generator_is_refused_instead_of_silently_giving_no_rows():
    with pytest.raises(ParameterError, match="generator.*list"):
        tiny().fit_transform(photo(i) for i in range(6))


# -- 8. errors are featx's own ----------------------------------------------------------------------------


def test_featx_errors_share_one_root_and_keep_their_standard_bases():
    assert issubclass(ImageError, FeatxError) and issubclass(ImageError, ValueError)
    assert issubclass(ParameterError, FeatxError) and issubclass(ParameterError, ValueError)
    assert issubclass(featx.WeightsUnavailableError, FeatxError) and issubclass(
        featx.WeightsUnavailableError, RuntimeError
    )
    assert issubclass(featx.OutputError, FeatxError) and issubclass(featx.OutputError, OSError)


def test_the_cli_prints_featx_errors_in_one_line_but_a_bug_keeps_its_traceback(monkeypatch, capsys):
    assert main(["extract", "nowhere/", "--cache", "c", "--backbone", "tiny"]) == 1
    assert capsys.readouterr().err.startswith("featx: error: nowhere")

    def bug(*args, **kwargs):
        raise KeyError("a bug in featx")

    monkeypatch.setattr("featx.models.catalog.feature_size", bug)
    with pytest.raises(KeyError), warnings.catch_warnings():
        main(["backbones", "--filter", "resnet5*"])


def test_a_manifest_naming_few_files_many_times_reads_each_once_and_every_row_gets_its_outcome(
    tmp_path, monkeypatch
):
    from featx.engines import RunOptions
    from featx.engines.local import datasets
    from featx.extract import extract
    from featx.models.build import build_network

    paths = repeated_paths(tmp_path, 4000)
    reads = []
    original = datasets.read_content
    monkeypatch.setattr(
        datasets, "read_content", lambda image, *args: reads.append(image) or original(image, *args)
    )
    network = build_network("tiny", weights=None, precision="fp32")
    result = extract(paths, network, options=RunOptions(num_workers=0))
    assert sorted(reads) == sorted(str(tmp_path / name) for name in REPEATED)  # each path read once
    assert (result.n_computed, result.n_cached) == (2, 1998)
    np.testing.assert_array_equal(result.features[0::4], np.repeat(result.features[:1], 1000, axis=0))
    assert [e.index for e in result.errors] == [row for row in range(4000) if row % 4 >= 2]
    kinds = {(REPEATED[e.index % 4], e.kind) for e in result.errors}
    assert kinds == {("missing.png", "missing"), ("garbage.png", "not_an_image")}
    assert all(e.source == paths[e.index] for e in result.errors)  # each row under its own name
