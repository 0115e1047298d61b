"""Vectorised, platform-independent hashing of id columns into embedding buckets.

No Python work per row: integer ids go through splitmix64; strings are dictionary-encoded first, then
FNV-1a runs over the distinct strings one byte position at a time, so the loop length is the longest
string, not the number of rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of int64 ids: ``(N,) int -> (N,) uint64``."""
    x = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def fnv1a64(strings: pa.Array) -> np.ndarray:
    """FNV-1a 64 of each UTF-8 string (no nulls): ``(N,) string -> (N,) uint64``."""
    strings = strings.cast(pa.large_string())
    n = len(strings)
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int64)[strings.offset : strings.offset + n + 1]
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(n, _FNV_OFFSET, dtype=np.uint64)
    for position in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > position)
        hashes[live] = (hashes[live] ^ data[starts[live] + position]) * _FNV_PRIME
    return hashes


def hash_buckets(column: pa.ChunkedArray | pa.Array, num_buckets: int) -> np.ndarray:
    """Bucket of every id in ``column``: ``(N,) -> (N,) int64`` in ``[0, num_buckets)``; nulls go to 0."""
    column = pa.chunked_array([column]) if isinstance(column, pa.Array) else column
    if pa.types.is_integer(column.type):
        values = pc.fill_null(column, 0).to_numpy()
        buckets = splitmix64(values) % np.uint64(num_buckets)
        nulls = pc.is_null(column).to_numpy(zero_copy_only=False)
    else:
        encoded = pc.dictionary_encode(column.cast(pa.string())).combine_chunks()
        per_value = fnv1a64(encoded.dictionary) % np.uint64(num_buckets)
        indices = encoded.indices
        nulls = pc.is_null(indices).to_numpy(zero_copy_only=False)
        buckets = per_value[pc.fill_null(indices, 0).to_numpy()] if len(per_value) else np.zeros(len(indices))
    buckets = buckets.astype(np.int64)
    buckets[nulls] = 0
    return buckets
