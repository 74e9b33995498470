"""PretrainedFeatures follows the scikit-learn estimator contract."""

import dataclasses
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import photo
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks
from tiny_backbone import TINY

from featx import PretrainedFeatures, build_network, register_backbone
from featx.estimators import transformer
from featx.models import _registry
from featx.models.network import FrozenNetwork


def tiny(**kwargs):
    return PretrainedFeatures(backbone="tiny", weights=None, **kwargs)


def labelled_images(n=12):
    """Two visually different classes: dark and bright pictures."""
    images = [photo(i) // 3 if i % 2 else 255 - photo(i) // 3 for i in range(n)]
    return images, np.array([i % 2 for i in range(n)])


# scikit-learn's own checks that concern the estimator contract itself run here and must pass. The rest of
# its suite feeds 2-D numeric feature matrices as X (dtypes, NaN/inf, sparse, sample-order invariance on
# random floats ...): a transformer whose X is a sequence of images refuses those by design, and with
# ``input_tags.two_d_array = False`` scikit-learn skips them itself. Their subjects are covered on images
# below: pickling, set_output, feature names, sample order, NaN policy, Pipeline and grid search.
CONTRACT_CHECKS = [
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_estimator_tags_renamed",
    "check_do_not_raise_errors_in_init_or_set_params",
]


@pytest.mark.parametrize("check_name", CONTRACT_CHECKS)
def test_scikit_learn_contract_checks(check_name):
    check = getattr(estimator_checks, check_name)
    check(type(tiny()).__name__, tiny())


def test_init_stores_parameters_verbatim_and_clone_keeps_them_all():
    estimator = tiny(cache_dir="/some/cache", layer="3", pooling="max", on_error="nan", batch_size=7)
    params = estimator.get_params()
    assert params["cache_dir"] == "/some/cache" and params["batch_size"] == 7
    assert clone(estimator).get_params() == params
    assert estimator.set_params(batch_size=3).batch_size == 3


def test_pickling_drops_the_network_and_the_copy_reloads_it_with_equal_output():
    images, _ = labelled_images(4)
    estimator = tiny().fit(images)
    X = estimator.transform(images)
    assert isinstance(estimator._loaded, FrozenNetwork)
    data = pickle.dumps(estimator)
    assert b"conv" not in data.lower() and len(data) < 5_000  # no weights inside
    restored = pickle.loads(data)
    np.testing.assert_array_equal(restored.transform(images), X)


def test_feature_names_are_known_from_the_registry_before_any_image_is_transformed():
    names = PretrainedFeatures("resnet50").fit(["never-opened.png"]).get_feature_names_out()
    assert len(names) == 2048 and names[0] == "resnet50_avgpool_0" and names[-1] == "resnet50_avgpool_2047"
    vgg = PretrainedFeatures("vgg16", layer="features.23", pooling="max").fit([]).get_feature_names_out()
    assert vgg[0] == "vgg16_features_23_max_0" and len(vgg) == 512


def test_set_output_pandas_gives_named_columns_and_keeps_the_index():
    images, _ = labelled_images(3)
    X = pd.Series(images, index=["a", "b", "c"])
    out = tiny().set_output(transform="pandas").fit_transform(X)
    assert list(out.index) == ["a", "b", "c"]
    assert list(out.columns[:2]) == ["tiny_6_0", "tiny_6_1"] and out.shape == (3, 64)


def test_pipeline_cross_val_score_and_grid_search_with_parallel_jobs(tmp_path):
    images, y = labelled_images(12)
    # joblib's workers are fresh processes: a user backbone travels as an importable "module:attr" reference
    features = PretrainedFeatures(backbone="tiny_backbone:TINY", weights=None, cache_dir=tmp_path)
    pipeline = make_pipeline(features, LogisticRegression(max_iter=500))
    scores = cross_val_score(pipeline, images, y, cv=3)
    assert scores.mean() >= 0.9  # the two classes differ in brightness: trivially separable
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0]}, cv=3, n_jobs=2).fit(images, y)
    assert search.best_score_ >= 0.9


def test_grid_search_with_a_cache_runs_the_network_once_per_image(tmp_path, monkeypatch):
    images, y = labelled_images(12)
    calls = []
    original = FrozenNetwork.submit
    monkeypatch.setattr(
        FrozenNetwork, "submit", lambda self, batch: calls.append(len(batch)) or original(self, batch)
    )
    pipeline = make_pipeline(tiny(cache_dir=tmp_path), LogisticRegression(max_iter=500))
    GridSearchCV(pipeline, {"logisticregression__C": [0.01, 0.1, 1.0]}, cv=3).fit(images, y)
    assert sum(calls) == 12  # 3 candidates x 3 folds x (fit + score) would otherwise be 18 x 8-ish images


def test_a_grid_search_loads_the_network_once_per_network_candidate_and_clones_share_it(
    tmp_path, monkeypatch
):
    images, y = labelled_images(12)
    builds = []
    monkeypatch.setattr(transformer, "build_network", lambda spec: builds.append(spec) or build_network(spec))
    base = tiny(cache_dir=tmp_path, precision="fp32")
    pipeline = make_pipeline(base, LogisticRegression(max_iter=500))
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.01, 0.1, 1.0]}, cv=3).fit(images, y)
    assert len(builds) == 1  # 3 candidates x 3 folds + the refit: 10 clones, one load
    assert search.best_estimator_[0]._network() is base._network() and len(builds) == 1
    builds.clear()
    poolings = {"pretrainedfeatures__pooling": ["avg", "max"]}
    search = GridSearchCV(pipeline, poolings, cv=3).fit(images, y)
    # candidate by candidate: once each, and once more for the refit where the best is not the last
    assert [spec.pooling for spec in builds[:2]] == ["avg", "max"] and len(builds) <= 3
    copy = pickle.loads(pickle.dumps(search.best_estimator_[0]))  # pickled: its own slot, reloaded
    np.testing.assert_array_equal(copy.transform(images), search.best_estimator_[0].transform(images))
    assert copy._network() is not search.best_estimator_[0]._network()


@pytest.fixture
def register_here():
    """Register a tiny backbone by name in this process only, as a notebook would; removed after."""
    names = []

    def register(name: str, build=TINY.build) -> str:
        register_backbone(dataclasses.replace(TINY, name=name, build=build))
        names.append(name)
        return name

    yield register
    for name in names:
        _registry._REGISTRY.pop(name, None)


def test_a_backbone_registered_by_name_in_this_process_is_known_to_joblibs_workers(tmp_path, register_here):
    """joblib's workers are fresh processes: the registry entry travels with the pickled transformer."""
    name = register_here("tiny-registered-in-a-notebook")
    images, y = labelled_images(8)
    pipeline = make_pipeline(
        PretrainedFeatures(name, weights=None, precision="fp32", cache_dir=tmp_path),
        LogisticRegression(max_iter=500),
    )
    search = GridSearchCV(pipeline, {"logisticregression__C": [0.1, 1.0]}, cv=2, n_jobs=2).fit(images, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()  # no fold failed in a worker
    assert "_registered_backbone" not in vars(search.best_estimator_[0])  # only in the pickle
    assert "_registered_backbone" not in PretrainedFeatures("resnet18").__getstate__()  # bundled: by name


def test_a_backbone_built_by_a_lambda_pickles_and_loads_where_it_was_never_registered(
    tmp_path, register_here
):
    name = register_here("tiny-built-by-a-lambda", build=lambda: TINY.build())
    path = tmp_path / "estimator.pkl"
    path.write_bytes(pickle.dumps(PretrainedFeatures(name, weights=None, precision="fp32", num_workers=0)))
    script = (
        "import pickle, sys, warnings, numpy as np\n"
        "from featx import register_backbone\n"
        "warnings.simplefilter('error')\n"
        "estimator = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "X = estimator.fit_transform([np.zeros((40, 48, 3), np.uint8)] * 2)\n"
        "assert X.shape == (2, 64) and np.isfinite(X).all(), X.shape\n"
        "register_backbone(estimator._network().backbone)  # the user's own registration still works\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_on_error_nan_keeps_rows_aligned_and_records_failures(tmp_path):
    images = [photo(0), str(tmp_path / "gone.png"), photo(1)]
    estimator = tiny(on_error="nan").fit(images)
    with pytest.warns(UserWarning, match="1 of 3 images failed"):
        X = estimator.transform(images)
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
    assert [(e.index, e.kind) for e in estimator.errors_] == [(1, "missing")]
    with pytest.raises(Exception, match="gone.png"):
        tiny().fit(images).transform(images)


def test_invalid_parameters_are_reported_at_fit_naming_the_value():
    for bad, match in [
        ({"on_error": "skip"}, "'on_error' parameter of PretrainedFeatures .* Got 'skip'"),
        ({"precision": "fp64"}, "'precision' parameter .* Got 'fp64'"),
        ({"batch_size": 0}, "'batch_size' parameter .* Got 0"),
        ({"backbone": "nope"}, "backbone='nope'"),
    ]:
        params = {"backbone": "tiny", "weights": None, **bad}
        with pytest.raises(ValueError, match=match):
            PretrainedFeatures(**params).fit([photo(0)])
