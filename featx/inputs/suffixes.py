"""The names featx recognises: what an image file and a WebDataset shard may be called."""

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
#: A tar, or a gzipped one (streamed with tarfile's "r|*", indexed with "r:*").
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
