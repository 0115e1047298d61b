"""FieldEmbedding, FactorizationMachine, MLP and DeepFM against hand-written references."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from easyrec.data.features import InputSpec, ListField
from easyrec.models import DIN, DLRM, DSSM, ESMM, PLE, DCNv2, DeepFM, MMoE, WideAndDeep
from easyrec.models.base import l2_regularization
from easyrec.modules import MLP, FactorizationMachine, FieldEmbedding
from easyrec.modules.experts import Experts
from easyrec.modules.kernel_penalty import KernelPenalty
from tests.conftest import options

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: as fast, and not starved beside other jobs

CARDINALITIES = (3, 5, 2)


def random_ids(batch: int, cardinalities=CARDINALITIES, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(batch, F) int32`` ids, each below its field's cardinality."""
    columns = [torch.randint(0, c, (batch,), generator=generator) for c in cardinalities]
    return torch.stack(columns, dim=1).to(torch.int32)


def spec(num_dense: int = 2, cardinalities=CARDINALITIES) -> InputSpec:
    return InputSpec(
        tuple(f"I{j}" for j in range(num_dense)),
        tuple(f"C{f}" for f in range(len(cardinalities))),
        tuple(cardinalities),
    )


# ---------------------------------------------------------------------- FieldEmbedding


def test_field_embedding_one_table_with_a_block_of_rows_per_field():
    emb = FieldEmbedding(CARDINALITIES, dim=4)
    assert emb.table.weight.shape == (sum(CARDINALITIES), 4)
    assert emb.offsets.tolist() == [0, 3, 8]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_field_embedding_looks_up_row_offset_plus_local_id(dtype):
    torch.manual_seed(0)
    emb = FieldEmbedding(CARDINALITIES, dim=4)
    ids = random_ids(16).to(dtype)
    out = emb(ids)
    assert out.shape == (16, 3, 4)
    offsets = [0, 3, 8]
    weight = emb.table.weight.detach()
    for b in range(16):
        for f in range(3):
            assert torch.equal(out[b, f], weight[offsets[f] + int(ids[b, f])])


def test_field_embedding_same_local_id_in_different_fields_is_different_rows():
    torch.manual_seed(0)
    emb = FieldEmbedding(CARDINALITIES, dim=4)
    out = emb(torch.zeros(1, 3, dtype=torch.int32))
    assert not torch.equal(out[0, 0], out[0, 1])
    assert not torch.equal(out[0, 1], out[0, 2])


def test_field_embedding_init():
    torch.manual_seed(0)
    assert torch.count_nonzero(FieldEmbedding([1000], dim=8, init_std=0.0).table.weight) == 0
    std = FieldEmbedding([1000], dim=8, init_std=0.05).table.weight.std().item()
    assert std == pytest.approx(0.05, rel=0.1)


def test_field_embedding_sparse_gradient_touches_only_looked_up_rows():
    emb = FieldEmbedding(CARDINALITIES, dim=4, sparse=True)
    ids = torch.tensor([[1, 4, 0], [1, 0, 1]], dtype=torch.int32)
    emb(ids).sum().backward()
    grad = emb.table.weight.grad
    assert grad.is_sparse
    dense_grad = grad.to_dense()
    # Rows hit: field 0 id 1 (twice) -> 1, field 1 ids 4, 0 -> 7, 3; field 2 ids 0, 1 -> 8, 9.
    expected_counts = torch.zeros(sum(CARDINALITIES))
    expected_counts[[1, 7, 3, 8, 9]] = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0])
    assert torch.equal(dense_grad, expected_counts[:, None].expand(-1, 4))


@pytest.mark.parametrize("sparse", [False, True])
def test_field_embedding_penalty_is_half_l2_times_the_squares_of_the_rows_looked_up(sparse):
    """EasyRec's embedding_regularization: l2·Σe²/2 over the batch's lookups, so a row looked up twice counts
    twice and its gradient is l2·count·w; rows not looked up get none."""
    torch.manual_seed(0)
    emb = FieldEmbedding(CARDINALITIES, dim=4, sparse=sparse, init_std=0.5, l2=0.1)
    ids = torch.tensor([[1, 4, 0], [1, 0, 1]], dtype=torch.int32)  # rows 1 (twice), 7, 3, 8, 9
    out = emb(ids)
    penalty = emb.take_penalty()
    assert penalty.item() == pytest.approx(0.5 * 0.1 * out.square().sum().item(), rel=1e-6)
    assert emb.take_penalty() is None  # handed over once
    penalty.backward()
    grad = emb.table.weight.grad
    assert grad.is_sparse == sparse
    counts = torch.zeros(sum(CARDINALITIES))
    counts[[1, 7, 3, 8, 9]] = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0])
    expected = 0.1 * counts[:, None] * emb.table.weight.detach()
    torch.testing.assert_close(grad.to_dense(), expected)


def test_field_embedding_penalty_only_in_training_forwards_with_gradients():
    emb = FieldEmbedding(CARDINALITIES, dim=4, l2=0.1)
    ids = random_ids(4)
    with torch.no_grad():
        emb(ids)
    assert emb.take_penalty() is None
    emb.eval()
    emb(ids)
    assert emb.take_penalty() is None
    unregularized = FieldEmbedding(CARDINALITIES, dim=4)
    unregularized(ids)
    assert unregularized.take_penalty() is None
    with pytest.raises(ValueError, match="l2=-1: must be >= 0"):
        FieldEmbedding(CARDINALITIES, dim=4, l2=-1)


def test_field_embedding_dense_gradient_by_default():
    emb = FieldEmbedding(CARDINALITIES, dim=4)
    emb(random_ids(4)).sum().backward()
    assert not emb.table.weight.grad.is_sparse


# ---------------------------------------------------------------------- FactorizationMachine


def brute_force_fm(embeddings: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} <e_i, e_j> with a loop over pairs: ``(B, F, D) -> (B,)``."""
    num_fields = embeddings.shape[1]
    total = torch.zeros(embeddings.shape[0], dtype=embeddings.dtype)
    for i, j in itertools.combinations(range(num_fields), 2):
        total += (embeddings[:, i] * embeddings[:, j]).sum(dim=1)
    return total


@pytest.mark.parametrize("num_fields", [1, 2, 7])
def test_fm_equals_sum_over_pairs(num_fields):
    torch.manual_seed(num_fields)
    embeddings = torch.randn(5, num_fields, 3, dtype=torch.float64)
    out = FactorizationMachine()(embeddings)
    assert out.shape == (5,)
    torch.testing.assert_close(out, brute_force_fm(embeddings))


def test_fm_hand_example():
    # e1 = (1, 2), e2 = (3, 4), e3 = (-1, 0): <e1,e2> + <e1,e3> + <e2,e3> = 11 - 1 - 3 = 7.
    embeddings = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0]]])
    assert FactorizationMachine()(embeddings).tolist() == [7.0]


# ---------------------------------------------------------------------- MLP


def test_mlp_layers_and_shapes():
    mlp = MLP(6, [8, 4], out_features=2)
    kinds = [type(m) for m in mlp.layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in mlp.layers if isinstance(m, nn.Linear)] == [
        (6, 8),
        (8, 4),
        (4, 2),
    ]
    assert mlp(torch.randn(3, 6)).shape == (3, 2)


def test_mlp_without_hidden_layers_is_linear():
    mlp = MLP(5, [], out_features=1)
    assert len(mlp.layers) == 1 and isinstance(mlp.layers[0], nn.Linear)


def test_mlp_without_output_layer_ends_with_its_last_hidden_activation():
    mlp = MLP(4, [3, 2], out_features=None)
    assert [type(m) for m in mlp.layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU] and mlp.out_features == 2
    assert (mlp(torch.randn(5, 4)) >= 0).all()
    x = torch.randn(5, 4)
    assert torch.equal(MLP(4, [], out_features=None)(x), x)


def test_mlp_computes_linear_relu_stack():
    torch.manual_seed(0)
    mlp = MLP(4, [3], out_features=1)
    x = torch.randn(6, 4)
    first, last = mlp.layers[0], mlp.layers[2]
    expected = torch.relu(x @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(mlp(x), expected)


def test_mlp_dropout_only_in_train_mode():
    torch.manual_seed(0)
    mlp = MLP(4, [64, 64], dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in mlp.layers) == 2
    x = torch.randn(8, 4)
    mlp.eval()
    assert torch.equal(mlp(x), mlp(x))
    mlp.train()
    assert not torch.equal(mlp(x), mlp(x))


# ---------------------------------------------------------------------- DeepFM


def manual_deepfm_logit(model: DeepFM, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
    """First-order + dense linear + FM + MLP from the model's weights, without its forward: ``(B,)``."""
    offsets = torch.tensor([0, *itertools.accumulate(CARDINALITIES)][:-1])
    rows = sparse.long() + offsets
    first_order = model.linear.categorical.table.weight[rows].sum(dim=(1, 2))
    embeddings = model.embedding.table.weight[rows]  # (B, F, D)
    fm = brute_force_fm(embeddings)
    deep_input = embeddings.flatten(1)
    logit = first_order + fm
    if dense.shape[1]:
        logit = logit + dense @ model.linear.dense.weight[0] + model.linear.dense.bias[0]
        deep_input = torch.cat([deep_input, dense], dim=1)
    return logit + model.mlp(deep_input)[:, 0]


@pytest.mark.parametrize("num_dense", [2, 0])
def test_deepfm_logit_is_sum_of_its_parts(num_dense):
    torch.manual_seed(0)
    model = DeepFM(spec(num_dense), embedding_dim=4, hidden_units=[8, 8]).double()
    # The first-order table starts at zero; give it values so that its term is checked too.
    nn.init.normal_(model.linear.categorical.table.weight)
    dense = torch.randn(10, num_dense, dtype=torch.float64)
    sparse = random_ids(10)
    out = model(dense, sparse)
    assert out.shape == (10,)
    assert (model.linear.dense is None) == (num_dense == 0)
    torch.testing.assert_close(out, manual_deepfm_logit(model, dense, sparse))


def test_deepfm_mlp_input_width():
    model = DeepFM(spec(num_dense=2), embedding_dim=4, hidden_units=[8])
    assert model.mlp.layers[0].in_features == 3 * 4 + 2
    model = DeepFM(spec(num_dense=0), embedding_dim=4, hidden_units=[8])
    assert model.mlp.layers[0].in_features == 3 * 4


def test_deepfm_needs_a_categorical_feature():
    with pytest.raises(ValueError, match="categorical"):
        DeepFM(InputSpec(("I1",), (), ()), embedding_dim=4, hidden_units=[8])


def test_deepfm_sparse_embeddings_give_sparse_gradients():
    model = DeepFM(spec(), embedding_dim=4, hidden_units=[8], sparse_embeddings=True)
    model(torch.randn(4, 2), random_ids(4)).sum().backward()
    assert model.embedding.table.weight.grad.is_sparse
    assert model.linear.categorical.table.weight.grad.is_sparse
    assert not model.mlp.layers[0].weight.grad.is_sparse


# A small model of each option of conf/model/, by option name.
BUILDS = {
    "deepfm": lambda **kw: DeepFM(spec(), embedding_dim=4, hidden_units=[8], **kw),
    "wide_deep": lambda **kw: WideAndDeep(spec(), embedding_dim=4, hidden_units=[8], **kw),
    "mmoe": lambda **kw: MMoE(spec(), embedding_dim=4, expert_units=[8], tower_units=[4], **kw),
    "ple": lambda **kw: PLE(spec(), embedding_dim=4, expert_units=[8], tower_units=[4], **kw),
    "esmm": lambda **kw: ESMM(spec(), embedding_dim=4, tower_units=[8], **kw),
    "dcnv2": lambda **kw: DCNv2(spec(), embedding_dim=4, low_rank=2, hidden_units=[8], **kw),
    "dlrm": lambda **kw: DLRM(spec(), embedding_dim=4, bottom_units=[4], top_units=[8], **kw),
    "dssm": lambda **kw: DSSM(spec(), ["I0", "C0"], ["I1", "C1", "C2"], embedding_dim=4, hidden_units=[8], **kw),
    "din": lambda **kw: DIN(HISTORY_SPEC, embedding_dim=4, attention_units=[4], hidden_units=[8], **kw),
}
# DIN reads a history of field C1's ids: 3 columns of ``lists``
HISTORY_SPEC = InputSpec(
    ("I0", "I1"), ("C0", "C1", "C2"), CARDINALITIES, (ListField("history", "sequence", 3, "mean", 0, 5, "C1"),)
)


def inputs(option: str, batch: int = 4) -> tuple[torch.Tensor, ...]:
    """A batch of random inputs of ``BUILDS[option]``: dense, sparse and, for DIN, a history."""
    dense, sparse = torch.randn(batch, 2), random_ids(batch)
    if option != "din":
        return dense, sparse
    return dense, sparse, torch.tensor([[1, 4, -1], [-1, -1, -1], [0, 0, 0], [2, -1, -1]][:batch], dtype=torch.int32)


def test_there_is_a_model_of_each_conf_option(compose_train):
    assert sorted(BUILDS) == options("model")
    for option, build in BUILDS.items():
        assert compose_train(f"model={option}").model._target_ == f"easyrec.models.{type(build()).__name__}"


@pytest.mark.parametrize("option", options("model"))
def test_every_model_regularizes_every_table_it_looks_up(option):
    build = BUILDS[option]
    torch.manual_seed(0)
    model = build(embedding_regularization=0.1)
    model(*inputs(option))
    tables = [m for m in model.modules() if isinstance(m, FieldEmbedding)]
    penalties = [m.take_penalty() for m in tables]
    assert tables and all(p is not None for p in penalties)  # first-order weights start at 0: so do their penalties
    assert sum(penalties).item() > 0
    assert all(m.l2 == 0 for m in build().modules() if isinstance(m, FieldEmbedding))  # off by default


def test_kernel_penalty_is_half_l2_times_the_squares_of_the_linear_kernels_only():
    """EasyRec's l2_regularization (tf.nn.l2_loss of each dense kernel): l2·ΣW²/2, gradient l2·W on the kernels and
    nothing on biases, norms or embedding tables."""
    model = nn.Sequential(nn.Embedding(4, 2), nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
        model[3].weight.copy_(torch.tensor([[3.0, 0.5]]))
    penalty = KernelPenalty(model, l2=0.1)
    value = penalty()
    assert value.item() == pytest.approx(0.1 * (1 + 4 + 1 + 9 + 0.25) / 2)
    value.backward()
    torch.testing.assert_close(model[1].weight.grad, 0.1 * model[1].weight.detach())
    torch.testing.assert_close(model[3].weight.grad, 0.1 * model[3].weight.detach())
    assert all(p.grad is None for p in (model[0].weight, model[1].bias, model[2].weight, model[2].bias, model[3].bias))
    with pytest.raises(ValueError, match="l2=0.0: must be > 0"):
        KernelPenalty(model, 0.0)


@pytest.mark.parametrize("option", options("model"))
def test_every_model_penalises_the_kernels_of_every_dense_layer_when_asked(option):
    build = BUILDS[option]
    torch.manual_seed(0)
    assert l2_regularization(build()) == 0  # off by default
    model = build(l2_regularization=0.1)
    penalty = KernelPenalty.of(model, l2_regularization(model))
    linear = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    linear += [w for m in model.modules() if isinstance(m, Experts) for w in m.weights]  # stacked expert kernels
    assert len(linear) >= 2 and [id(w) for w in penalty.kernels] == [id(w) for w in linear]
    tables = {id(m.table.weight) for m in model.modules() if isinstance(m, FieldEmbedding)}
    assert tables and not tables & {id(w) for w in penalty.kernels}
    assert penalty().item() == pytest.approx(0.05 * sum(float(w.square().sum()) for w in linear), rel=1e-6)


@pytest.mark.parametrize("num_dense", [2, 0])
def test_deepfm_learns_a_separable_problem(num_dense):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    sparse = random_ids(256, generator=generator)
    dense = torch.randn(256, num_dense, generator=generator)
    # Clicked iff field 1's id is in {0, 1} or field 0's id is 2: separable from the first-order weights.
    labels = ((sparse[:, 1] < 2) | (sparse[:, 0] == 2)).float()
    model = DeepFM(spec(num_dense), embedding_dim=4, hidden_units=[16])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = nn.functional.binary_cross_entropy_with_logits(model(dense, sparse), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 < losses[0]
    assert torch.equal((model(dense, sparse) > 0).float(), labels)
