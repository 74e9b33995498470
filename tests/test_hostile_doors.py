"""Hostile values at the doors that take the network's options: each accepted or refused alike, in the
door's own name, before any work."""

import numpy as np
import pytest
from conftest import assert_same_vectors, photo
from test_cache import featx_cli
from test_hostile_cli import one_line_error

from featx import NetworkSpec, ParameterError, build_network, extract_features, run_job
from featx.models import build as build_module

IMAGES = [photo(seed) for seed in range(4)]
TINY = ["--backbone", "tiny_backbone:TINY", "--weights", "none", "--quiet"]


def test_numpy_integers_are_run_options_like_python_ints():
    expected = extract_features(IMAGES, "tiny", weights=None, batch_size=2, num_workers=0)
    given = extract_features(
        IMAGES,
        "tiny",
        weights=None,
        batch_size=np.int64(2),
        num_workers=np.int32(0),
        forward_batch=np.int16(3),
    )
    assert_same_vectors(given, expected)


def test_build_network_refuses_a_keyword_that_is_no_field_in_its_own_name():
    with pytest.raises(ParameterError, match=r"build_network got 'batch_size'.*\(weights, layer") as error:
        build_network("tiny", weights=None, batch_size=8)
    assert "\n" not in str(error.value) and "RunOptions" in str(error.value)


def test_build_network_checks_values_in_its_own_name():
    with pytest.raises(ParameterError, match="'precision' parameter of build_network.*'FP32'"):
        build_network("tiny", weights=None, precision="FP32")


def test_build_network_applies_keywords_given_beside_a_spec():
    network = build_network(NetworkSpec("tiny", weights=None, precision="fp32"), pooling="max")
    assert network.pooling == "max" and network.n_features == 16


@pytest.mark.parametrize("device", ["gpu", "tpu", 0, None, "cuda:x"])
def test_a_device_that_is_no_torch_device_is_refused_by_each_door_before_any_work(
    monkeypatch, tmp_path, device
):
    def no_build(*args, **kwargs):
        raise AssertionError("the network was built")

    monkeypatch.setattr(build_module, "_truncated", no_build)
    doors = {
        "extract_features": lambda: extract_features(IMAGES, "tiny", weights=None, device=device),
        "run_job": lambda: run_job(tmp_path / "absent", "tiny", cache_dir=tmp_path / "c", device=device),
        "build_network": lambda: build_network("tiny", weights=None, device=device),
    }
    for door, call in doors.items():
        with pytest.raises(ParameterError, match=f"'device' parameter of {door} must be a torch device") as e:
            call()
        assert "\n" not in str(e.value)


def test_the_command_line_refuses_a_device_torch_does_not_know_as_an_argument(tmp_path):
    result = featx_cli("extract", tmp_path, *TINY, "--cache", tmp_path / "c", "--device", "gpu")
    one_line_error(
        result, "featx extract: error: argument --device", "'gpu' is not a torch device", "'cuda:N'"
    )
    assert result.returncode == 2


@pytest.mark.parametrize("flag, value", [("--forward-batch", "0"), ("--num-workers", "-1")])
def test_a_flag_never_offers_none_which_the_command_line_cannot_spell(tmp_path, flag, value):
    result = featx_cli("extract", tmp_path, *TINY, "--cache", tmp_path / "c", flag, value)
    line = one_line_error(result, f"argument {flag}", f"'{value}' is not an integer")
    assert "None" not in line


@pytest.mark.parametrize("batch_size, forward_batch", [(2, 1), (1, None), (5, None), (4, 1)])
def test_an_image_forwarded_alone_gets_the_vector_it_gets_in_a_batch(batch_size, forward_batch):
    images = [photo(seed) for seed in range(6)]  # 5 + 1: the last batch holds one image
    expected = extract_features(images, "tiny", weights=None, precision="fp32", batch_size=6)
    given = extract_features(
        images, "tiny", weights=None, precision="fp32", batch_size=batch_size, forward_batch=forward_batch
    )
    np.testing.assert_array_equal(given, expected)


def test_a_ray_address_nothing_answers_at_is_named_as_run_jobs_own_keyword(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(
        ParameterError, match=r"Ray address '127.0.0.1:1' \(--ray-address, or address= in Python\)"
    ):
        run_job(
            tmp_path / "absent",
            "tiny",
            cache_dir=tmp_path / "c",
            weights=None,
            engine="ray",
            address="127.0.0.1:1",
        )


def test_knn_on_fewer_training_rows_than_its_neighbours_votes_with_all_of_them():
    from featx.evaluate import compare_classifiers

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4, 8)).astype(np.float32), np.array([0, 1, 0, 1])
    X[y == 1] += 3
    table = compare_classifiers(X, y, classifiers=["knn"], cv=2)
    assert len(table) == 1 and "knn" in table.to_string()


@pytest.mark.filterwarnings("error::sklearn.exceptions.FitFailedWarning")
@pytest.mark.filterwarnings("error::UserWarning:sklearn.model_selection")
def test_tuned_knn_on_a_small_fold_searches_its_grid_without_failed_candidates():
    from featx.evaluate import compare_classifiers

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(12, 8)), np.array([0, 1] * 6)
    X[y == 1] += 3
    assert len(compare_classifiers(X, y, classifiers=["knn"], cv=2, tune=True)) == 1


@pytest.mark.parametrize("num_workers", [0, None])
def test_a_batch_size_past_a_c_long_is_every_image_at_once_not_torchs_overflow(num_workers):
    expected = extract_features(IMAGES, "tiny", weights=None, num_workers=0)
    huge = extract_features(IMAGES, "tiny", weights=None, batch_size=2**70, num_workers=num_workers)
    assert_same_vectors(huge, expected)
    forward = extract_features(IMAGES, "tiny", weights=None, batch_size=2, forward_batch=2**70)
    assert_same_vectors(forward, expected)


def test_the_command_line_takes_a_batch_size_past_a_c_long(image_folder, tmp_path):
    done = featx_cli("extract", image_folder, "--cache", tmp_path / "c", "--batch-size", str(2**70), *TINY)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_fine_tuning_with_a_batch_size_past_a_c_long_trains_on_every_image_at_once():
    from featx import FineTunedClassifier

    images, y = [photo(seed) for seed in range(8)], [0, 1] * 4
    model = FineTunedClassifier(
        "tiny", weights=None, unfreeze=0, epochs=1, validation_fraction=0.5, batch_size=2**70
    )
    assert model.fit(images, y).predict(images).shape == (8,)


def test_n_jobs_0_is_refused_at_each_door_in_one_line_not_joblibs_traceback(image_folder, tmp_path):
    from featx.evaluate import compare_classifiers, transfer_report

    X, y = np.random.default_rng(0).random((8, 4)), ["cat", "dog"] * 4
    for door, call in [
        ("compare_classifiers", lambda: compare_classifiers(X, y, classifiers="logreg", cv=2, n_jobs=0)),
        (
            "transfer_report",
            lambda: transfer_report(IMAGES * 2, y, backbones="tiny", weights=None, cv=2, n_jobs=0),
        ),
    ]:
        with pytest.raises(ParameterError, match=f"'n_jobs' parameter of {door} must be a nonzero integer"):
            call()
    done = featx_cli("compare", image_folder, "--cv", "2", "--n-jobs", "0", *TINY)
    assert done.returncode == 2 and "argument --n-jobs: '0' is not a nonzero integer" in done.stderr
    assert "Traceback" not in done.stderr
    assert compare_classifiers(X, y, classifiers="logreg", cv=2, n_jobs=-1).shape[0] == 1  # -1: every core
