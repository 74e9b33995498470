"""The network: name -> zoo entry -> weights + preprocessing -> NetworkSpec -> FrozenNetwork.

Importing this package registers the bundled zoo (as importing timm's ``models`` registers its models),
so the registry holds it whichever featx module a program imports first.
"""

from featx.models import zoo  # noqa: F401  (registers the bundled backbones)
