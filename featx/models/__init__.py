"""The network: name -> zoo entry -> weights + preprocessing -> NetworkSpec -> FrozenNetwork."""
