"""Hostile use of the command line's doors: values that mean nothing, outputs that would overwrite an
input, cache commands pointed outside their folder or at nothing, and jobs where every input fails. Each
ends in one line that names the value and what to do, exits non-zero, and touches nothing it should not."""

from pathlib import Path

import pandas as pd
import pytest
from test_cache import featx_cli

from featx import ParameterError

TINY = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--quiet"]


def one_line_error(result, *fragments) -> str:
    """Assert a non-zero exit with exactly one ``error:`` line, no traceback, naming ``fragments``."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr
    return errors[0]


@pytest.mark.parametrize(
    "flag, value, accepted",
    [
        ("--batch-size", "0", "an integer >= 1"),
        ("--batch-size", "-1", "an integer >= 1"),
        ("--num-workers", "-1", "an integer >= 0"),
        ("--max-pixels", "0", "an integer >= 1"),
        ("--max-pixels", "-5", "an integer >= 1"),
        ("--min-cosine", "2", "a number > 0 and <= 1"),
        ("--min-cosine", "nan", "a number > 0 and <= 1"),
        ("--ray-concurrency", "0", "an integer >= 1"),
    ],
)
def test_a_value_an_option_cannot_mean_is_refused_in_one_line_before_any_work(
    image_folder, tmp_path, flag, value, accepted
):
    result = featx_cli("extract", image_folder, *TINY, "--cache", tmp_path / "cache", flag, value)
    one_line_error(result, flag, repr(value), accepted)
    assert not (tmp_path / "cache").exists()


def test_cache_prune_refuses_a_negative_age_and_keeps_every_shard(image_folder, tmp_path):
    cache = tmp_path / "cache"
    assert featx_cli("extract", image_folder, *TINY, "--cache", cache).returncode == 0
    shards = sorted(cache.rglob("*.npy"))
    one_line_error(featx_cli("cache", "prune", cache, "--older-than", "-1"), "--older-than", "'-1'")
    assert sorted(cache.rglob("*.npy")) == shards and shards


@pytest.mark.parametrize("name", ["../outside", "/tmp", "..", ".", "a/b", ""])
def test_cache_prune_never_removes_anything_outside_its_folder(tmp_path, name):
    cache = tmp_path / "cache"
    cache.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "namespace.json").write_text("{}")  # looks like a namespace, but is not under the cache
    result = featx_cli("cache", "prune", cache, "--namespace", name)
    one_line_error(result, "namespace")
    assert (outside / "namespace.json").is_file()


def test_cache_commands_never_follow_a_namespace_that_is_a_link_out_of_their_folder(image_folder, tmp_path):
    elsewhere, cache = tmp_path / "elsewhere", tmp_path / "cache"
    for folder in (elsewhere, cache):
        assert featx_cli("extract", image_folder, *TINY, "--cache", folder).returncode == 0
    (namespace,) = [p for p in elsewhere.iterdir() if (p / "namespace.json").is_file()]
    (cache / "linked").symlink_to(namespace)
    before = {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()}
    for command in (
        ["info"],
        ["verify", "--drop"],
        ["compact", "--shard-mb", "1"],
        ["prune", "--older-than", "0"],
    ):
        result = featx_cli("cache", command[0], cache, *command[1:])
        assert result.returncode == 0, result.stderr
        assert "linked: a symbolic link" in result.stdout and "not followed" in result.stdout
    one_line_error(featx_cli("cache", "prune", cache, "--namespace", "linked"), "symbolic link", "rm ")
    assert {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()} == before
    assert not list(cache.rglob("*.vectors.npy"))  # the cache's own namespace was pruned: the link was not


@pytest.mark.parametrize("action", ["info", "verify", "compact", "prune"])
def test_cache_commands_on_a_folder_that_does_not_exist_fail_naming_it(tmp_path, action):
    missing = tmp_path / "no-such-cache"
    one_line_error(featx_cli("cache", action, missing), "does not exist")
    assert not missing.exists()


def test_an_output_that_names_the_input_manifest_is_refused_and_the_manifest_is_kept(image_folder, tmp_path):
    manifest = tmp_path / "manifest.parquet"
    paths = sorted(str(p) for p in image_folder.rglob("*.png"))
    pd.DataFrame({"path": paths}).to_parquet(manifest)
    before = manifest.read_bytes()
    one_line_error(
        featx_cli("extract", manifest, *TINY, "--cache", tmp_path / "cache", "--out", manifest),
        "--out",
        "input",
    )
    csv = tmp_path / "manifest.csv"
    pd.DataFrame({"path": paths}).to_csv(csv, index=False)
    one_line_error(
        featx_cli("extract", csv, *TINY, "--cache", tmp_path / "cache", "--errors", csv), "--errors", "input"
    )
    assert manifest.read_bytes() == before and len(pd.read_csv(csv)) == len(paths)


def test_errors_file_colliding_with_the_outputs_own_metadata_is_refused(image_folder, tmp_path):
    out = tmp_path / "f.npy"
    result = featx_cli(
        "extract",
        image_folder,
        *TINY,
        "--cache",
        tmp_path / "c",
        "--out",
        out,
        "--errors",
        tmp_path / "f.meta.csv",
    )
    one_line_error(result, "--errors", "f.meta.csv")
    assert not out.exists()


def test_a_job_in_which_every_input_fails_exits_non_zero_and_still_lists_every_failure(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for n in range(3):
        (folder / f"{n}.png").write_bytes(b"not a png %d" % n)
    out = tmp_path / "x.parquet"
    result = featx_cli("extract", folder, *TINY, "--cache", tmp_path / "cache", "--out", out)
    assert result.returncode == 1, result.stderr
    assert "every input failed" in result.stderr
    listed = pd.read_csv(tmp_path / "x.errors.csv")
    assert sorted(Path(p).name for p in listed["path"]) == ["0.png", "1.png", "2.png"]


def test_several_bad_files_with_the_same_bytes_each_get_their_own_error_row(tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(b"the same broken bytes")
    out = tmp_path / "x.parquet"
    featx_cli("extract", folder, *TINY, "--cache", tmp_path / "cache", "--out", out)
    listed = pd.read_csv(tmp_path / "x.errors.csv")
    assert sorted(Path(p).name for p in listed["path"]) == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize(
    "flag, value",
    [("--cache", "s3://bucket/cache"), ("--out", "s3://bucket/x.parquet"), ("--errors", "gs://b/e.csv")],
)
def test_an_object_store_url_as_a_place_to_write_is_refused_not_made_a_local_folder(
    image_folder, tmp_path, flag, value
):
    options = {"--cache": tmp_path / "c", flag: value}
    args = [part for pair in options.items() for part in pair]
    result = featx_cli("extract", image_folder, *TINY, *args, cwd=tmp_path)
    one_line_error(result, repr(value), "is a URL", "local or mounted folder")
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "gs:").exists()


def test_a_plot_is_written_whole_and_a_url_is_refused(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from featx.evaluate.figures import save_png

    figure = Figure()
    figure.add_subplot().plot([0, 1])
    path = save_png(figure, tmp_path / "sub" / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in path.parent.iterdir()] == [
        "a.png"
    ]
    with pytest.raises(ParameterError, match="is a URL"):
        save_png(figure, "s3://bucket/a.png")


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--out", "table.txt"], ["--out", "ending in .csv"]),
        (["--out", "folder.csv"], ["--out", "is a folder"]),
        (["--plot", "plot.txt"], ["--plot", "ending in .png"]),
        (["--html", "page.png"], ["--html", "ending in .html"]),
        (["--cv", "abc"], ["--cv", "'abc'", ">= 2", "'split'"]),
        (["--cv", "1"], ["--cv", "'1'"]),
        (["--cv", "-3"], ["--cv", "'-3'"]),
    ],
    ids=["out-suffix", "out-folder", "plot-suffix", "html-suffix", "cv-word", "cv-one", "cv-negative"],
)
def test_compare_refuses_outputs_and_folds_it_cannot_write_or_mean_before_any_fitting(
    image_folder, tmp_path, monkeypatch, flags, words
):
    features = tmp_path / "f.parquet"
    assert (
        featx_cli("extract", image_folder, *TINY, "--cache", tmp_path / "c", "--out", features).returncode
        == 0
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.csv").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_error(featx_cli("compare", features, "--classifiers", "logreg", "--quiet", *flags), *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no table half-made


def test_a_ray_address_where_nothing_answers_is_one_line_within_seconds_not_minutes_of_retries(
    image_folder, tmp_path
):
    import socket
    import time

    from featx.engines.ray.network import check_reachable

    start = time.perf_counter()
    result = featx_cli(
        "extract",
        image_folder,
        *TINY,
        "--cache",
        tmp_path / "c",
        "--engine",
        "ray",
        "--ray-address",
        "127.0.0.1:1",
    )
    one_line_error(
        result,
        "Ray address '127.0.0.1:1' (--ray-address, or address= in Python): nothing answers there",
        "ray start --head",
    )
    assert time.perf_counter() - start < 60
    with socket.create_server(("127.0.0.1", 0)) as server:  # something that answers passes the check
        check_reachable(f"ray://127.0.0.1:{server.getsockname()[1]}")
    check_reachable("auto")  # left to Ray
