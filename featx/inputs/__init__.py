"""What becomes an image: decoding and its bounds, sources (files, URLs, tar shards, tables), manifests."""
