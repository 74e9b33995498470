"""A real domain shift and what CORAL does about it: train on one rendering, test on another.

    python pipelines/domain_shift.py                   # Fashion-MNIST sample: originals -> negatives
    python pipelines/domain_shift.py --shift blur      # or: rotate, lowres

The source domain is the sample's training images as they are; the target domain is the same kind of
images rendered differently (negative, blurred, rotated 90 degrees, or 7x7 upsampled). The classifier
sees source labels only; CORAL sees the target's training images without labels; accuracy is measured
on the target's test images. Features go through the cache, so a second run computes nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from featx import extract_features
from featx.estimators.adapt import shift_report
from featx.inputs.manifests import load_manifest

SHIFTS = {
    "invert": lambda image: Image.eval(image, lambda value: 255 - value),
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(1.5)),
    "rotate": lambda image: image.transpose(Image.Transpose.ROTATE_90),
    "lowres": lambda image: image.resize((7, 7), Image.BILINEAR).resize(image.size, Image.NEAREST),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("manifest", nargs="?", default="data/fashion_mnist/manifest.csv")
    parser.add_argument("--shift", choices=sorted(SHIFTS), default="invert")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--cache", default=".featx-cache")
    args = parser.parse_args()

    manifest = load_manifest(args.manifest)
    train, test = manifest[manifest["split"] == "train"], manifest[manifest["split"] == "test"]

    def shifted(rows) -> list[np.ndarray]:
        return [np.asarray(SHIFTS[args.shift](Image.open(path))) for path in rows["path"]]

    def features(images: list) -> np.ndarray:
        return extract_features(images, args.backbone, cache_dir=args.cache, progress=True)

    X_source = features(train["path"].tolist())
    X_target = features(shifted(train))  # the target domain, unlabelled
    X_test = features(shifted(test))
    X_test_source = features(test["path"].tolist())
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    report = shift_report(X_source, train["label"], X_target, X_test, test["label"], classifier)
    in_domain = classifier.fit(X_source, train["label"]).score(X_test_source, test["label"])
    print(
        f"{args.backbone}, source: {len(train)} original training images; target: the same images, {args.shift}"
    )
    print(f"no shift (source test images): {in_domain:.1%}")
    print(report.to_string(index=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
