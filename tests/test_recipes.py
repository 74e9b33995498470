"""The how-to pages run: each test takes a page's fenced code as it is, makes it smaller where a
replacement says so (fewer images, fp32 instead of a precision trial, the tiny backbone for mechanics),
and runs it on the sample data; a replacement whose text left the page fails, so page and test cannot
drift apart."""

import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, TINY_CLI
from test_cache import featx_cli

from featx import FeatureCache, PretrainedFeatures, load_features

HOWTO = REPO / "docs" / "howto"
FP32 = ('cache_dir=".featx-cache")', 'cache_dir=".featx-cache", precision="fp32")')


def blocks(page: str, language: str) -> list[str]:
    """The page's fenced code blocks in ``language``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", (HOWTO / page).read_text(), re.DOTALL | re.MULTILINE)


def smaller(code: str, *replacements: tuple[str, str]) -> str:
    for old, new in replacements:
        assert old in code, f"the recipe no longer holds {old!r}: update tests/test_recipes.py with the page"
        code = code.replace(old, new)
    return code


def run_python(code: str, page: str) -> dict:
    scope = {"__name__": "__recipe__"}
    exec(compile(code, f"docs/howto/{page}", "exec"), scope)
    return scope


def featx_lines(code: str) -> list[list[str]]:
    """The ``featx ...`` commands of a bash block, continuation lines joined."""
    joined = code.replace("\\\n", " ")
    return [line.split()[1:] for line in joined.splitlines() if line.startswith("featx ")]


def committed_shards(cache):
    """Keys files renamed into place (a writer's temporary file is hidden: ``.tmp-...keys.npy``)."""
    return [path for path in cache.glob("*/*.keys.npy") if not path.name.startswith(".")]


@pytest.fixture
def workdir(tmp_path, monkeypatch, fashion_manifest):
    """A folder where ``data/fashion_mnist/manifest.csv`` is the sample data, as in a clone."""
    (tmp_path / "data").symlink_to(fashion_manifest.parents[1], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_grid_search_recipe_searches_layer_and_C_computing_each_image_once_per_layer(workdir):
    [code] = blocks("grid-search.md", "python")
    code = smaller(
        code,
        ("head(100)", "head(4)"),
        FP32,
        ('"logisticregression__C": [0.01, 0.1, 1.0]', '"logisticregression__C": [0.1]'),
        ("cv=3", "cv=2"),
    )
    grid = run_python(code, "grid-search.md")["grid"]
    assert len(grid.cv_results_["params"]) == 2
    assert set(grid.best_params_) == {"pretrainedfeatures__layer", "logisticregression__C"}
    namespaces = FeatureCache(".featx-cache").namespaces()
    assert sorted(namespace.stats()["vectors"] for namespace in namespaces) == [40, 40]


def test_the_checkpoint_recipe_reads_a_fine_tuned_trunk_in_python_and_on_the_command_line(workdir):
    [code] = blocks("own-checkpoint.md", "python")
    code = smaller(
        code,
        ("head(100)", "head(3)"),
        (
            'FineTunedClassifier("efficientnet_lite0", unfreeze=2)',
            'FineTunedClassifier("efficientnet_lite0", unfreeze=1, epochs=1, finetune_epochs=1, '
            "validation_fraction=0.5)",
        ),
        FP32,
    )
    scope = run_python(code, "own-checkpoint.md")
    paths, X = scope["paths"], scope["X"]
    assert X.shape == (30, 1280)
    pretrained = PretrainedFeatures("efficientnet_lite0", precision="fp32").fit_transform(paths[:4])
    assert not np.allclose(X[:4], pretrained, atol=1e-3)  # the fine-tuned trunk, not ImageNet's

    (workdir / "small.csv").write_text("path\n" + "\n".join(paths) + "\n")
    [command] = featx_lines(blocks("own-checkpoint.md", "bash")[0])
    command = [arg.replace("data/fashion_mnist/manifest.csv", "small.csv") for arg in command]
    result = featx_cli(*command, "--precision", "fp32", "--quiet")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(load_features("finetuned.parquet")[0], X, rtol=1e-4, atol=1e-5)


def test_the_object_storage_recipe_packs_shards_extracts_resumes_a_killed_job_and_compacts(workdir):
    from test_sources import moto_s3

    page = "s3-at-scale.md"
    pack, use = blocks(page, "python")
    extract, again, compact = (featx_lines(code) for code in blocks(page, "bash"))
    assert extract == again  # "run the same command again"
    tiny = ["--batch-size", "8", "--num-workers", "1", *TINY_CLI]
    job = [arg for arg in extract[0] if arg != "efficientnet_lite0"]
    job[job.index("--backbone") : job.index("--backbone") + 1] = tiny
    with moto_s3() as (s3, _):
        s3.mkdir("my-bucket")
        run_python(
            smaller(
                pack,
                (
                    'pd.read_csv("data/fashion_mnist/manifest.csv")',
                    'pd.read_csv("data/fashion_mnist/manifest.csv")[:240]',
                ),
                ("PER_SHARD = 1000", "PER_SHARD = 60"),
            ),
            page,
        )
        assert len(s3.ls("my-bucket/fashion/")) == 4
        tests = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))
        running = subprocess.Popen(
            [sys.executable, "-m", "featx", *job],
            env={**os.environ, "PYTHONPATH": tests},
            stderr=subprocess.PIPE,
        )
        while not committed_shards(workdir / "featx-cache") and running.poll() is None:
            time.sleep(0.01)
        running.kill()
        running.wait(timeout=60)
        resumed = featx_cli(*job)
    assert resumed.returncode == 0, resumed.stderr
    computed = int(re.search(r"computed: (\d+)", resumed.stdout).group(1))
    killed = running.returncode != 0
    names = [namespace.path.name for namespace in FeatureCache("featx-cache").namespaces()]
    assert computed < 240 if killed else computed == 0, (running.returncode, resumed.stdout, names)
    for command in compact:
        result = featx_cli(*command)
        assert result.returncode == 0, result.stderr
    [namespace] = FeatureCache("featx-cache").namespaces()
    assert namespace.stats()["shards"] == 1 and namespace.stats()["vectors"] == 240
    scope = run_python(use, page)
    assert scope["X"].shape == (240, 64) and scope["meta"]["label"].notna().all()


def test_the_backbone_sweep_recipe_reports_on_two_backbones(workdir, monkeypatch):
    """resnet18's ImageNet file is not here: a random-init state dict under its name stands in, the way a
    user pre-seeds an offline machine ($TORCH_HOME/hub/checkpoints)."""
    import torch
    import torchvision

    checkpoints = workdir / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / "resnet18-f37072fd.pth")
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))
    [code] = blocks("backbone-sweep.md", "python")
    code = smaller(
        code,
        ("head(100)", "head(2)"),
        ("cv=5", "cv=2"),
        (', "timm/convnext_tiny.fb_in22k"]', "]"),
        ('layers="stages",', "layers=None,"),
        ('cache_dir=".featx-cache",', 'cache_dir=".featx-cache", precision="fp32",'),
    )
    scope = run_python(code, "backbone-sweep.md")
    report = scope["report"]
    assert {"efficientnet_lite0", "resnet18"} <= set(report.summary["backbone"])
    assert "Fashion-MNIST" in report.verdict
    [command] = featx_lines(blocks("backbone-sweep.md", "bash")[0])
    assert command.count("--backbone") == 2 and "--report" in command


def test_the_index_page_leads_to_every_how_to():
    index = (REPO / "docs" / "index.md").read_text()
    assert all(f"howto/{page.name}" in index for page in HOWTO.glob("*.md"))
