"""The synthetic data's behaviour columns (``Behaviour``: item, history, tags): shapes, determinism, the default
data unchanged, and the oracle's share of the history."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from easyrec.data import SyntheticCTRData
from easyrec.data.synthetic import ITEMS_PER_INTEREST, Behaviour, _behaviour, generate_clicks

OPTIONS = Behaviour(num_items=200, max_history=7, num_tags=50, max_tags=3)
#: sha256 of generate_clicks(3000, seed=1)'s table and probabilities without behaviour columns, as drawn before they
#: existed: the default data must stay bit-identical (tests/test_loss_curve.py and the README pin runs on it)
DEFAULT_DIGEST = "ab2531cfde3f87eff98b7c87021a2bacbb6836e7975ae9e52b91e4133e764a1f"


def digest(table: pa.Table, probs: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in table.column_names:
        h.update(name.encode())
        h.update(table[name].to_numpy().tobytes())
    for _, p in sorted(probs.items()):
        h.update(p.tobytes())
    return h.hexdigest()


def padded(column: pa.ChunkedArray, width: int) -> np.ndarray:
    """A list column as ``(N, width)`` ids padded with -1."""
    lists = column.combine_chunks()
    lengths = np.diff(lists.offsets.to_numpy())
    ids = np.full((len(lengths), width), -1, dtype=np.int64)
    ids[np.arange(width) < lengths[:, None]] = lists.values.to_numpy()
    return ids


def logit(p: np.ndarray) -> np.ndarray:
    return np.log(p.astype(np.float64)) - np.log1p(-p.astype(np.float64))


def test_behaviour_columns_types_and_ranges():
    table, probs = generate_clicks.__wrapped__(3000, 3, 0.25, OPTIONS)
    names = table.column_names
    assert names[names.index("C26") + 1 : names.index("label")] == ["item", "history", "tags"]
    assert table.schema.field("item").type == pa.int32()
    assert table.schema.field("history").type == table.schema.field("tags").type == pa.list_(pa.int32())
    item = table["item"].to_numpy()
    assert item.min() >= 0 and item.max() < 200
    history_lengths = np.diff(table["history"].combine_chunks().offsets.to_numpy())
    assert history_lengths.min() == 1 and history_lengths.max() == 7  # 1 to max_history ids
    history = padded(table["history"], 7)
    assert history[history >= 0].max() < 200  # the target item's id space
    tags = padded(table["tags"], 3)
    assert set(np.unique((tags >= 0).sum(1))) == {0, 1, 2, 3} and tags.max() < 50  # 0 to max_tags ids
    assert probs["label"].mean() == pytest.approx(0.25, abs=1e-3)  # the bias still sets the positive rate


def test_behaviour_columns_are_deterministic_and_drawn_apart():
    table, probs = generate_clicks.__wrapped__(3000, 3, 0.25, OPTIONS)
    again, probs_again = generate_clicks.__wrapped__(3000, 3, 0.25, OPTIONS)
    assert table.equals(again) and np.array_equal(probs["label"], probs_again["label"])
    other, _ = generate_clicks.__wrapped__(3000, 4, 0.25, OPTIONS)
    assert not table["history"].equals(other["history"])
    plain, plain_probs = generate_clicks.__wrapped__(3000, 3)
    for name in plain.column_names:  # their own streams: every other draw is unchanged; labels follow p
        if name not in ("label", "conversion", "value", "action", "teacher"):
            assert table[name].equals(plain[name]), name
    assert not np.array_equal(probs["label"], plain_probs["label"])
    tags_only, _ = generate_clicks.__wrapped__(3000, 3, 0.25, Behaviour(num_tags=50, max_tags=3))
    assert "item" not in tags_only.column_names and tags_only["tags"].equals(table["tags"])


def test_the_default_data_is_unchanged():
    table, probs = generate_clicks.__wrapped__(3000, 1)
    assert "item" not in table.column_names
    assert digest(table, probs) == DEFAULT_DIGEST
    explicit = generate_clicks.__wrapped__(3000, 1, 0.25, Behaviour())
    assert digest(*explicit) == DEFAULT_DIGEST


@pytest.mark.parametrize("max_history", [1, 200])
def test_the_positive_rate_holds_for_any_history_length(max_history):
    _, probs = generate_clicks.__wrapped__(5000, 2, 0.1, Behaviour(num_items=100, max_history=max_history))
    assert probs["label"].mean() == pytest.approx(0.1, abs=1e-3)


def test_the_oracle_covers_the_behaviour_blocks():
    rows, seed = 20_000, 5
    _, plain = generate_clicks.__wrapped__(rows, seed)
    _, probs = generate_clicks.__wrapped__(rows, seed, 0.25, OPTIONS)
    shift = logit(probs["label"]) - logit(plain["label"])
    _, blocks = _behaviour(seed, rows, OPTIONS, {})
    residual = shift - blocks  # the other blocks are the same rows' (and scales): only the bias moves
    assert residual.std() < 1e-3 * blocks.std()
    # the history's block (the strongest match) is the largest: the oracle AUC gains from it
    _, history_only = _behaviour(seed, rows, Behaviour(num_items=200, max_history=7), {})
    assert np.corrcoef(history_only, blocks)[0, 1] > 0.9


def test_synthetic_data_takes_the_behaviour_options():
    features = {"categorical": [{"names": ["C1", "item"]}], "sequence": [{"names": ["history"]}]}
    data = SyntheticCTRData(features, num_rows=2000, num_items=100, max_history=4, num_tags=10, seed=2)
    (train, _), (evaluation, _) = data.read_splits()
    assert train.num_rows + evaluation.num_rows == 2000
    assert {"item", "history", "tags"} <= set(train.column_names)
    assert data.behaviour == Behaviour(100, 4, 10, 5)
    with pytest.raises(ValueError, match=f"^num_items=5: 0 \\(no item columns\\) or at least {ITEMS_PER_INTEREST}"):
        SyntheticCTRData(features, num_rows=2000, num_items=5)
