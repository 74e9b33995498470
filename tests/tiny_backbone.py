"""A tiny CNN registered the way users register their own: fast mechanics tests, random weights only."""

from torch import nn

from featx import Backbone, Preprocessing, register_backbone


def build_tiny() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


TINY = Backbone(
    name="tiny",
    build=build_tiny,
    node="6",  # the AdaptiveAvgPool2d: 16 x 2 x 2
    pooling="flatten",
    preprocessing=Preprocessing(resize=36, crop=32),
    description="test-only tiny CNN",
)

if "tiny" not in __import__("featx").list_backbones():
    register_backbone(TINY)
