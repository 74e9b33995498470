"""Registry entries, one file per family. Importing this package registers them all; adding a family
means adding a file here and one import line below."""

from featx.models.zoo import efficientnet_lite, timm, torchvision  # noqa: F401  (registers on import)
