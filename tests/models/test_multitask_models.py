"""MixtureOfExperts, ExtractionLayer, MMoE, PLE and ESMM: shapes, gates, task separation, the ESMM product identity,
and training."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from easyrec.data.features import InputSpec
from easyrec.models.esmm import ESMM, product_logit
from easyrec.models.mmoe import MMoE
from easyrec.models.ple import PLE
from easyrec.modules import MLP
from easyrec.modules.experts import Experts, ExtractionLayer, MixtureOfExperts

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: as fast, and not starved beside other jobs

INPUTS = InputSpec(("I0", "I1"), ("C0", "C1", "C2"), (3, 5, 2))


def batch(size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``dense (size, 2)``, ``sparse (size, 3) int32`` within INPUTS' cardinalities."""
    generator = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, c, (size,), generator=generator) for c in INPUTS.cardinalities], dim=1)
    return torch.randn(size, 2, generator=generator), sparse.to(torch.int32)


# ---------------------------------------------------------------------- MixtureOfExperts


def test_mixture_shapes_and_gates_sum_to_one():
    torch.manual_seed(0)
    moe = MixtureOfExperts(in_features=6, num_experts=3, expert_units=[8, 5], num_tasks=2)
    x = torch.randn(4, 6)
    assert moe(x).shape == (4, 2, 5)
    gates = moe.gate_weights(x)
    assert gates.shape == (4, 2, 3)
    assert (gates >= 0).all()
    torch.testing.assert_close(gates.sum(dim=-1), torch.ones(4, 2))


def test_mixture_is_the_gate_weighted_sum_of_the_experts():
    torch.manual_seed(0)
    moe = MixtureOfExperts(in_features=6, num_experts=3, expert_units=[4], num_tasks=2)
    x = torch.randn(4, 6)
    experts = moe.experts(x)  # (4, 3, 4), after a ReLU
    assert (experts >= 0).all()
    gates = moe.gate_weights(x)
    for t in range(2):
        expected = sum(gates[:, t, e : e + 1] * experts[:, e] for e in range(3))
        torch.testing.assert_close(moe(x)[:, t], expected)


def separate_mlps(experts: Experts) -> list[torch.nn.Sequential]:
    """Expert e of ``experts`` as its own ``MLP -> ReLU`` (the layout before the experts were stacked)."""
    units = [w.shape[2] for w in experts.weights]
    mlps = []
    for e in range(experts.num_experts):
        mlp = MLP(experts.weights[0].shape[1], units[:-1], units[-1])
        for linear, weight, bias in zip(mlp.layers[::2], experts.weights, experts.biases, strict=True):
            set_linear(linear, weight[e].T.tolist(), bias[e, 0].tolist())
        mlps.append(torch.nn.Sequential(mlp, torch.nn.ReLU()))
    return mlps


def test_stacked_experts_are_separate_mlps():
    """One batched product per layer computes what E separate ``MLP -> ReLU`` compute, on one shared input and on one
    input per expert; the kernels start Glorot-normal (std sqrt(2 / (in + out))) and the biases at zero."""
    torch.manual_seed(0)
    experts = Experts(in_features=6, num_experts=3, expert_units=[8, 5])
    with torch.no_grad():
        for bias in experts.biases:
            bias.normal_()
    mlps = separate_mlps(experts)
    x = torch.randn(4, 6)
    torch.testing.assert_close(experts(x), torch.stack([mlp(x) for mlp in mlps], dim=1))
    per_expert = torch.randn(3, 4, 6)
    torch.testing.assert_close(experts(per_expert), torch.stack([mlp(per_expert[e]) for e, mlp in enumerate(mlps)], 1))
    assert [tuple(w.shape) for w in experts.weights] == [(3, 6, 8), (3, 8, 5)]
    wide = Experts(in_features=300, num_experts=8, expert_units=[500])
    assert wide.weights[0].std().item() == pytest.approx((2 / 800) ** 0.5, rel=0.02)
    assert not Experts(4, 2, [3]).biases[0].any()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_experts": 0}, "num_experts=0: must be >= 1"),
        ({"expert_units": []}, "expert_units=[]: must be a non-empty list of widths > 0"),
        ({"expert_units": [8, 0]}, "expert_units=[8, 0]: must be a non-empty list of widths > 0"),
        ({"num_tasks": 0}, "num_tasks=0: must be >= 1"),
    ],
)
def test_mixture_refuses_bad_arguments(kwargs, message):
    arguments = {"in_features": 4, "num_experts": 2, "expert_units": [4], "num_tasks": 2} | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        MixtureOfExperts(**arguments)


# ---------------------------------------------------------------------- ExtractionLayer


def set_linear(layer: torch.nn.Linear, weight: list[list[float]], bias: list[float]) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def test_extraction_layer_by_hand():
    """Tang et al. 2020 (CGC, PLE), one one-unit expert per task, one shared expert, one example: task t's experts
    read x_t, the shared ones x_s; y_t = softmax(W_t x_t)·[E_t(x_t), E_s(x_s)],
    y_s = softmax(W_s x_s)·[E_1(x_1), E_2(x_2), E_s(x_s)]."""
    level = ExtractionLayer(in_features=2, num_tasks=2, num_task_experts=1, num_shared_experts=1, expert_units=[1])
    with (
        torch.no_grad()
    ):  # experts [E_1, E_2, E_s]: E_1(x) = relu(x[0]), E_2(x) = relu(x[1]), E_s(x) = relu(2x[0] + 4x[1])
        level.experts.weights[0].copy_(torch.tensor([[[1.0], [0.0]], [[0.0], [1.0]], [[2.0], [4.0]]]))
    set_linear(level.task_gates[0], [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])  # logits x_1
    set_linear(level.task_gates[1], [[0.0, 0.0], [0.0, 0.0]], [math.log(3), 0.0])  # weights [3/4, 1/4]
    set_linear(level.shared_gate, [[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]], [0.0, 0.0, 0.0])  # logits [2 x[0], 0, 2 x[1]]
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]]])  # [x_1, x_2, x_s]
    # E_1(x_1) = 1, E_2(x_2) = relu(-1) = 0, E_s(x_s) = 3
    e = math.e
    y_1 = e / (e + e**2) * 1 + e**2 / (e + e**2) * 3  # softmax([1, 2]) · [1, 3]
    y_2 = 3 / 4 * 0 + 1 / 4 * 3
    y_s = (e * 1 + 1 * 0 + e * 3) / (2 * e + 1)  # softmax([1, 0, 1]) · [1, 0, 3]
    torch.testing.assert_close(level(x), torch.tensor([[[y_1], [y_2], [y_s]]]))
    level.shared_gate = None  # the last level: the task outputs only
    torch.testing.assert_close(level(x), torch.tensor([[[y_1], [y_2]]]))
    same = x[:, 2]  # one input for all (the first level): x_1 = x_2 = x_s
    torch.testing.assert_close(level(same), level(same.unsqueeze(1).expand(-1, 3, -1)))


def test_extraction_layer_shapes_and_gate_widths():
    level = ExtractionLayer(in_features=6, num_tasks=3, num_task_experts=2, num_shared_experts=4, expert_units=[8, 5])
    assert level(torch.randn(4, 4, 6)).shape == (4, 4, 5)
    assert [gate.out_features for gate in level.task_gates] == [6, 6, 6]
    assert level.shared_gate.out_features == 3 * 2 + 4
    last = ExtractionLayer(6, 3, 2, 4, [8, 5], shared_gate=False)
    assert last(torch.randn(4, 4, 6)).shape == (4, 3, 5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_tasks": 0}, "num_tasks=0: must be >= 1"),
        ({"num_task_experts": 0}, "num_task_experts=0: must be >= 1"),
        ({"num_shared_experts": 0}, "num_shared_experts=0: must be >= 1"),
        ({"expert_units": []}, "expert_units=[]: must be a non-empty list of widths > 0"),
    ],
)
def test_extraction_layer_refuses_bad_arguments(kwargs, message):
    arguments = {"in_features": 4, "num_tasks": 2, "num_task_experts": 1, "num_shared_experts": 1, "expert_units": [4]}
    with pytest.raises(ValueError, match=re.escape(message)):
        ExtractionLayer(**(arguments | kwargs))


# ---------------------------------------------------------------------- MMoE


@pytest.mark.parametrize("task_outputs,shape", [((1, 1), (8, 2)), ((1, 3), (8, 4)), ((1,), (8,)), ((2,), (8, 2))])
def test_mmoe_output_shape(task_outputs, shape):
    torch.manual_seed(0)
    model = MMoE(INPUTS, task_outputs, embedding_dim=4, num_experts=3, expert_units=[8], tower_units=[4])
    assert model(*batch()).shape == shape
    assert len(model.towers) == len(task_outputs)


def test_mmoe_without_dense_features():
    inputs = InputSpec((), ("C0",), (4,))
    model = MMoE(inputs, (1, 1), embedding_dim=4, expert_units=[8], tower_units=[])
    assert model(torch.zeros(3, 0), torch.tensor([[0], [1], [3]], dtype=torch.int32)).shape == (3, 2)


def test_mmoe_task_output_depends_on_its_own_tower_only():
    torch.manual_seed(0)
    model = MMoE(INPUTS, (1, 3), embedding_dim=4, num_experts=3, expert_units=[8], tower_units=[4])
    dense, sparse = batch()
    columns = {0: slice(0, 1), 1: slice(1, 4)}
    for task, other in ((0, 1), (1, 0)):
        model.zero_grad(set_to_none=True)
        model(dense, sparse)[:, columns[task]].sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.towers[task].parameters())
        assert all(p.grad is None or not p.grad.any() for p in model.towers[other].parameters())
        assert model.experts.gate.weight.grad is not None  # the shared part learns from every task


def test_mmoe_sparse_embeddings():
    model = MMoE(INPUTS, embedding_dim=4, expert_units=[8], sparse_embeddings=True)
    model(*batch()).sum().backward()
    assert model.features.embedding.table.weight.grad.is_sparse


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"task_outputs": ()}, "task_outputs=(): must not be empty"),
        ({"task_outputs": (1, 0)}, "task_outputs=(1, 0): every element must be > 0"),
        ({"tower_units": [4, 0]}, "tower_units=[4, 0]: every element must be > 0"),
        ({"dropout": 1.0}, "dropout=1.0: must be in [0, 1)"),
        ({"embedding_dim": 0}, "embedding_dim=0: must be > 0"),
        ({"num_experts": 0}, "num_experts=0: must be >= 1"),
        ({"expert_units": []}, "expert_units=[]: must not be empty"),
    ],
)
def test_mmoe_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MMoE(INPUTS, **kwargs)


def test_mmoe_refuses_inputs_without_features():
    with pytest.raises(ValueError, match="no features"):
        MMoE(InputSpec((), (), ()))


# ---------------------------------------------------------------------- PLE


@pytest.mark.parametrize("task_outputs,shape", [((1, 1), (8, 2)), ((1, 3), (8, 4)), ((1,), (8,)), ((1, 1, 1), (8, 3))])
@pytest.mark.parametrize("num_levels", [1, 3])
def test_ple_output_shape(task_outputs, shape, num_levels):
    torch.manual_seed(0)
    model = PLE(INPUTS, task_outputs, embedding_dim=4, num_levels=num_levels, expert_units=[8], tower_units=[4])
    assert model(*batch()).shape == shape
    assert len(model.levels) == num_levels
    assert [level.shared_gate is not None for level in model.levels] == [True] * (num_levels - 1) + [False]


def test_ple_levels_feed_each_task_its_own_output():
    """Level 2's experts of task t read level 1's y_t: task 0's logit reaches task 0's experts and the shared ones at
    every level, task 1's experts of level 1 through the shared gate only, never task 1's gates nor its last experts."""
    torch.manual_seed(0)
    model = PLE(INPUTS, (1, 1), embedding_dim=4, num_levels=2, expert_units=[8], tower_units=[4])
    model(*batch())[:, 0].sum().backward()

    def learns(module: torch.nn.Module) -> bool:
        return all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    def untouched(*modules: torch.nn.Module) -> bool:
        return all(p.grad is None or not p.grad.any() for module in modules for p in module.parameters())

    def experts_learn(level: ExtractionLayer) -> list[bool]:
        """Per expert (task 0's 2, task 1's 2, the 2 shared): whether every stacked parameter of it has a gradient."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in level.experts.parameters()]
        return [all(g[e].abs().sum() > 0 for g in grads) for e in range(level.experts.num_experts)]

    first, last = model.levels
    assert experts_learn(last) == [True, True, False, False, True, True] and learns(model.towers[0])
    # task 1's experts of level 1 learn through level 1's shared gate into level 2's shared experts
    assert experts_learn(first) == [True] * 6 and learns(first.shared_gate)
    assert untouched(last.task_gates[1], first.task_gates[1], model.towers[1])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"task_outputs": ()}, "task_outputs=(): must not be empty"),
        ({"num_levels": 0}, "num_levels=0: must be >= 1"),
        ({"num_task_experts": 0}, "num_task_experts=0: must be >= 1"),
        ({"num_shared_experts": 0}, "num_shared_experts=0: must be >= 1"),
        ({"expert_units": [8, 0]}, "expert_units=[8, 0]: every element must be > 0"),
        ({"tower_units": [0]}, "tower_units=[0]: every element must be > 0"),
        ({"dropout": 1.0}, "dropout=1.0: must be in [0, 1)"),
    ],
)
def test_ple_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PLE(INPUTS, **kwargs)


# ---------------------------------------------------------------------- ESMM product logit


def test_product_logit_is_the_logit_of_the_product():
    a = torch.linspace(-30, 30, 61, dtype=torch.float64)[:, None].expand(61, 61)
    b = a.T
    logit = product_logit(a, b)
    torch.testing.assert_close(torch.sigmoid(logit), torch.sigmoid(a) * torch.sigmoid(b), rtol=1e-12, atol=0)
    # and on the logit scale, where p is far from 0 and 1: log p - log(1 - p) directly
    p = torch.sigmoid(a) * torch.sigmoid(b)
    mid = (p > 1e-6) & (p < 1 - 1e-6)
    torch.testing.assert_close(logit[mid], torch.logit(p)[mid])


@pytest.mark.parametrize("a,b", [(40.0, 40.0), (-40.0, -40.0), (40.0, -40.0), (-40.0, 40.0), (200.0, 200.0)])
def test_product_logit_extreme_logits_are_finite_with_finite_gradients(a, b):
    a = torch.tensor([a], requires_grad=True)
    b = torch.tensor([b], requires_grad=True)
    logit = product_logit(a, b)
    assert torch.isfinite(logit).all()
    torch.testing.assert_close(torch.sigmoid(logit), torch.sigmoid(a) * torch.sigmoid(b))
    for label in (0.0, 1.0):
        a.grad = b.grad = None
        F.binary_cross_entropy_with_logits(product_logit(a, b), torch.tensor([label])).backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_product_logit_both_large():
    # p = σ(a)σ(b) ≈ 1 − e^−a − e^−b, so logit(p) ≈ a − log 2 for a = b: exact where float32 rounds p to 1
    assert product_logit(torch.tensor(40.0), torch.tensor(40.0)).item() == pytest.approx(40 - 0.6931472, abs=1e-5)
    assert product_logit(torch.tensor(-40.0), torch.tensor(-40.0)).item() == pytest.approx(-80.0, abs=1e-5)


# ---------------------------------------------------------------------- ESMM


def test_esmm_returns_ctr_and_ctcvr_logits():
    torch.manual_seed(0)
    model = ESMM(INPUTS, embedding_dim=4, tower_units=[8, 4])
    dense, sparse = batch()
    logits = model(dense, sparse)
    assert logits.shape == (8, 2)
    features = model.features(dense, sparse)
    torch.testing.assert_close(logits[:, 0], model.ctr_tower(features).squeeze(1))
    cvr = model.cvr_logits(dense, sparse)
    assert cvr.shape == (8,)
    torch.testing.assert_close(torch.sigmoid(logits[:, 1]), torch.sigmoid(logits[:, 0]) * torch.sigmoid(cvr))


def test_esmm_sparse_embeddings():
    model = ESMM(INPUTS, embedding_dim=4, tower_units=[4], sparse_embeddings=True)
    model(*batch()).sum().backward()
    assert model.features.embedding.table.weight.grad.is_sparse


@pytest.mark.parametrize("task_outputs", [(1,), (1, 1, 1), (1, 3), (2, 1)])
def test_esmm_needs_two_single_logit_tasks(task_outputs):
    message = f"ESMM has two tasks (ctr, ctcvr) of one logit each; got task_outputs={task_outputs}"
    with pytest.raises(ValueError) as error:
        ESMM(INPUTS, task_outputs)
    assert str(error.value) == message


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tower_units": [0]}, "tower_units=[0]: every element must be > 0"),
        ({"dropout": -0.1}, "dropout=-0.1: must be in [0, 1)"),
        ({"embedding_dim": -1}, "embedding_dim=-1: must be > 0"),
    ],
)
def test_esmm_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ESMM(INPUTS, **kwargs)


# ---------------------------------------------------------------------- training


def click_conversion_data(size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dense, sparse, labels (size, 2)``: [click, click and conversion], both driven by the features."""
    dense, sparse = batch(size, seed=1)
    generator = torch.Generator().manual_seed(2)
    click = torch.bernoulli(torch.sigmoid(2 * dense[:, 0] + sparse[:, 1].float() - 2), generator=generator)
    convert = torch.bernoulli(torch.sigmoid(2 * dense[:, 1] - 1), generator=generator)
    return dense, sparse, torch.stack([click, click * convert], dim=1)


@pytest.mark.parametrize("name", ["mmoe", "ple", "esmm"])
def test_a_few_adam_steps_reduce_the_bce_of_both_tasks(name):
    torch.manual_seed(0)
    if name == "mmoe":
        model = MMoE(INPUTS, (1, 1), embedding_dim=4, num_experts=2, expert_units=[16], tower_units=[8])
    elif name == "ple":
        model = PLE(INPUTS, (1, 1), embedding_dim=4, num_task_experts=1, num_shared_experts=1, expert_units=[16])
    else:
        model = ESMM(INPUTS, embedding_dim=4, tower_units=[16, 8])
    dense, sparse, labels = click_conversion_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        loss = F.binary_cross_entropy_with_logits(model(dense, sparse), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    with torch.no_grad():
        per_task = F.binary_cross_entropy_with_logits(model(dense, sparse), labels, reduction="none").mean(0)
    base = F.binary_cross_entropy(labels.mean(0).expand_as(labels), labels, reduction="none").mean(0)
    assert (per_task < base).all()  # each task beats predicting its base rate
