"""Fine-tuning as a measured comparison, and CORAL domain adaptation."""

import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import encode
from PIL import Image
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featx import extract_features
from featx.estimators.adapt import CORAL, shift_report
from featx.estimators.finetune import FineTunedClassifier
from featx.evaluate import compare_finetuning, transfer_report, with_finetuning
from featx.models.blocks import blocks


def striped(n: int, seed: int = 0) -> tuple[list[bytes], np.ndarray]:
    """Two classes a tiny CNN can learn: horizontal or vertical stripes under noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], np.arange(n) % 2
    for label in labels:
        stripes = np.tile((np.arange(36) // 3 % 2 * 160)[:, None], (1, 36))
        pixels = (stripes if label else stripes.T) + rng.integers(0, 90, (36, 36))
        images.append(encode(np.repeat(pixels[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)))
    return images, np.where(labels == 1, "horizontal", "vertical")


def initial_weights(estimator: FineTunedClassifier) -> dict[str, torch.Tensor]:
    return estimator._build(2).extractor.state_dict()


def test_fine_tuning_changes_the_unfrozen_block_and_leaves_frozen_weights_bit_identical():
    images, y = striped(48)
    model = FineTunedClassifier(
        "tiny",
        weights=None,
        unfreeze=1,
        epochs=2,
        finetune_epochs=2,
        lr=1e-2,
        finetune_lr=1e-2,
        patience=5,
        batch_size=8,
    ).fit(images, y)
    before = initial_weights(model)
    after = {k[len("extractor.") :]: v for k, v in model.state_dict_.items() if k.startswith("extractor.")}
    first, last = blocks(model._loaded().extractor)
    assert all(torch.equal(before[name], after[name]) for name in first)  # "0" conv + "1" BatchNorm, frozen
    assert all(not torch.equal(before[name], after[name]) for name in last if name.endswith("weight"))
    assert [h["phase"] for h in model.history_] == ["head", "head", "last 1 blocks", "last 1 blocks"]
    assert model.score(images, y) > 0.5


def test_head_only_training_leaves_the_whole_backbone_bit_identical():
    images, y = striped(24, seed=1)
    model = FineTunedClassifier("tiny", weights=None, unfreeze=0, epochs=2, batch_size=8).fit(images, y)
    before = initial_weights(model)
    assert all(torch.equal(before[k], model.state_dict_["extractor." + k]) for k in before)
    assert {h["phase"] for h in model.history_} == {"head"}


def test_the_classifier_clones_pickles_and_predicts_the_same_after_unpickling():
    images, y = striped(24, seed=2)
    estimator = FineTunedClassifier(
        "tiny", weights=None, unfreeze=1, epochs=1, finetune_epochs=1, batch_size=8
    )
    assert clone(estimator).get_params() == estimator.get_params()
    fitted = estimator.fit(images, y)
    restored = pickle.loads(pickle.dumps(fitted))
    assert "_model" not in restored.__dict__
    np.testing.assert_allclose(
        restored.predict_proba(images), fitted.predict_proba(images), rtol=1e-5, atol=1e-6
    )
    proba = fitted.predict_proba(images)
    assert proba.shape == (24, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(fitted.predict(images)) <= {"horizontal", "vertical"}
    assert list(fitted.classes_) == ["horizontal", "vertical"]


def test_unfreezing_more_blocks_than_the_backbone_has_is_refused_by_count():
    images, y = striped(12)
    with pytest.raises(ValueError, match="unfreeze=5; tiny has 2 blocks"):
        FineTunedClassifier("tiny", weights=None, unfreeze=5, epochs=1).fit(images, y)


@pytest.mark.parametrize(
    "y, error, words",
    [
        (None, ValueError, ["fit needs y"]),
        (["vertical", None, "horizontal"] * 4, ValueError, ["4 missing label", "row 1"]),
        ([0.0, 1.0, np.nan] * 4, ValueError, ["4 missing label", "row 2"]),
        (np.zeros((12, 2)), ValueError, ["1d array", "(12, 2)"]),
        (np.linspace(0, 1, 12), ValueError, ["Unknown label type: continuous"]),
        (list("ab") * 6, ZeroDivisionError, []),  # accepted: 2 of 12 held out, one a class; decoding starts
        (list("abcd") * 3, ValueError, ["validation_fraction=0.1", "4 classes on both sides"]),
    ],
    ids=["none", "none-label", "nan-label", "2-d", "continuous", "fits", "too-few-for-validation"],
)
def test_labels_a_classifier_cannot_learn_from_are_refused_before_any_image_is_decoded(
    monkeypatch, y, error, words
):
    images = striped(12)[0]
    decoded = []
    monkeypatch.setattr(FineTunedClassifier, "_decode", lambda self, x: decoded.append(x) or 1 / 0)
    model = FineTunedClassifier("tiny", weights=None, epochs=1)
    with pytest.raises(error) as raised:
        model.fit(images, y)
    assert all(word in str(raised.value) for word in words), raised.value
    assert bool(decoded) == (not words)  # refused labels never cost a decode


def test_finetuned_rows_join_the_comparison_table_with_their_training_cost():
    from test_evaluate import TABLE_COLUMNS

    images, y = striped(40, seed=3)
    rows = compare_finetuning(
        images,
        y,
        backbone="tiny",
        weights=None,
        unfreeze=(0, 1),
        cv=4,
        epochs=2,
        finetune_epochs=1,
        batch_size=8,
    )
    assert list(rows.columns) == TABLE_COLUMNS
    assert rows["classifier"].tolist() == ["finetune head", "finetune last 1 blocks"]
    assert (rows["n_folds"] == 1).all() and (rows["layer"] == "trained").all()
    assert rows["accuracy_mean"].between(0, 1).all() and (rows["fit_s"] > 0).all()


def test_finetuned_rows_join_the_transfer_report_against_the_best_pretrained_set_on_their_folds():
    images, y = striped(40, seed=4)
    report = transfer_report(images, y, backbones="tiny", weights=None, baselines=["pixels"], cv=4)
    rows = compare_finetuning(
        images, y, backbone="tiny", weights=None, unfreeze=(0,), cv=4, epochs=1, batch_size=8
    )
    extended = with_finetuning(report, rows)
    added = extended.summary.iloc[-1]
    assert (
        added["kind"] == "fine-tuned"
        and added["features"] == "tiny finetune head"
        and np.isnan(added["p_value"])
    )
    first_fold = report.scores[(report.scores["kind"] == "pretrained") & (report.scores["fold"] == 0)][
        "accuracy"
    ]
    assert added["difference"] == pytest.approx(100 * (rows["accuracy_mean"].iloc[0] - first_fold.item()))
    assert extended.verdict == report.verdict and len(extended.summary) == len(report.summary) + 1


def test_coral_output_covariance_and_mean_match_the_targets():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(2000, 4)) @ np.array([[2, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 1]])
    target = rng.normal(size=(1500, 4)) @ np.diag([0.3, 3, 1, 2]) + 5
    coral = CORAL(regularization=1e-9).fit(source, target=target)
    adapted = coral.transform(source)
    np.testing.assert_allclose(np.cov(adapted, rowvar=False), np.cov(target, rowvar=False), atol=1e-6)
    np.testing.assert_allclose(adapted.mean(0), target.mean(0), atol=1e-9)
    assert coral.get_feature_names_out().tolist() == ["coral0", "coral1", "coral2", "coral3"]
    with pytest.raises(ValueError, match="target=X_target"):
        CORAL().fit(source)


def test_coral_fits_in_a_pipeline_with_its_target_routed_by_name():
    rng = np.random.default_rng(1)
    X, y, target = rng.normal(size=(60, 3)), np.arange(60) % 2, rng.normal(size=(40, 3)) * 2
    pipe = make_pipeline(CORAL(), LogisticRegression()).fit(X, y, coral__target=target)
    assert pipe.predict(target).shape == (40,)
    assert clone(pipe).get_params()["coral__regularization"] == 1.0


@pytest.mark.slow
def test_shift_report_measures_source_only_and_coral_on_inverted_fashion_mnist(fashion_manifest):
    """The built shift: train on the sample images, test on their photographic negatives."""
    manifest = pd.read_csv(fashion_manifest)
    train = manifest[manifest["split"] == "train"].groupby("label").head(30)
    test = manifest[manifest["split"] == "test"].groupby("label").head(20)

    def features(rows: pd.DataFrame, invert: bool) -> np.ndarray:
        pixels = [np.asarray(Image.open(fashion_manifest.parent / path)) for path in rows["path"]]
        return extract_features([255 - p if invert else p for p in pixels], "efficientnet_lite0")

    X_source = features(train, invert=False)
    X_target = features(train, invert=True)  # the target domain's images, without their labels
    X_test = features(test, invert=True)
    report = shift_report(
        X_source,
        train["label"],
        X_target,
        X_test,
        test["label"],
        make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
    )
    print(report)
    assert report["training"].tolist() == ["source only", "CORAL"]
    assert report["target_accuracy"].between(0, 1).all()
    assert report["target_accuracy"].nunique() == 2  # adaptation changed the predictions
