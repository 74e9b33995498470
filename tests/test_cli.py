"""The batch job from the command line: every bad-file kind reported, every good file extracted."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_cache import REPO, featx_cli, write_images

from featx import build_network, load_features
from featx.cache import MemoryNamespace
from featx.engines import RunOptions
from featx.extract import extract


def test_bad_files_are_listed_with_their_kind_and_every_good_file_is_extracted(messy_folder, tmp_path):
    out, errors = tmp_path / "out.parquet", tmp_path / "errors.csv"
    result = featx_cli(
        "extract",
        messy_folder,
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
        "--errors",
        errors,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "images: 11" in result.stdout and "failed: 5" in result.stdout
    listed = pd.read_csv(errors)
    kinds = dict(zip(listed["path"].str.rsplit("/", n=1).str[-1], listed["kind"]))
    assert kinds == {
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "text.jpg": "not_an_image",
        "bomb.png": "decompression_bomb",
        "missing.jpg": "missing",
    }
    X, meta = load_features(out)
    assert sorted(meta["path"].str.rsplit("/", n=1).str[-1]) == [
        "cmyk.jpg",
        "grey16.png",
        "la.png",
        "palette.png",
        "plain.png",
        "rotated.jpg",
    ]
    assert np.isfinite(X).all() and X.shape == (6, 64)
    assert (meta["label"] == "good").all()


def test_on_error_raise_stops_with_a_message_naming_the_file(messy_folder, tmp_path):
    result = featx_cli(
        "extract",
        messy_folder,
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        tmp_path / "cache",
        "--on-error",
        "raise",
        "--quiet",
    )
    assert result.returncode == 1
    # the first bad file in input order among those read so far (here all of them: one batch)
    assert "featx: error: input 0 " in result.stderr and "bomb.png" in result.stderr


def test_folder_sources_take_labels_from_class_folders_and_write_npy(image_folder, tmp_path):
    out = tmp_path / "features.npy"
    result = featx_cli(
        "extract",
        image_folder,
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    X, meta = load_features(out)
    assert X.shape == (6, 64) and sorted(set(meta["label"])) == ["cat", "dog"]
    X_parquet, _ = load_features(_extract_parquet(image_folder, tmp_path))
    np.testing.assert_array_equal(X, X_parquet)


def _extract_parquet(folder, tmp_path):
    out = tmp_path / "features.parquet"
    featx_cli(
        "extract",
        folder,
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        tmp_path / "cache",
        "--out",
        out,
        "--quiet",
    )
    return out


def test_backbones_lists_family_default_weights_and_feature_size():
    rows = {
        line.split()[0]: line.split()[1:]
        for line in featx_cli("backbones", "--filter", "vgg16*").stdout.splitlines()
    }
    assert rows["vgg16"] == ["torchvision", "IMAGENET1K_V1", "25088"]  # featx's entry: the last max-pool
    assert rows["timm/vgg16.tv_in1k"] == ["timm", "tv_in1k", "4096"]  # timm's pre-logits


@pytest.fixture(scope="module")
def small_fashion_manifest(fashion_manifest, tmp_path_factory):
    """20 images per class of the Fashion-MNIST sample, as a manifest with absolute paths."""
    manifest = pd.read_csv(fashion_manifest).groupby("label").head(20)
    manifest["path"] = [str(fashion_manifest.parent / p) for p in manifest["path"]]
    path = tmp_path_factory.mktemp("manifest") / "small.csv"
    manifest.to_csv(path, index=False)
    return path


def test_compare_prints_a_table_a_recommendation_and_a_verdict_and_writes_csv_and_png(
    small_fashion_manifest, tmp_path
):
    out, plot = tmp_path / "results.csv", tmp_path / "results.png"
    done = featx_cli(
        "compare",
        small_fashion_manifest,
        "--backbone",
        "efficientnet_lite0",
        "--cache",
        tmp_path / "cache",
        "--cv",
        "3",
        "--classifiers",
        "logreg,knn",
        "--report",
        "--out",
        out,
        "--plot",
        plot,
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    assert "Best: " in done.stdout and "Transfer " in done.stdout
    table = pd.read_csv(out)
    assert sorted(table["classifier"]) == ["knn", "logreg"] and (table["n_folds"] == 3).all()
    report = pd.read_csv(tmp_path / "results.transfer.csv")
    assert sorted(report["kind"]) == ["pretrained", "random init", "raw pixels"]
    with Image.open(plot) as png:
        assert png.format == "PNG" and png.size == (1950, 550)


def test_compare_on_a_features_file_gives_the_same_table_as_on_its_images(small_fashion_manifest, tmp_path):
    cache, features = tmp_path / "cache", tmp_path / "features.parquet"
    args = ("--cv", "3", "--classifiers", "logreg", "--quiet")
    assert (
        featx_cli(
            "extract",
            small_fashion_manifest,
            "--backbone",
            "efficientnet_lite0",
            "--cache",
            cache,
            "--out",
            features,
            "--quiet",
        ).returncode
        == 0
    )
    from_images = featx_cli(
        "compare",
        small_fashion_manifest,
        "--backbone",
        "efficientnet_lite0",
        "--cache",
        cache,
        "--out",
        tmp_path / "a.csv",
        *args,
    )
    from_file = featx_cli("compare", features, "--out", tmp_path / "b.csv", *args)
    assert from_images.returncode == 0 and from_file.returncode == 0, from_images.stderr + from_file.stderr
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert a["accuracy_mean"].tolist() == b["accuracy_mean"].tolist()
    assert b["backbone"].tolist() == ["efficientnet_lite0"] and b["layer"].tolist() == ["global_pool"]


def test_compare_without_labels_says_what_it_needs(image_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for n, path in enumerate(sorted(image_folder.rglob("*.png"))):
        (flat / f"{n}.png").write_bytes(path.read_bytes())
    done = featx_cli(
        "compare", flat, "--backbone", "tiny_backbone:TINY", "--weights", "none", "--cache", tmp_path / "c"
    )
    assert done.returncode == 1
    assert "has no labels: compare needs class sub-folders or a 'label' column" in done.stderr


def extract_under_a_terminal(folder, cache) -> str:
    """Run the job with standard error on a pseudo-terminal, as a person at a shell sees it; its text."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 40 rows, 160 columns
    command = [
        sys.executable,
        "-m",
        "featx",
        "extract",
        str(folder),
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        str(cache),
        "--batch-size",
        "2",
        "--precision",
        "fp32",
    ]
    job = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    text = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the job closed the terminal
            break
        if not chunk:
            break
        text += chunk
    os.close(controller)
    assert job.wait(timeout=120) == 0, text
    return text.decode(errors="replace")


def test_the_progress_bar_keeps_the_cached_count_while_computing(tmp_path):
    cache = tmp_path / "cache"
    featx_cli(
        "extract",
        write_images(tmp_path / "half", 4),
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        cache,
        "--precision",
        "fp32",
        "--quiet",
    )
    shown = extract_under_a_terminal(write_images(tmp_path / "all", 10), cache)
    final_bar = shown.replace("\r", "\n").strip().splitlines()[-1]
    assert "10/10" in final_bar and "cached=4" in final_bar and "computed=6" in final_bar, shown


def test_no_progress_bar_goes_into_a_log_file(tmp_path):
    log = featx_cli(
        "extract",
        write_images(tmp_path / "images", 10),
        "--backbone",
        "tiny_backbone:TINY",
        "--weights",
        "none",
        "--cache",
        tmp_path / "cache",
        "--batch-size",
        "2",
    )
    assert log.returncode == 0, log.stderr
    assert "\r" not in log.stderr and "img/s" not in log.stderr and "img/s" not in log.stdout
    assert "computed: 10" in log.stdout


def test_the_progress_bar_counts_in_plain_numbers(capsys):
    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    network = build_network("tiny", weights=None, precision="fp32")
    store = MemoryNamespace(network.fingerprint)
    extract([image], network, store)
    extract([image] * 10_000, network, store, RunOptions(progress=True, num_workers=0))
    assert "cached=10000, computed=0, failed=0" in capsys.readouterr().err  # not tqdm's "1e+4"


def test_commands_that_run_no_network_start_without_torch_and_the_zoo_is_there_when_asked_for(tmp_path):
    # A fresh interpreter: this one imported torch long ago. `featx --help` and `featx cache info` answer
    # without importing torch (seconds of start-up); the first registry lookup finds the bundled zoo.
    (tmp_path / "cache").mkdir()
    script = f"""
import contextlib, io, sys
import featx.cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        featx.cli.main(["--help"])
    except SystemExit:
        pass
    code = featx.cli.main(["cache", "info", {str(tmp_path / "cache")!r}])
print(code, "torch" in sys.modules, "torchvision" in sys.modules)
from featx.models._registry import list_backbones
print("resnet50" in list_backbones(), "torch" in sys.modules)
import featx  # the packages by role are attributes, as submodules of an eagerly imported package are
print(featx.evaluate.compare_classifiers.__name__, featx.cache.FeatureCache is featx.FeatureCache)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["0 False False", "True True", "compare_classifiers True"]
