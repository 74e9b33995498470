"""featx: transfer learning by feature extraction with frozen pretrained CNNs.

The public names, listed in ``__init__.pyi``, load on first use (scientific Python's SPEC 1, through
``lazy_loader``), so that ``featx --help`` or ``featx cache info`` does not import torch and torchvision.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)

__version__ = "0.1.0"
