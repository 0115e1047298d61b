"""Multi-value and sequence features in the models: pooled lookups of the fused table, per-field widths, DIN's
attention and Dice, against hand-computed examples; every model trains with list features."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from easyrec.data.batches import Batch
from easyrec.data.features import InputSpec, ListField
from easyrec.models import DIN, DLRM, DSSM, ESMM, PLE, DCNv2, DeepFM, MMoE, WideAndDeep
from easyrec.models.base import build
from easyrec.modules import MLP, FieldEmbedding, LinearTerms
from easyrec.modules.activation import Dice
from easyrec.modules.attention import TargetAttention
from easyrec.modules.feature_vector import FeatureVector

pytestmark = pytest.mark.usefixtures("one_thread")

# tags: a bag of 3 ids with its own 4 rows (mean); history: 2 ids of field "item" (sum), in its rows
TAGS = ListField("tags", "multi_value", max_length=3, combiner="mean", start=0, cardinality=4)
HISTORY = ListField("history", "sequence", max_length=2, combiner="sum", start=3, cardinality=5, table="item")
LISTS = torch.tensor([[1, 3, -1, 4, 2], [-1, -1, -1, -1, -1], [2, 2, 2, 0, -1]], dtype=torch.int32)


def counting_table(emb: FieldEmbedding) -> torch.Tensor:
    """Set row r of ``emb``'s table to ``[r, 10 r]`` (``[r]`` if 1 wide) and return it."""
    with torch.no_grad():
        rows = torch.arange(emb.table.num_embeddings, dtype=torch.float32)
        emb.table.weight.copy_(torch.stack([rows, 10 * rows], dim=1)[:, : emb.table.embedding_dim])
    return emb.table.weight.detach()


# ---------------------------------------------------------------------- FieldEmbedding.pool


def test_pool_sums_or_averages_the_rows_of_each_bag_by_hand():
    # fields "user" (3 rows: 0-2) and "item" (5 rows: 3-7), then tags' own block (rows 8-11)
    emb = FieldEmbedding([3, 5], dim=2, names=["user", "item"], lists=[TAGS, HISTORY])
    counting_table(emb)
    assert emb.names == ["user", "item", "tags"] and emb.cardinalities == [3, 5, 4]
    assert emb.block_starts == {"user": 0, "item": 3, "tags": 8}
    expected = torch.tensor(
        [
            [[(9 + 11) / 2, (90 + 110) / 2], [7 + 5, 70 + 50]],  # tags (8+1, 8+3) averaged; history (3+4, 3+2) summed
            [[0, 0], [0, 0]],  # no id: zeros
            [[10, 100], [3, 30]],  # the same tag 3 times averages to itself; history: item 0 only
        ]
    )
    torch.testing.assert_close(emb.pool(LISTS), expected)
    fields = emb(torch.tensor([[0, 1], [2, 0], [1, 4]]), LISTS)  # the fields, then the pooled lists
    torch.testing.assert_close(fields[:, 2:], expected)
    torch.testing.assert_close(fields[0, :2], torch.tensor([[0.0, 0.0], [4.0, 40.0]]))


def test_pool_touches_no_row_for_padding_and_takes_sparse_gradients():
    emb = FieldEmbedding([3, 5], dim=2, names=["user", "item"], lists=[TAGS, HISTORY], sparse=True)
    emb.pool(LISTS).sum().backward()
    grad = emb.table.weight.grad.to_dense()[:, 0]
    # tags: row 0 of each bag gets 1/2 (9, 11), row 10 (tag 2, 3 times in a bag of 3) 3 · 1/3; history: sums
    expected = torch.zeros(12)
    expected[[9, 11]] = 0.5
    expected[10] = 1.0
    expected[[7, 5, 3]] = 1.0
    torch.testing.assert_close(grad, expected)  # rows 8 (tags' row 0, read by padding) and 0 get nothing


def test_pool_of_a_subset_reads_its_own_columns_and_empty_batches():
    emb = FieldEmbedding([5], dim=2, names=["item"], lists=[HISTORY])
    counting_table(emb)
    torch.testing.assert_close(emb.pool(LISTS)[:, 0], torch.tensor([[6.0, 60.0], [0.0, 0.0], [0.0, 0.0]]))
    assert emb.pool(LISTS[:0]).shape == (0, 1, 2)


def test_a_shared_table_feature_without_its_field_gets_a_block_of_the_fields_rows():
    emb = FieldEmbedding([3], dim=2, names=["user"], lists=[HISTORY])
    assert emb.names == ["user", "history"] and emb.cardinalities == [3, 5]


def test_lookup_reads_a_block_id_by_id_with_zeros_for_padding():
    emb = FieldEmbedding([3, 5], dim=2, names=["user", "item"], lists=[TAGS])
    counting_table(emb)
    embeddings, mask = emb.lookup(LISTS[:, HISTORY.columns], "item")
    assert mask.tolist() == [[True, True], [False, False], [True, False]]
    torch.testing.assert_close(embeddings[0], torch.tensor([[7.0, 70.0], [5.0, 50.0]]))
    torch.testing.assert_close(embeddings[2], torch.tensor([[3.0, 30.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="'clicks': no block of this table"):
        emb.lookup(LISTS, "clicks")


def test_penalty_covers_the_pooled_ids_and_adds_up_over_lookups():
    emb = FieldEmbedding([3, 5], dim=2, names=["user", "item"], lists=[TAGS, HISTORY], l2=0.1)
    weight = counting_table(emb)
    emb(torch.tensor([[0, 1]]), LISTS[:1])
    rows = [0, 3 + 1, 8 + 1, 8 + 3, 3 + 4, 3 + 2]  # the fields', then the ids of tags and history
    assert emb.take_penalty().item() == pytest.approx(0.05 * float(weight[rows].square().sum()))
    emb.lookup(torch.tensor([[1]]), "user")
    emb.lookup(torch.tensor([[2]]), "user")
    assert emb.take_penalty().item() == pytest.approx(0.05 * float(weight[[1, 2]].square().sum()))
    assert emb.take_penalty() is None


def test_linear_terms_pool_the_first_order_weights_of_list_features():
    inputs = InputSpec(("x",), ("user", "item"), (3, 5), lists=(TAGS, HISTORY))
    linear = LinearTerms.of_fields(inputs)
    counting_table(linear.categorical)
    with torch.no_grad():
        linear.dense.weight.fill_(0.0)
        linear.dense.bias.fill_(0.5)
    out = linear(torch.ones(1, 1), torch.tensor([[0, 1]]), LISTS[:1])
    assert out.item() == pytest.approx(0 + 4 + (9 + 11) / 2 + (7 + 5) + 0.5)  # user, item, tags, history, bias


# ---------------------------------------------------------------------- per-field widths


def test_feature_vector_groups_fields_by_width():
    inputs = InputSpec(("x",), ("user", "item"), (3, 5), lists=(TAGS, HISTORY), embedding_dims=(None, 3))
    vector = FeatureVector(inputs, embedding_dim=2)
    assert vector.embedding.names == ["user", "tags"]  # width 2: user, tags (its own width: the model's)
    assert vector.embeddings["dim3"].names == ["item"]  # width 3: item and history, which shares item's table
    assert vector.out_features == 2 * 2 + 2 * 3 + 1
    sparse = torch.tensor([[0, 1], [2, 0], [1, 4]])
    out = vector(torch.ones(3, 1), sparse, LISTS)
    user_tags = vector.embedding(sparse[:, :1], LISTS).flatten(1)
    item_history = vector.embeddings["dim3"](sparse[:, 1:], LISTS).flatten(1)
    torch.testing.assert_close(out, torch.cat([user_tags, item_history, torch.ones(3, 1)], dim=1))
    assert vector.table_of("item") is vector.embeddings["dim3"]


def test_feature_vector_selects_list_features_by_name():
    inputs = InputSpec(("x",), ("user", "item"), (3, 5), lists=(TAGS, HISTORY))
    vector = FeatureVector(inputs, embedding_dim=2, features=["history", "user"])
    assert vector.embedding.names == ["user", "history"]  # history's item rows, in a block of its own here
    assert vector(torch.ones(3, 1), torch.tensor([[0, 1], [2, 0], [1, 4]]), LISTS).shape == (3, 4)
    with pytest.raises(ValueError, match="unknown feature 'clicks'; the features are: x, user, item, tags, history"):
        FeatureVector(inputs, embedding_dim=2, features=["clicks"])


WIDE_ITEM = InputSpec(("x",), ("user", "item"), (3, 5), embedding_dims=(None, 3))
WIDE_TAGS = InputSpec(
    ("x",), ("user", "item"), (3, 5), lists=(ListField("tags", "multi_value", 3, "mean", 0, 4, None, 4),)
)


@pytest.mark.parametrize(
    "model",
    [
        lambda inputs: DeepFM(inputs, embedding_dim=2),
        lambda inputs: DCNv2(inputs, embedding_dim=2),
        lambda inputs: DLRM(inputs, embedding_dim=2, bottom_units=[2]),
    ],
)
@pytest.mark.parametrize(
    "inputs,named",
    [
        (WIDE_ITEM, "'item' is 3 wide (data.features.categorical...embedding_dim)"),
        (WIDE_TAGS, "'tags' is 4 wide (data.features.multi_value...embedding_dim)"),
    ],
)
def test_models_of_one_width_refuse_a_feature_of_another_in_one_line(model, inputs, named):
    with pytest.raises(ValueError, match=re.escape(named)) as error:
        model(inputs)
    assert "\n" not in str(error.value) and "model.embedding_dim=2" in str(error.value)


# ---------------------------------------------------------------------- DIN's parts


def test_dice_by_hand_in_training_and_with_its_running_statistics():
    dice = Dice(2, eps=1e-12)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # mean (2, 4), variance (1, 4): normalised ±1
    low, high = torch.sigmoid(torch.tensor(-1.0)).item(), torch.sigmoid(torch.tensor(1.0)).item()
    expected = torch.tensor([[1 * (low + (1 - low) * 0.5), 2 * low], [3 * (high + (1 - high) * 0.5), 6 * high]])
    torch.testing.assert_close(dice(x), expected)
    torch.testing.assert_close(dice.running_mean, torch.tensor([0.2, 0.4]))  # 0.9 · 0 + 0.1 · mean
    torch.testing.assert_close(dice.running_var, torch.tensor([1.1, 1.7]))  # 0.9 · 1 + 0.1 · (2, 8) (unbiased)
    dice.eval()
    p = torch.sigmoid((torch.tensor([1.0, 2.0]) - torch.tensor([0.2, 0.4])) / torch.tensor([1.1, 1.7]).sqrt())
    torch.testing.assert_close(dice(x[:1]), (torch.tensor([1.0, 2.0]) * (p + (1 - p) * dice.alpha)).unsqueeze(0))
    assert dice(torch.randn(2, 3, 2)).shape == (2, 3, 2)


def test_mlp_takes_prelu_and_dice():
    assert isinstance(MLP(4, [3], 1, activation="prelu").layers[1], nn.PReLU)
    assert isinstance(MLP(4, [3], 1, activation="dice").layers[1], Dice)
    assert isinstance(MLP(4, [3], 1).layers[1], nn.ReLU)


def test_target_attention_by_hand_unnormalised_and_masked():
    attention = TargetAttention(2, hidden_units=[])  # the unit is one Linear: w = a · [h, t, h − t, h ⊙ t] + b
    with torch.no_grad():
        attention.mlp.layers[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]]))
        attention.mlp.layers[0].bias.fill_(0.5)
    target = torch.tensor([[1.0, 2.0]])
    history = torch.tensor([[[3.0, 1.0], [0.0, 1.0], [9.0, 9.0]]])
    # w = h_0 + <h, t> + 0.5: (3 + 3 + 2 + 0.5, 0 + 0 + 2 + 0.5); the third item is padding
    out = attention(target, history, torch.tensor([[True, True, False]]))
    torch.testing.assert_close(out, 8.5 * history[:, 0] + 2.5 * history[:, 1])
    empty = attention(target, history, torch.zeros(1, 3, dtype=torch.bool))
    torch.testing.assert_close(empty, torch.zeros(1, 2))


def test_din_attends_each_shared_history_with_its_target_item():
    torch.manual_seed(0)
    inputs = InputSpec(("x",), ("user", "item"), (3, 5), lists=(TAGS, HISTORY), embedding_dims=(None, 3))
    model = DIN(inputs, embedding_dim=2, attention_units=[4], hidden_units=[8], activation="prelu").eval()
    assert model.features.out_features == 2 * 2 + 3 + 1  # user, tags pooled, item, x; history attended apart
    dense, sparse = torch.ones(3, 1), torch.tensor([[0, 1], [2, 0], [1, 4]])
    table = model.features.embeddings["dim3"]
    history, mask = table.lookup(LISTS[:, HISTORY.columns], "item")
    item, _ = table.lookup(sparse[:, 1:], "item")
    attended = model.attention[0](item.squeeze(1), history, mask)
    expected = model.mlp(torch.cat([model.features(dense, sparse, LISTS), attended], dim=1)).squeeze(1)
    torch.testing.assert_close(model(dense, sparse, LISTS), expected)


def test_din_without_a_shared_history_names_the_key():
    inputs = InputSpec(("x",), ("user", "item"), (3, 5), lists=(TAGS, ListField("clicks", "sequence", 2, "sum", 3, 9)))
    with pytest.raises(ValueError, match=re.escape("data.features.sequence.N.embedding_name: one of user, item")):
        DIN(inputs)
    with pytest.raises(ValueError, match="the sequence features: clicks$"):
        DIN(inputs)


# ---------------------------------------------------------------------- every model trains with list features

BATCH = 256
LEARNING = InputSpec(
    ("x",),
    ("user", "item"),
    (6, 8),
    lists=(
        ListField("tags", "multi_value", max_length=3, combiner="mean", start=0, cardinality=5),
        ListField("history", "sequence", max_length=4, combiner="sum", start=3, cardinality=8, table="item"),
    ),
)


def learning_batch() -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Inputs of :data:`LEARNING` and labels: clicked iff the target item is in the history or tag 1 is a tag."""
    generator = torch.Generator().manual_seed(0)
    sparse = torch.stack(
        [torch.randint(0, 6, (BATCH,), generator=generator), torch.randint(1, 8, (BATCH,), generator=generator)], dim=1
    )
    lengths = torch.randint(0, 5, (BATCH, 1), generator=generator)
    history = torch.randint(1, 8, (BATCH, 4), generator=generator).masked_fill(torch.arange(4) >= lengths, -1)
    tags = torch.randint(1, 5, (BATCH, 3), generator=generator).masked_fill(torch.arange(3) >= 2, -1)
    lists = torch.cat([tags, history], dim=1).to(torch.int32)
    labels = ((history == sparse[:, 1:]).any(1) | (tags == 1).any(1)).float()
    return (torch.randn(BATCH, 1, generator=generator), sparse.to(torch.int32), lists), labels


TWO_TASKS = {"task_outputs": (1, 1)}
MODELS = {
    "deepfm": lambda: DeepFM(LEARNING, embedding_dim=4, hidden_units=[16]),
    "wide_deep": lambda: WideAndDeep(LEARNING, embedding_dim=4, hidden_units=[16]),
    "dcnv2": lambda: DCNv2(LEARNING, embedding_dim=4, cross_layers=1, hidden_units=[16]),
    "dlrm": lambda: DLRM(LEARNING, embedding_dim=4, bottom_units=[4], top_units=[16]),
    "mmoe": lambda: MMoE(LEARNING, embedding_dim=4, num_experts=2, expert_units=[16], tower_units=[], **TWO_TASKS),
    "ple": lambda: PLE(LEARNING, embedding_dim=4, num_levels=1, expert_units=[16], tower_units=[], **TWO_TASKS),
    "esmm": lambda: ESMM(LEARNING, embedding_dim=4, tower_units=[16], **TWO_TASKS),
    "din": lambda: DIN(LEARNING, embedding_dim=4, attention_units=[8], hidden_units=[16]),
}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_learns_from_list_features(name):
    torch.manual_seed(0)
    inputs, labels = learning_batch()
    model = build(lambda spec: MODELS[name](), LEARNING, 1, (1, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    targets = labels if name not in ("mmoe", "ple", "esmm") else labels.unsqueeze(1).expand(-1, 2)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(*inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_dssm_towers_read_the_list_features_they_name():
    torch.manual_seed(0)
    model = DSSM(LEARNING, ["user", "history"], ["item", "tags"], embedding_dim=4, hidden_units=[8], output_dim=4)
    (dense, sparse, lists), _ = learning_batch()
    out = model(dense, sparse, lists)
    assert out.shape == (BATCH, 2, 4)
    changed = lists.clone()
    changed[:, 3:] = -1  # no history: the user side changes, the item side does not
    torch.testing.assert_close(model.item_embeddings(dense, sparse, changed), out[:, 1])
    assert not torch.allclose(model.user_embeddings(dense, sparse, changed), out[:, 0])
    out.sum().backward()
    assert model.user_features.embedding.table.weight.grad[6:].abs().sum() > 0  # history's own block of item rows


@pytest.mark.parametrize("name", MODELS)
def test_every_model_takes_the_zero_row_probe(name):
    """What evaluation probes a model's outputs with, and a worker with no rows runs: ``Batch.of_zeros``."""
    model = MODELS[name]().train()
    for rows in (0, 1):
        out = model(*Batch.of_zeros(LEARNING, rows).inputs)
        assert out.shape[0] == rows and torch.isfinite(out).all()


def test_din_penalises_each_looked_up_embedding_once():
    """embedding_regularization over a DIN batch: the fields' embeddings (the target item's once, though DIN looks it
    up again as the query) and the history's ids, padding excluded."""
    history = ListField("history", "sequence", 3, "mean", start=0, cardinality=10, table="item")
    model = DIN(
        InputSpec((), ("user", "item"), (5, 10), lists=(history,)), embedding_dim=4, embedding_regularization=0.1
    )
    sparse, lists = torch.tensor([[1, 7], [2, 3]]), torch.tensor([[4, 9, -1], [-1, -1, -1]])
    model.train()(torch.zeros(2, 0), sparse, lists)
    table = model.features.table_of("item")
    weight = table.table.weight.detach()
    rows = torch.tensor([1, 2, 5 + 7, 5 + 3, 5 + 4, 5 + 9])  # user's rows, the items', the history's ids
    assert table.take_penalty().item() == pytest.approx(0.05 * float(weight[rows].square().sum()), rel=1e-5)
