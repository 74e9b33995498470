"""The Ray engine: Ray Data tasks read, key and decode; actors run the network (``pip install "featx[ray]"``)."""
