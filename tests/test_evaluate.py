"""Experiments: the comparison table, the transfer report's verdict, raw pixels, plots."""

import io

import numpy as np
import pandas as pd
import pytest
from conftest import encode, photo
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featx import extract_features
from featx.estimators.pixels import RawPixels
from featx.evaluate import (
    compare_classifiers,
    confusion,
    corrected_paired_ttest,
    make_folds,
    recommendation,
    transfer_report,
)
from featx.evaluate.figures import comparison_figure, save_png

TABLE_COLUMNS = [
    "classifier",
    "estimator",
    "backbone",
    "layer",
    "n_features",
    "n_folds",
    "accuracy_mean",
    "accuracy_std",
    "f1_macro_mean",
    "f1_macro_std",
    "fit_s",
    "predict_s",
]


@pytest.fixture(scope="module")
def fashion_sample(fashion_manifest, fashion_cache):
    """40 images per class of the Fashion-MNIST sample, with their EfficientNet-Lite0 ImageNet features."""
    manifest = pd.read_csv(fashion_manifest).groupby("label").head(40).reset_index(drop=True)
    paths = [str(fashion_manifest.parent / p) for p in manifest["path"]]
    X = extract_features(paths, "efficientnet_lite0", cache_dir=fashion_cache)
    return paths, manifest["label"].to_numpy(), X, fashion_cache


def test_comparison_table_has_one_row_per_classifier_best_first_with_cross_validated_scores(fashion_sample):
    _, y, X, _ = fashion_sample
    table = compare_classifiers(X, y, cv=4, backbone="efficientnet_lite0", layer="global_pool")
    print(table.to_string())
    assert list(table.columns) == TABLE_COLUMNS
    assert sorted(table["classifier"]) == ["knn", "linsvm", "logreg", "rf", "svm"]
    assert (table["estimator"] == table["classifier"]).all()  # 400 rows: no stand-in
    assert table["accuracy_mean"].is_monotonic_decreasing
    assert (table["n_folds"] == 4).all() and (table["n_features"] == 1280).all()
    assert (table["accuracy_mean"] > 0.6).all()  # chance is 10%: every classifier learned the classes
    assert (table["accuracy_std"] > 0).all() and (table["fit_s"] > 0).all() and (table["predict_s"] > 0).all()
    assert (table["backbone"] == "efficientnet_lite0").all()
    # the logreg row is scikit-learn's own cross-validation on the same folds
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=0))
    expected = cross_val_score(model, X, y, cv=folds)
    row = table.set_index("classifier").loc["logreg"]
    assert row["accuracy_mean"] == pytest.approx(expected.mean())
    assert row["accuracy_std"] == pytest.approx(expected.std(ddof=1))
    assert recommendation(table).startswith(f"Best: {table.iloc[0]['classifier']} at ")


def test_tuning_wraps_each_classifier_in_a_grid_search_and_keeps_the_table_shape(fashion_sample):
    _, y, X, _ = fashion_sample
    table = compare_classifiers(X, y, classifiers=["knn"], cv=3, tune=True)
    assert list(table["classifier"]) == ["knn"] and table["accuracy_mean"].iloc[0] > 0.6


def test_the_manifest_split_is_one_fold_with_exactly_its_train_and_test_rows():
    split = ["train", "test", "train", "TEST", "train"]
    ((train, test),) = make_folds(["a", "b", "b", "b", "a"], "split", split=split)
    assert train.tolist() == [0, 2, 4] and test.tolist() == [1, 3]
    with pytest.raises(ValueError, match=r"\['validation'\]"):
        make_folds(["a", "b"], "split", split=["train", "validation"])
    with pytest.raises(ValueError, match="has none"):
        make_folds(["a", "b"], "split")


def test_too_many_folds_for_the_smallest_class_is_refused_by_name():
    with pytest.raises(ValueError, match=r"cv=5.*class 'b' has 2 image\(s\); pass cv=2 or fewer"):
        make_folds(["a"] * 10 + ["b"] * 2, 5)
    with pytest.raises(ValueError, match=r"class 'b' has 1 image\(s\); add images"):
        make_folds(["a"] * 10 + ["b"], 2)


def test_unknown_classifier_names_list_the_known_ones():
    with pytest.raises(ValueError, match="'xgboost' is not known.*logreg"):
        compare_classifiers(np.zeros((10, 2)), [0, 1] * 5, classifiers=["xgboost"], cv=2)


def test_corrected_t_test_is_more_cautious_than_the_naive_paired_t_test():
    a, b = np.array([0.90, 0.92, 0.91, 0.93, 0.90]), np.array([0.88, 0.91, 0.88, 0.92, 0.89])
    from scipy import stats

    naive = stats.ttest_rel(a, b).pvalue
    corrected = corrected_paired_ttest(a, b, n_train=800, n_test=200)
    # t shrinks by sqrt((1/k) / (1/k + n_test/n_train)) = sqrt(0.2 / 0.45)
    t = stats.ttest_rel(a, b).statistic * np.sqrt(0.2 / 0.45)
    assert corrected == pytest.approx(2 * stats.t.sf(t, df=4))
    assert naive < 0.05 < corrected
    assert corrected_paired_ttest(a, a, 800, 200) == 1.0
    assert np.isnan(corrected_paired_ttest(a[:1], b[:1], 800, 200))


def corner_images(n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """Noise pictures whose label is only the brightness of a 3x3 corner patch: a pixel question."""
    rng = np.random.default_rng(seed)
    images, labels = [], rng.integers(0, 2, n)
    for label in labels:
        pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
        pixels[:3, :3] = 230 if label else 25
        images.append(encode(pixels))
    return images, labels


def test_transfer_report_says_transfer_hurt_when_labels_depend_only_on_raw_pixel_intensity():
    images, labels = corner_images(160)
    report = transfer_report(images, labels, backbones="efficientnet_lite0", cv=4, dataset="corner patches")
    print(report)
    summary = report.summary.set_index("kind")
    assert summary.loc["raw pixels", "accuracy_mean"] >= 0.95
    assert summary.loc["raw pixels", "difference"] > 10  # points above the ImageNet features
    assert summary.loc["raw pixels", "p_value"] < 0.05
    assert report.verdict.startswith("Transfer hurt on corner patches: efficientnet_lite0 ImageNet features")
    assert (
        "the strongest baseline, raw pixels" in report.verdict
        and "larger than the fold-to-fold noise" in report.verdict
    )
    assert set(report.scores["fold"]) == {0, 1, 2, 3} and len(report.scores) == 3 * 4


@pytest.mark.slow
def test_transfer_report_says_transfer_helped_on_fashion_mnist(fashion_manifest, fashion_cache):
    manifest = pd.read_csv(fashion_manifest).groupby("label").head(100)  # 1,000 images
    paths = [str(fashion_manifest.parent / p) for p in manifest["path"]]
    report = transfer_report(
        paths, manifest["label"], backbones="efficientnet_lite0", cv=5, cache_dir=fashion_cache
    )
    print(report)
    summary = report.summary.set_index("kind")
    assert (summary.loc[["random init", "raw pixels"], "difference"] < -3).all()
    assert (summary.loc[["random init", "raw pixels"], "p_value"] < 0.05).all()
    assert report.verdict.startswith(
        "Transfer helped: efficientnet_lite0 ImageNet features at global_pool reach"
    )


def test_layers_stages_adds_the_backbones_early_and_middle_stages_in_order(fashion_sample):
    paths, y, _, cache = fashion_sample
    report = transfer_report(
        paths, y, backbones="efficientnet_lite0", layers="stages", baselines=[], cv=3, cache_dir=cache
    )
    assert report.summary["layer"].tolist() == ["blocks.1", "blocks.3", "blocks.5", "global_pool"]
    assert report.summary["n_features"].tolist() == [24, 80, 192, 1280]
    assert report.summary["best_pretrained"].sum() == 1
    assert report.verdict.startswith("No baseline was measured: efficientnet_lite0 ImageNet features at")


def test_a_single_split_gives_a_verdict_that_says_noise_is_unmeasured():
    images, labels = corner_images(60, seed=1)
    split = np.where(np.arange(60) < 40, "train", "test")
    report = transfer_report(
        images, labels, backbones="tiny", weights=None, baselines=["pixels"], cv="split", split=split
    )
    assert report.summary["n_folds"].tolist() == [1, 1]
    assert "one split cannot measure fold-to-fold noise" in report.verdict


def test_images_that_fail_to_decode_leave_every_feature_set_with_a_warning():
    images, labels = corner_images(40, seed=2)
    images[3] = b"not an image"
    with pytest.warns(UserWarning, match="1 of 40 images failed"):
        report = transfer_report(images, labels, backbones="tiny", weights=None, cv=3)
    assert set(report.scores.groupby("features")["fold"].count()) == {3}


def test_raw_pixels_are_the_resized_image_in_unit_range_with_named_features():
    pixels = photo(4, size=(40, 40))
    pixels_rgb = RawPixels(size=8).fit([pixels])
    features = pixels_rgb.transform([encode(pixels)])
    expected = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_allclose(features[0], expected.ravel())
    assert pixels_rgb.get_feature_names_out()[:4].tolist() == [
        "pixel_0_0_r",
        "pixel_0_0_g",
        "pixel_0_0_b",
        "pixel_0_1_r",
    ]
    grey = RawPixels(size=4, grayscale=True).fit_transform([pixels, pixels])
    assert grey.shape == (2, 16)
    assert clone(RawPixels(size=5)).get_params()["size"] == 5


def test_raw_pixels_name_a_bad_image_or_give_it_a_nan_row():
    with pytest.raises(ValueError, match="input 1 .*not_an_image"):
        RawPixels().fit_transform([photo(0), b"garbage"])
    with pytest.warns(UserWarning, match="1 of 2"):
        features = RawPixels(on_error="nan").fit_transform([photo(0), b"garbage"])
    assert np.isnan(features[1]).all() and not np.isnan(features[0]).any()


def test_the_figure_is_a_valid_png_with_one_panel_per_part(tmp_path, fashion_sample):
    _, y, X, _ = fashion_sample
    table = compare_classifiers(X, y, classifiers=["logreg", "knn"], cv=3)
    matrix, labels = confusion(X, y, "logreg", cv=3)
    assert matrix.sum() == len(y) and list(labels) == sorted(set(y))
    images, corner_labels = corner_images(40, seed=3)
    report = transfer_report(images, corner_labels, backbones="tiny", weights=None, cv=2)
    path = save_png(comparison_figure(table, (matrix, labels), report), tmp_path / "plots" / "compare.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(path.read_bytes())) as png:
        png.load()
        assert png.size == (1950, 550)  # 3 panels of 6.5 x 5.5 inches at 100 dpi
    one_panel = save_png(comparison_figure(table), tmp_path / "table.png")
    with Image.open(one_panel) as png:
        assert png.size == (650, 550)
