"""Experiments on features: which classifier, which layer, which backbone, and did transfer help at all?

`featx.evaluate.compare` compares classifiers; `featx.evaluate.transfer` measures pretrained
features against baselines; both run on the folds of `featx.evaluate.folds`.
"""

from featx.evaluate.compare import (
    compare_classifiers,
    compare_finetuning,
    confusion,
    recommendation,
)
from featx.evaluate.folds import corrected_paired_ttest, make_folds
from featx.evaluate.transfer import (
    BASELINES,
    FeatureSet,
    TransferReport,
    transfer_report,
    with_finetuning,
)

__all__ = [
    "BASELINES",
    "FeatureSet",
    "TransferReport",
    "compare_classifiers",
    "compare_finetuning",
    "confusion",
    "corrected_paired_ttest",
    "make_folds",
    "recommendation",
    "transfer_report",
    "with_finetuning",
]
