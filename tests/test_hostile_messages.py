"""Tracebacks where one line belongs (backbone references, models too large for memory) and messages that
misled (a layer's pooling the user never chose, a features table read as a manifest, one class)."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_CLI
from test_cache import featx_cli
from test_hostile_cli import one_line_error
from torch import nn

from featx import Backbone, ParameterError, extract_features
from featx.evaluate import compare_classifiers, make_folds, transfer_report
from featx.inputs.manifests import load_manifest
from featx.models._registry import get_backbone
from featx.models.nodes import feature_size


@pytest.mark.parametrize(
    "name", [":", ".:x", "..foo:x", "a:", ":b", "x::y", "a b:c", "/etc/passwd:x", "tiny_backbone:", "foo.:x"]
)
def test_a_reference_that_is_not_module_colon_attribute_is_one_line_before_any_import(name):
    with pytest.raises(ParameterError, match="'module:attribute' reference"):
        get_backbone(name)


def test_a_relative_reference_on_the_command_line_is_one_line(image_folder, tmp_path):
    result = featx_cli("extract", image_folder, "--backbone", ".:x", "--cache", tmp_path / "c", "--quiet")
    one_line_error(result, "backbone='.:x'", "'module:attribute'")


@pytest.mark.parametrize(
    "source, words",
    [
        ("raise RuntimeError('boom')", ["importing 'hostile_module' failed", "RuntimeError: boom"]),
        ("def broken(:\n", ["importing 'hostile_module' failed", "SyntaxError"]),
        ("import no_such_dependency_x", ["cannot import 'BACKBONE'", "no_such_dependency_x"]),
    ],
    ids=["raises", "syntax-error", "missing-dependency"],
)
def test_a_module_that_fails_to_import_is_one_line_naming_it(source, words, tmp_path, monkeypatch):
    (tmp_path / "hostile_module.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "hostile_module", raising=False)
    with pytest.raises(ParameterError) as raised:
        get_backbone("hostile_module:BACKBONE")
    assert all(word in str(raised.value) for word in words), raised.value


@pytest.mark.parametrize(
    "name, kind",
    [
        ("os:system", "builtin"),
        ("json:loads", "function"),
        ("os:path", "module"),
        ("featx:__version__", "str"),
    ],
)
def test_a_reference_to_something_that_is_not_a_backbone_says_what_it_is(name, kind):
    with pytest.raises(ParameterError, match=f"is a {kind}.*not a featx.Backbone"):
        get_backbone(name)


@pytest.mark.parametrize(
    "name", ["timm/no_such_model_x", "timm/resnet18.no_such_tag", "réseau 50", "resnet50 "]
)
def test_a_name_that_is_no_backbone_is_one_line_without_importing_anything(name):
    with pytest.raises(ParameterError, match="is not a known backbone"):
        get_backbone(name)


def test_importing_featx_main_runs_no_command():
    with pytest.raises(ParameterError, match="has no attribute 'x'"):  # not SystemExit from a second main()
        get_backbone("featx.__main__:x")


def huge() -> nn.Module:  # 2**50 weights: 4.5 PB, beyond any machine's address space
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(2**25, 2**25))


def test_a_model_too_large_for_memory_is_one_line_with_its_size():
    backbone = Backbone("huge", build=huge, node="1")
    with pytest.raises(ParameterError) as raised:  # torch's own allocator fails: nothing simulated
        extract_features([np.zeros((32, 32, 3), np.uint8)], backbone, weights=None, device="cpu")
    message = str(raised.value)
    assert "backbone 'huge' does not fit in memory" in message, message
    assert (
        f"{2**50 + 2**25 + 4 * 3 * 9 + 4:,} parameters take 4.5 PB" in message
        and "allocating 4.5 PB more failed" in message
    )


def test_other_failures_while_building_keep_their_own_error():
    def wrong() -> nn.Module:
        raise RuntimeError("size mismatch in the model's own code")

    with pytest.raises(RuntimeError, match="size mismatch"):
        Backbone("wrong", build=wrong, node="1").truncated(None)


@pytest.mark.parametrize(
    "error, where",
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has ..."),
            "on cuda:0",
        ),
        (MemoryError(), "does not fit in memory"),
    ],
)
def test_running_out_of_device_or_host_memory_names_the_place_and_the_size(error, where):
    from featx.models import memory

    with (
        pytest.raises(ParameterError) as raised,
        memory.fitting_in_memory(
            "m", lambda: nn.Linear(10, 10), torch.device("cuda:0" if "cuda" in where else "cpu")
        ),
    ):
        raise error
    assert where in str(raised.value) and "its 110 parameters take 440 bytes" in str(raised.value)


@pytest.mark.parametrize("layer", ["", "   "])
def test_a_blank_layer_is_refused_as_no_node_name_never_as_a_pooling_the_user_did_not_pass(layer):
    with pytest.raises(ParameterError) as raised:
        extract_features([np.zeros((32, 32, 3), np.uint8)], "vit_b_16", weights=None, layer=layer)
    assert "is not a node name" in str(raised.value) and "pooling" not in str(raised.value), raised.value
    with pytest.raises(ParameterError, match="is not a node"):
        feature_size("tiny", layer=layer)  # a CNN too, where "" used to mean the default node


def test_a_token_rule_the_user_did_not_choose_names_the_layer_and_what_to_pass():
    with pytest.raises(ParameterError) as raised:
        feature_size("vit_b_16", layer="heads")
    message = str(raised.value)
    assert "layer='heads' of vit_b_16 gives (1000,) per image, not tokens" in message, message
    assert "pooling='avg', 'max' or 'flatten'" in message and "pooling='cls' needs" not in message
    assert feature_size("vit_b_16", layer="heads", pooling="flatten") == 1000  # what it says to pass works


def features_tables(folder):
    """Tables of vectors as users save them, each with what the refusal must say it is."""
    X, y = np.random.default_rng(0).random((6, 32)), ["cat", "dog"] * 3
    paths = [f"img{i}.png" for i in range(6)]
    tables = {
        "numbers.csv": (pd.DataFrame(X).assign(path=paths, label=y), "32 numeric columns of 34"),
        "no-path.csv": (pd.DataFrame(X, columns=[f"f{i}" for i in range(32)]).assign(label=y), "32 numeric"),
        "resaved.csv": (
            pd.DataFrame({"path": paths, "label": y, "key": "ab" * 32, "features": list(X)}),
            "saved again as a table",
        ),
        "numbers.parquet": (pd.DataFrame(X, columns=[f"f{i}" for i in range(32)]).assign(path=paths), "32"),
    }
    for name, (frame, _) in tables.items():
        frame.to_csv(folder / name, index=False) if name.endswith(".csv") else frame.to_parquet(folder / name)
    return {name: (folder / name, words) for name, (_, words) in tables.items()}


def test_a_table_of_feature_vectors_is_not_read_as_a_manifest(tmp_path):
    for name, (path, words) in features_tables(tmp_path).items():
        with pytest.raises(ParameterError) as raised:
            load_manifest(path)
        message = str(raised.value)
        assert name in message and words in message and "featx extract --out" in message, message


def test_compare_given_a_features_csv_says_what_it_is_and_downloads_nothing(tmp_path):
    path, _ = features_tables(tmp_path)["numbers.csv"]
    result = featx_cli("compare", path, "--quiet")  # the defaults: resnet50, which this machine lacks
    one_line_error(result, "numbers.csv is a table of feature vectors", "featx extract --out")


def test_compare_given_the_meta_csv_of_an_npy_file_points_at_the_npy(image_folder, tmp_path):
    out = tmp_path / "f.npy"
    assert (
        featx_cli("extract", image_folder, *TINY_CLI, "--cache", tmp_path / "c", "--out", out).returncode == 0
    )
    result = featx_cli("compare", tmp_path / "f.meta.csv", "--quiet")
    one_line_error(result, "the row list of the features file", str(out))


def test_compare_where_every_image_fails_says_so_not_that_labels_are_blank(tmp_path):
    paths = [f"gone{i}.png" for i in range(4)]
    pd.DataFrame({"path": paths, "label": ["a", "b"] * 2}).to_csv(tmp_path / "m.csv")
    result = featx_cli("compare", tmp_path / "m.csv", *TINY_CLI, "--cache", tmp_path / "c", "--cv", "2")
    one_line_error(result, "every image failed (4)", "gone0.png", "missing")


@pytest.mark.parametrize(
    "y, cv, split, words",
    [
        (["cat"] * 6, 2, None, "hold one class, 'cat', in all 6 rows"),
        (["cat"] * 6, "split", ["train", "test"] * 3, "hold one class, 'cat'"),
        (["cat", "dog"] * 3, "split", ["train"] * 3 + ["test"] * 3, None),
        (
            ["cat"] * 3 + ["dog"] * 3,
            "split",
            ["train"] * 3 + ["test"] * 3,
            "the split's training rows hold one",
        ),
        ([], 2, None, "the labels (y) are empty"),
        (["cat", None, "dog", "dog"], 2, None, "1 missing label(s) (None or NaN; first: row 1)"),
        (np.zeros((6, 2)), 2, None, "one label per image"),
    ],
    ids=["one-class", "one-class-split", "good-split", "split-train-one-class", "empty", "missing", "2-d"],
)
def test_make_folds_refuses_labels_no_classifier_can_learn_from(y, cv, split, words):
    if words is None:
        assert len(make_folds(y, cv, split=split)) == 1
        return
    with pytest.raises(ParameterError) as raised:
        make_folds(y, cv, split=split)
    assert words in str(raised.value), raised.value


def test_a_splitter_whose_training_fold_holds_one_class_is_refused():
    from sklearn.model_selection import KFold

    with pytest.raises(ParameterError, match="fold 1 of 2: training rows hold one class, 'dog'"):
        make_folds(["cat"] * 3 + ["dog"] * 3, KFold(2))


def test_python_callers_get_featx_words_for_one_class_not_scikit_learns(monkeypatch):
    with pytest.raises(ParameterError, match="one class, 'cat'"):
        compare_classifiers(np.random.default_rng(0).random((6, 4)), ["cat"] * 6, classifiers="logreg", cv=2)

    def never(*args, **kwargs):
        raise AssertionError("extracted features before checking the labels")

    monkeypatch.setattr("featx.evaluate.transfer.extract_features", never)
    with pytest.raises(ParameterError, match="one class, 'cat'"):
        transfer_report([np.zeros((32, 32, 3), np.uint8)] * 4, ["cat"] * 4, backbones="tiny", cv=2)


@pytest.mark.parametrize("cv", [True, 5.0, np.float64(3.0), "5", "abc"])
def test_a_cv_that_is_no_number_of_folds_is_refused_in_featx_words_not_read_as_one_fold(cv):
    with pytest.raises(ParameterError, match="is not a number of folds: pass an integer >= 2") as raised:
        make_folds(["cat", "dog"] * 6, cv)
    assert "np.float64" not in str(raised.value) and "True-fold" not in str(raised.value)


def test_too_many_folds_names_the_class_as_the_user_wrote_it_not_numpys_repr():
    with pytest.raises(ParameterError, match="and class 0 has 3 image") as raised:
        make_folds(np.array([0, 1, 1, 0, 1, 0, 1, 1]), 4)
    assert "np.int64" not in str(raised.value)
