"""Hashing of id columns: FNV-1a 64 for strings, splitmix64 for integers, chunk-independent buckets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from easyrec.data.hashing import fnv1a64, hash_buckets, splitmix64

MASK = (1 << 64) - 1


def reference_fnv1a64(text: str) -> int:
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def reference_splitmix64(value: int) -> int:
    x = (value + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def test_fnv1a64_known_vectors():
    hashes = fnv1a64(pa.array(["a", "foobar", ""]))
    assert hashes.dtype == np.uint64
    assert [int(h) for h in hashes] == [0xAF63DC4C8601EC8C, 0x85944171F73967E8, 0xCBF29CE484222325]


def test_fnv1a64_matches_reference_on_mixed_lengths_and_utf8():
    strings = ["", "x", "hello world", "ünïcødé", "日本語", "a" * 37, "123456789", "b\tc"]
    assert [int(h) for h in fnv1a64(pa.array(strings))] == [reference_fnv1a64(s) for s in strings]


def test_fnv1a64_of_a_sliced_and_large_string_array():
    strings = pa.array(["skip", "me", "a", "foobar"]).slice(2)
    assert [int(h) for h in fnv1a64(strings)] == [0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    large = pa.array(["a", "foobar"], pa.large_string())
    assert [int(h) for h in fnv1a64(large)] == [0xAF63DC4C8601EC8C, 0x85944171F73967E8]


def test_fnv1a64_of_no_strings():
    assert len(fnv1a64(pa.array([], pa.string()))) == 0


def test_splitmix64_matches_reference_and_is_deterministic():
    values = np.array([0, 1, 2, 42, -1, 2**40 + 7, -(2**62)], dtype=np.int64)
    first, second = splitmix64(values), splitmix64(values.copy())
    assert first.dtype == np.uint64
    np.testing.assert_array_equal(first, second)
    assert [int(h) for h in first] == [reference_splitmix64(int(v) & MASK) for v in values]


def test_splitmix64_spreads_consecutive_ids():
    hashes = splitmix64(np.arange(10_000, dtype=np.int64))
    assert len(np.unique(hashes)) == 10_000
    buckets = hashes % np.uint64(10)
    counts = np.bincount(buckets.astype(np.int64), minlength=10)
    assert counts.min() > 850 and counts.max() < 1150  # roughly uniform


def test_hash_buckets_of_strings_are_fnv_mod_buckets_and_nulls_go_to_zero():
    buckets = hash_buckets(pa.array(["a", None, "foobar", "a"]), 1000)
    assert buckets.dtype == np.int64
    assert buckets.tolist() == [0xAF63DC4C8601EC8C % 1000, 0, 0x85944171F73967E8 % 1000, 0xAF63DC4C8601EC8C % 1000]


def test_hash_buckets_of_integers_are_splitmix_mod_buckets_and_nulls_go_to_zero():
    buckets = hash_buckets(pa.array([5, None, 123456789, 5], pa.int32()), 97)
    assert buckets.tolist() == [
        reference_splitmix64(5) % 97,
        0,
        reference_splitmix64(123456789) % 97,
        reference_splitmix64(5) % 97,
    ]


@pytest.mark.parametrize(
    "type_,chunks",
    [
        (pa.string(), [["a", "b", None], ["c", "a", "d"], [], ["b", "e", "a", None]]),
        (pa.int64(), [[3, 1, None], [7, 3], [], [1, 1000000, None, 7]]),
    ],
    ids=["strings", "integers"],
)
def test_hash_buckets_of_a_chunked_array_equal_those_of_the_combined_array(type_, chunks):
    chunked = pa.chunked_array([pa.array(c, type=type_) for c in chunks], type=type_)
    assert chunked.num_chunks == 4
    got = hash_buckets(chunked, 50)
    np.testing.assert_array_equal(got, hash_buckets(chunked.combine_chunks(), 50))
    # each row on its own hashes the same way: the bucket depends on the id only
    singles = [hash_buckets(pa.array([v], type=chunked.type), 50)[0] for v in chunked.to_pylist()]
    assert got.tolist() == singles
    assert got[chunked.is_null().to_numpy(zero_copy_only=False)].tolist() == [0, 0]


def test_hash_buckets_stay_in_range():
    ids = pa.array([f"id{i}" for i in range(5000)])
    for num_buckets in (1, 7, 1024):
        buckets = hash_buckets(ids, num_buckets)
        assert buckets.min() >= 0 and buckets.max() < num_buckets
    assert len(np.unique(hash_buckets(ids, 1024))) > 900


def test_hash_buckets_of_an_all_null_column_are_zero():
    assert hash_buckets(pa.array([None, None, None], pa.string()), 10).tolist() == [0, 0, 0]
    assert hash_buckets(pa.array([None, None], pa.int64()), 10).tolist() == [0, 0]
