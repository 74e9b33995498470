"""Registry entries, one file per family. Importing this package registers them all; adding a family
means adding a file here and one import line below."""

from featx.models._registry import mark_bundled
from featx.models.zoo import efficientnet_lite, timm, torchvision  # noqa: F401  (registers on import)

mark_bundled()  # what is registered now is featx's own, known to every process
