"""The checksums that guard cached vectors: one crc32 per row, and the crc32 of many rows derived from theirs.

crc32 is linear over GF(2): ``crc32(a + b) = shift(crc32(a), len(b)) ^ crc32(b)``, zlib's ``crc32_combine``.
So the crc32 of a block of equal-length rows follows from the rows' stored checksums by a few table lookups
per row, and one ISA-L call over the block (which runs at memory speed and releases the GIL) verifies every
row in it. Only a block that fails is checked row by row, to name the rows to recompute.

Each entry binds its key and its namespace to its bytes: the stored checksum is ``crc32(vector) ^
key_tag(key) ^ tag``, where ``tag`` is 32 bits of the namespace's fingerprint hash. Keys swapped between
two entries (by hand, or by a tool that rewrote one column), and a shard copied in from another
extractor's namespace, fail every read of them, as a flipped bit does, instead of serving one image's or
one extractor's vector for another.
"""

from __future__ import annotations

import functools

import numpy as np
from isal import isal_zlib


def vector_checksums(vectors: np.ndarray) -> np.ndarray:
    """crc32 of each row's float32 bytes: zlib's checksum, computed by ISA-L's SIMD code."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.fromiter(map(isal_zlib.crc32, rows), dtype=np.uint32, count=len(rows))  # row views, no copies


_MIX = np.uint64(0x9E3779B97F4A7C15)  # the golden-ratio multiplier: every key bit reaches the top 32


def key_tags(keys: np.ndarray) -> np.ndarray:
    """A 32-bit tag of each 64-byte key, vectorised (about 30 ms per million keys): the part of an entry's
    checksum that binds it to its key."""
    words = np.ascontiguousarray(keys, dtype="S64").view("<u8").reshape(-1, 8)
    mixed = np.zeros(len(words), dtype=np.uint64)
    for column in range(words.shape[1]):
        mixed ^= words[:, column]
        mixed *= _MIX
    return (mixed >> np.uint64(32)).astype(np.uint32)


def entry_checksums(keys: np.ndarray, vectors: np.ndarray, tag: int = 0) -> np.ndarray:
    """What a keys file stores for each row: the vector's crc32 bound to its key and to the namespace's
    ``tag`` (:func:`featx.cache.files.fingerprint_tag`)."""
    return vector_checksums(vectors) ^ key_tags(keys) ^ np.uint32(tag)


def unbound(rows: np.ndarray, tag: int = 0) -> np.ndarray:
    """The vectors' own crc32s from stored (key, checksum) rows of a namespace of ``tag``: what the
    vectors' bytes must hash to."""
    return rows["crc32"] ^ key_tags(rows["key"]) ^ np.uint32(tag)


def block_checksum(block: np.ndarray) -> int:
    """crc32 of a C-contiguous block's bytes, in one call (the GIL is released above 5 KB)."""
    return isal_zlib.crc32(memoryview(block).cast("B"))


def combined_checksums(row_checksums: np.ndarray, starts: np.ndarray, row_bytes: int) -> np.ndarray:
    """crc32 of each piece of rows, piece ``k`` being rows ``starts[k]:starts[k + 1]`` (the last runs to the
    end), computed from the rows' own crc32s alone.

    Pieces are grouped by width rounded up to a power of two, padded in front with empty rows (crc32 0,
    which combining leaves unchanged), and folded pairwise: ``log2(width)`` vectorised steps per group.
    """
    checksums = np.asarray(row_checksums, dtype=np.uint32)
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.diff(np.append(starts, len(checksums)))
    if (lengths <= 0).any():
        raise ValueError("every piece needs at least one row")
    out = np.empty(len(starts), dtype=np.uint32)
    widths = 1 << np.ceil(np.log2(lengths)).astype(np.int64)
    for width in np.unique(widths):
        pieces = np.flatnonzero(widths == width)
        first = starts[pieces, None] + lengths[pieces, None] - width  # padding makes the last row aligned
        index = first + np.arange(width)
        folded = np.where(index >= starts[pieces, None], checksums[np.maximum(index, 0)], 0).astype(np.uint32)
        rows_per_half = 1
        while folded.shape[1] > 1:
            folded = _shift(folded[:, 0::2], rows_per_half * row_bytes) ^ folded[:, 1::2]
            rows_per_half *= 2
        out[pieces] = folded[:, 0]
    return out


def _shift(checksums: np.ndarray, length: int) -> np.ndarray:
    """The crc32 of ``a`` followed by ``length`` zero bytes, given crc32(``a``) (linear, so 4 byte tables)."""
    tables = _shift_tables(length)
    return (
        tables[0][checksums & 0xFF]
        ^ tables[1][(checksums >> 8) & 0xFF]
        ^ tables[2][(checksums >> 16) & 0xFF]
        ^ tables[3][checksums >> 24]
    )


@functools.lru_cache(maxsize=64)
def _shift_tables(length: int) -> np.ndarray:
    """(4, 256) uint32: the shift by ``length`` bytes applied to each possible byte of a crc32, built from
    its action on the 32 basis bits (ISA-L's ``crc32_combine`` with an empty second part)."""
    basis = np.array([isal_zlib.crc32_combine(1 << bit, 0, length) for bit in range(32)], dtype=np.uint32)
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    tables = np.zeros((4, 256), dtype=np.uint32)
    for byte in range(4):
        for bit in range(8):
            tables[byte] ^= np.where(bits[:, bit] == 1, basis[8 * byte + bit], 0).astype(np.uint32)
    return tables
