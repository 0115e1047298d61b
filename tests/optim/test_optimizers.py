"""Ftrl, Lamb, LazyAdam, MomentumW, TFRMSProp and RowWiseAdagrad against hand-computed numbers and numpy references."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from easyrec.optim import Ftrl, Lamb, LazyAdam, MomentumW, RowWiseAdagrad, TFRMSProp

# ---------------------------------------------------------------------- numpy reference, one step each


def np_ftrl_step(w, n, z, g, lr, lr_power=-0.5, l1=0.0, l2=0.0, l2_shrinkage=0.0):
    """TF ApplyFtrlV2 -> (w, n, z); the accumulator adds the raw g²."""
    p = -lr_power
    n_new = n + g * g
    z = z + g + 2 * l2_shrinkage * w - (n_new**p - n**p) / lr * w
    w = np.where(np.abs(z) > l1, (np.sign(z) * l1 - z) / (n_new**p / lr + 2 * l2), 0.0)
    return w, n_new, z


def np_adam_step(w, m, v, g, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """TF Adam, epsilon-hat form -> (w, m, v)."""
    lr_t = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return w - lr_t * m / (np.sqrt(v) + eps), m, v


def np_lamb_step(w, m, v, g, t, lr, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
    """tf-addons LAMB -> (w, m, v)."""
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    r = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps) + weight_decay * w
    w_norm, r_norm = np.linalg.norm(w), np.linalg.norm(r)
    ratio = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0
    return w - lr * ratio * r, m, v


def np_rmsprop_step(w, ms, mom, g, lr, decay=0.9, momentum=0.9, eps=1.0):
    """TF RMSProp -> (w, ms, mom)."""
    ms = decay * ms + (1 - decay) * g * g
    mom = momentum * mom + lr * g / np.sqrt(ms + eps)
    return w - mom, ms, mom


# ---------------------------------------------------------------------- helpers


def dense_steps(optimizer_cls: type[torch.optim.Optimizer], w0, grads, **kwargs) -> tuple[list[np.ndarray], dict]:
    """Weights after each step of ``optimizer_cls`` on one float64 parameter fed ``grads``, and its state."""
    param = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    optimizer = optimizer_cls([param], **kwargs)
    weights = []
    for grad in grads:
        param.grad = torch.tensor(grad, dtype=torch.float64)
        optimizer.step()
        weights.append(param.detach().numpy().copy())
    return weights, optimizer.state[param]


def embedding_step(embedding: nn.Embedding, optimizer: torch.optim.Optimizer, ids: list[int], upstream) -> None:
    """One step with ``d loss / d embedding(ids) = upstream (len(ids), D)``: a sparse grad on rows ``ids``."""
    optimizer.zero_grad()
    (embedding(torch.tensor(ids)) * torch.as_tensor(upstream)).sum().backward()
    assert embedding.weight.grad.is_sparse
    optimizer.step()


def make_embedding(seed: int = 0) -> nn.Embedding:
    torch.manual_seed(seed)
    return nn.Embedding(10, 3, sparse=True, dtype=torch.float64)


def as_np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy().copy()


RNG = np.random.default_rng(7)
W0 = RNG.normal(size=(2, 3))
GRADS = [RNG.normal(size=(2, 3)) for _ in range(3)]
UPSTREAM_1 = RNG.normal(size=(2, 3))  # batch 1 looks up rows [1, 4]
UPSTREAM_2 = RNG.normal(size=(2, 3))  # batch 2 looks up rows [4, 7]
UNTOUCHED = [0, 2, 3, 5, 6, 8, 9]

# ---------------------------------------------------------------------- Ftrl


def test_ftrl_hand_computed_steps():
    # n: 0 -> 9 -> 25; z = 3 − (3−0)·0.5 = 1.5, w = −1.5/3; z = 1.5 + 4 − (5−3)·(−0.5) = 6.5, w = −6.5/5.
    weights, state = dense_steps(Ftrl, [0.5], [[3.0], [4.0]], lr=1.0, initial_accumulator_value=0.0)
    torch.testing.assert_close(np.array(weights), np.array([[-0.5], [-1.3]]))
    torch.testing.assert_close(as_np(state["accumulator"]), np.array([25.0]))
    torch.testing.assert_close(as_np(state["linear"]), np.array([6.5]))


def test_ftrl_accumulates_the_raw_gradient_with_l2_shrinkage():
    # tensorflow#18317's case: g̃ = 0.1 + 2·0.5·1 = 1.1, n = 0.01 (g², not g̃² = 1.21),
    # z = 1.1 − (0.1 − 0)/3·1 = 1.0667, w = −z / (0.1/3) = −32.
    weights, state = dense_steps(Ftrl, [1.0], [[0.1]], lr=3.0, initial_accumulator_value=0.0, l2_shrinkage=0.5)
    torch.testing.assert_close(weights[0], np.array([-32.0]))
    torch.testing.assert_close(as_np(state["accumulator"]), np.array([0.01]))
    torch.testing.assert_close(as_np(state["linear"]), np.array([1.1 - 0.1 / 3]))


def test_ftrl_fixed_learning_rate_is_dual_averaging():
    # lr_power = 0: n^0 = 1, so z = Σg and w = −lr·Σg.
    weights, _ = dense_steps(Ftrl, [0.7], [[1.0], [3.0]], lr=0.5, lr_power=0.0)
    torch.testing.assert_close(np.array(weights), np.array([[-0.5], [-2.0]]))


def test_ftrl_l1_zeroes_small_weights_exactly():
    # element 0: z = 3 − 3·0.5 = 1.5 <= l1 -> 0; element 1: n = 100, z = 10 − 10·0.5 = 5 -> (2 − 5)/10.
    weights, _ = dense_steps(Ftrl, [0.5, 0.5], [[3.0, 10.0]], lr=1.0, initial_accumulator_value=0.0, l1=2.0)
    assert weights[0][0] == 0.0
    torch.testing.assert_close(weights[0], np.array([0.0, -0.3]))
    heavy, _ = dense_steps(Ftrl, W0, GRADS, l1=100.0)
    assert all(np.all(w == 0.0) for w in heavy)


@pytest.mark.parametrize(
    "hyper",
    [
        {"lr": 0.05},
        {"lr": 0.1, "l1": 0.05, "l2": 0.1},
        {"lr": 0.1, "l1": 0.01, "l2": 0.2, "l2_shrinkage": 0.05},
        {"lr": 0.2, "lr_power": -0.3, "l2": 0.1},
        {"lr": 0.2, "lr_power": -1.0, "initial_accumulator_value": 0.5, "l2_shrinkage": 0.1},
        {"lr": 0.2, "lr_power": 0.0, "l1": 0.1},
    ],
    ids=["plain", "l1_l2", "l2_shrinkage", "lr_power_-0.3", "lr_power_-1", "lr_power_0"],
)
def test_ftrl_matches_numpy(hyper):
    init = hyper.pop("initial_accumulator_value", 0.1)
    weights, state = dense_steps(Ftrl, W0, GRADS, initial_accumulator_value=init, **hyper)
    w, n, z = W0, np.full_like(W0, init), np.zeros_like(W0)
    for got, g in zip(weights, GRADS, strict=True):
        w, n, z = np_ftrl_step(w, n, z, g, **hyper)
        torch.testing.assert_close(got, w)
    torch.testing.assert_close(as_np(state["accumulator"]), n)
    torch.testing.assert_close(as_np(state["linear"]), z)


def test_ftrl_sparse_updates_only_the_looked_up_rows():
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = Ftrl(embedding.parameters(), lr=0.1, l1=0.01, l2=0.1)
    hyper = {"lr": 0.1, "l1": 0.01, "l2": 0.1}
    w, n, z = w0.copy(), np.full_like(w0, 0.1), np.zeros_like(w0)

    embedding_step(embedding, optimizer, [1, 4], UPSTREAM_1)
    w[[1, 4]], n[[1, 4]], z[[1, 4]] = np_ftrl_step(w[[1, 4]], n[[1, 4]], z[[1, 4]], UPSTREAM_1, **hyper)
    embedding_step(embedding, optimizer, [4, 7], UPSTREAM_2)
    w[[4, 7]], n[[4, 7]], z[[4, 7]] = np_ftrl_step(w[[4, 7]], n[[4, 7]], z[[4, 7]], UPSTREAM_2, **hyper)

    state = optimizer.state[embedding.weight]
    torch.testing.assert_close(as_np(embedding.weight), w)
    torch.testing.assert_close(as_np(state["accumulator"]), n)
    torch.testing.assert_close(as_np(state["linear"]), z)
    # Rows never looked up: weights bit-identical, state still at its initial values.
    assert np.array_equal(as_np(embedding.weight)[UNTOUCHED], w0[UNTOUCHED])
    assert np.all(as_np(state["accumulator"])[UNTOUCHED] == 0.1)
    assert np.all(as_np(state["linear"])[UNTOUCHED] == 0.0)


def test_ftrl_sparse_duplicate_rows_are_summed_first():
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = Ftrl(embedding.parameters(), lr=0.1)
    upstream = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0], [0.2, 0.2, 0.2]])
    embedding_step(embedding, optimizer, [4, 1, 4], upstream)
    # Row 4 gets one step with the summed gradient; two steps (or the last one only) would differ since n grows by g².
    w4, _, _ = np_ftrl_step(w0[4], np.full(3, 0.1), np.zeros(3), upstream[0] + upstream[2], lr=0.1)
    w1, _, _ = np_ftrl_step(w0[1], np.full(3, 0.1), np.zeros(3), upstream[1], lr=0.1)
    torch.testing.assert_close(as_np(embedding.weight)[4], w4)
    torch.testing.assert_close(as_np(embedding.weight)[1], w1)
    torch.testing.assert_close(
        as_np(optimizer.state[embedding.weight]["accumulator"])[4], 0.1 + (upstream[0] + upstream[2]) ** 2
    )


# ---------------------------------------------------------------------- LazyAdam


def test_lazy_adam_hand_computed_first_step_uses_epsilon_hat():
    # lr_t = 0.1·√(1 − 0.999)/(1 − 0.9); m = 0.2, v = 0.004; w = −lr_t·m/(√v + 1). torch.optim.Adam gives −0.1·2/3.
    weights, state = dense_steps(LazyAdam, [0.0], [[2.0]], lr=0.1, eps=1.0)
    lr_t = 0.1 * math.sqrt(0.001) / 0.1
    torch.testing.assert_close(weights[0], np.array([-lr_t * 0.2 / (math.sqrt(0.004) + 1.0)]))
    torch.testing.assert_close(as_np(state["exp_avg"]), np.array([0.2]))
    torch.testing.assert_close(as_np(state["exp_avg_sq"]), np.array([0.004]))


def test_lazy_adam_constant_gradient_moves_lr_per_step_without_eps():
    # With g constant, the bias-corrected m/√v is sign(g) at every step, so each step moves exactly lr.
    weights, _ = dense_steps(LazyAdam, [1.0, -1.0], [[2.0, -0.5]] * 3, lr=0.1, eps=0.0)
    torch.testing.assert_close(np.array(weights), np.array([[0.9, -0.9], [0.8, -0.8], [0.7, -0.7]]))


def test_lazy_adam_dense_matches_tf_adam():
    hyper = {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-3}
    weights, state = dense_steps(LazyAdam, W0, GRADS, **hyper)
    w, m, v = W0, np.zeros_like(W0), np.zeros_like(W0)
    for t, (got, g) in enumerate(zip(weights, GRADS, strict=True), start=1):
        w, m, v = np_adam_step(w, m, v, g, t, lr=0.01, beta1=0.8, beta2=0.99, eps=1e-3)
        torch.testing.assert_close(got, w)
    torch.testing.assert_close(as_np(state["exp_avg"]), m)
    torch.testing.assert_close(as_np(state["exp_avg_sq"]), v)


def test_lazy_adam_sparse_updates_only_the_looked_up_rows_with_global_step():
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = LazyAdam(embedding.parameters(), lr=0.01)
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)

    embedding_step(embedding, optimizer, [1, 4], UPSTREAM_1)
    w[[1, 4]], m[[1, 4]], v[[1, 4]] = np_adam_step(w[[1, 4]], m[[1, 4]], v[[1, 4]], UPSTREAM_1, t=1, lr=0.01)
    # Row 7 is new at step 2 but is bias-corrected with t = 2; row 1 keeps its step-1 m, v (no decay).
    embedding_step(embedding, optimizer, [4, 7], UPSTREAM_2)
    w[[4, 7]], m[[4, 7]], v[[4, 7]] = np_adam_step(w[[4, 7]], m[[4, 7]], v[[4, 7]], UPSTREAM_2, t=2, lr=0.01)

    state = optimizer.state[embedding.weight]
    torch.testing.assert_close(as_np(embedding.weight), w)
    torch.testing.assert_close(as_np(state["exp_avg"]), m)
    torch.testing.assert_close(as_np(state["exp_avg_sq"]), v)
    assert np.array_equal(as_np(embedding.weight)[UNTOUCHED], w0[UNTOUCHED])
    assert np.all(as_np(state["exp_avg"])[UNTOUCHED] == 0.0)
    assert np.all(as_np(state["exp_avg_sq"])[UNTOUCHED] == 0.0)
    assert optimizer.param_groups[0]["step"] == 2


def test_lazy_adam_sparse_duplicate_rows_are_summed_first():
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = LazyAdam(embedding.parameters(), lr=0.01)
    upstream = np.array([[1.0, 2.0, -1.0], [0.5, -3.0, 2.0], [0.2, 0.2, 0.2]])
    embedding_step(embedding, optimizer, [4, 1, 4], upstream)
    g4 = upstream[0] + upstream[2]
    w4, m4, _ = np_adam_step(w0[4], np.zeros(3), np.zeros(3), g4, t=1, lr=0.01)
    torch.testing.assert_close(as_np(embedding.weight)[4], w4)
    torch.testing.assert_close(as_np(optimizer.state[embedding.weight]["exp_avg"])[4], m4)


def test_lazy_adam_updates_dense_and_sparse_parameters_together():
    embedding = make_embedding()
    dense = nn.Parameter(torch.tensor(W0))
    w0 = as_np(embedding.weight)
    optimizer = LazyAdam([embedding.weight, dense], lr=0.01)
    optimizer.zero_grad()
    (
        (embedding(torch.tensor([1, 4])) * torch.tensor(UPSTREAM_1)).sum() + (dense * torch.tensor(GRADS[0])).sum()
    ).backward()
    optimizer.step()
    rows, _, _ = np_adam_step(w0[[1, 4]], 0.0, 0.0, UPSTREAM_1, t=1, lr=0.01)
    full, _, _ = np_adam_step(W0, 0.0, 0.0, GRADS[0], t=1, lr=0.01)
    torch.testing.assert_close(as_np(embedding.weight)[[1, 4]], rows)
    torch.testing.assert_close(as_np(dense), full)
    assert np.array_equal(as_np(embedding.weight)[UNTOUCHED], w0[UNTOUCHED])


# ---------------------------------------------------------------------- Lamb


def test_lamb_trust_ratio_hand_computed():
    # Step 1 with eps = 0: m̂/√v̂ = sign(g) = [1, 1], so ratio = ‖[3, 4]‖/‖[1, 1]‖ = 5/√2.
    weights, _ = dense_steps(Lamb, [3.0, 4.0], [[0.5, 2.0]], lr=0.01, eps=0.0)
    torch.testing.assert_close(weights[0], np.array([3.0, 4.0]) - 0.01 * 5 / math.sqrt(2))


def test_lamb_trust_ratio_is_one_for_zero_weights():
    weights, _ = dense_steps(Lamb, [0.0, 0.0], [[0.5, -2.0]], lr=0.01, eps=0.0)
    torch.testing.assert_close(weights[0], np.array([-0.01, 0.01]))


def test_lamb_matches_numpy_with_weight_decay():
    weights, state = dense_steps(Lamb, W0, GRADS, lr=0.01, weight_decay=0.1)
    w, m, v = W0, np.zeros_like(W0), np.zeros_like(W0)
    for t, (got, g) in enumerate(zip(weights, GRADS, strict=True), start=1):
        w, m, v = np_lamb_step(w, m, v, g, t, lr=0.01, weight_decay=0.1)
        torch.testing.assert_close(got, w)
    torch.testing.assert_close(as_np(state["exp_avg_sq"]), v)


def test_lamb_rejects_sparse_gradients_before_changing_anything():
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = Lamb(embedding.parameters())
    with pytest.raises(RuntimeError, match="sparse gradients"):
        embedding_step(embedding, optimizer, [1, 4], UPSTREAM_1)
    assert np.array_equal(as_np(embedding.weight), w0)
    assert optimizer.param_groups[0]["step"] == 0


# ---------------------------------------------------------------------- TFRMSProp


def test_rmsprop_hand_computed_steps():
    # ms starts at 1: ms = 0.9·1 + 0.1·4 = 1.3, mom = 0.1·2/√2.3; ms = 0.9·1.3 + 0.4 = 1.57, mom = 0.9·mom + 0.2/√2.57.
    weights, state = dense_steps(TFRMSProp, [1.0], [[2.0], [2.0]], lr=0.1)
    mom1 = 0.2 / math.sqrt(2.3)
    mom2 = 0.9 * mom1 + 0.2 / math.sqrt(2.57)
    torch.testing.assert_close(np.array(weights), np.array([[1.0 - mom1], [1.0 - mom1 - mom2]]))
    torch.testing.assert_close(as_np(state["ms"]), np.array([1.57]))
    torch.testing.assert_close(as_np(state["mom"]), np.array([mom2]))


def test_rmsprop_mean_square_starts_at_one():
    _, state = dense_steps(TFRMSProp, [1.0, 2.0], [[0.0, 0.0]])
    torch.testing.assert_close(as_np(state["ms"]), np.array([0.9, 0.9]))


def test_rmsprop_matches_numpy():
    hyper = {"lr": 0.01, "decay": 0.8, "momentum": 0.5, "eps": 0.1}
    weights, _ = dense_steps(TFRMSProp, W0, GRADS, **hyper)
    w, ms, mom = W0, np.ones_like(W0), np.zeros_like(W0)
    for got, g in zip(weights, GRADS, strict=True):
        w, ms, mom = np_rmsprop_step(w, ms, mom, g, **hyper)
        torch.testing.assert_close(got, w)


def test_rmsprop_sparse_updates_only_the_looked_up_rows():
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = TFRMSProp(embedding.parameters(), lr=0.01)
    embedding_step(embedding, optimizer, [1, 4, 1], np.concatenate([UPSTREAM_1, UPSTREAM_2[:1]]))
    g = UPSTREAM_1.copy()
    g[0] += UPSTREAM_2[0]
    rows, ms, _ = np_rmsprop_step(w0[[1, 4]], 1.0, 0.0, g, lr=0.01)
    state = optimizer.state[embedding.weight]
    torch.testing.assert_close(as_np(embedding.weight)[[1, 4]], rows)
    torch.testing.assert_close(as_np(state["ms"])[[1, 4]], ms)
    assert np.array_equal(as_np(embedding.weight)[UNTOUCHED], w0[UNTOUCHED])
    assert np.all(as_np(state["ms"])[UNTOUCHED] == 1.0)
    assert np.all(as_np(state["mom"])[UNTOUCHED] == 0.0)


# ---------------------------------------------------------------------- MomentumW


def test_momentumw_hand_computed_steps():
    # a = 2, w = 1 − 0.01·1 − 0.1·2 = 0.79; a = 0.9·2 + 2 = 3.8, w = 0.79 − 0.01·0.79 − 0.1·3.8 = 0.4021
    weights, state = dense_steps(MomentumW, [1.0], [[2.0], [2.0]], lr=0.1, momentum=0.9, weight_decay=0.01)
    torch.testing.assert_close(np.array(weights), np.array([[0.79], [0.4021]]))
    torch.testing.assert_close(as_np(state["momentum_buffer"]), np.array([3.8]))


def test_momentumw_decay_is_not_scaled_by_the_learning_rate():
    # no gradient signal: w·(1 − wd)^k, the same at any lr
    for lr in (1e-4, 10.0):
        weights, _ = dense_steps(MomentumW, [2.0, -4.0], [[0.0, 0.0]] * 3, lr=lr, weight_decay=0.1)
        torch.testing.assert_close(weights[-1], np.array([2.0, -4.0]) * 0.9**3)


def test_momentumw_without_decay_is_torch_sgd_with_momentum():
    ours, _ = dense_steps(MomentumW, W0, GRADS, lr=0.05, momentum=0.8, weight_decay=0.0)
    torchs, _ = dense_steps(torch.optim.SGD, W0, GRADS, lr=0.05, momentum=0.8)
    torch.testing.assert_close(ours, torchs)


def test_momentumw_sparse_updates_and_decays_only_the_looked_up_rows():
    torch.sparse.check_sparse_tensor_invariants.disable()  # as the trainer does; silences torch's warning
    embedding = make_embedding()
    w0 = as_np(embedding.weight)
    optimizer = MomentumW(embedding.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    embedding_step(embedding, optimizer, [1, 4, 1], np.concatenate([UPSTREAM_1, UPSTREAM_2[:1]]))
    g = UPSTREAM_1.copy()
    g[0] += UPSTREAM_2[0]  # row 1 twice: one summed gradient, one decay
    torch.testing.assert_close(as_np(embedding.weight)[[1, 4]], w0[[1, 4]] * 0.99 - 0.1 * g)
    assert np.array_equal(as_np(embedding.weight)[UNTOUCHED], w0[UNTOUCHED])
    embedding_step(embedding, optimizer, [4, 7], UPSTREAM_2)  # row 1 keeps its momentum, unapplied
    buffer = as_np(optimizer.state[embedding.weight]["momentum_buffer"])
    torch.testing.assert_close(buffer[[1, 4, 7]], np.stack([g[0], 0.9 * g[1] + UPSTREAM_2[0], UPSTREAM_2[1]]))
    assert np.all(buffer[UNTOUCHED[1:]] == 0.0) and np.array_equal(as_np(embedding.weight)[0], w0[0])


# ---------------------------------------------------------------------- all five

ALL = [Ftrl, Lamb, LazyAdam, MomentumW, TFRMSProp]
SPARSE_CAPABLE = {Ftrl, LazyAdam, MomentumW, TFRMSProp}
TRAIN_LR = {Ftrl: 0.5, Lamb: 0.05, LazyAdam: 0.05, MomentumW: 0.5, TFRMSProp: 0.05}


@pytest.mark.parametrize(
    ("optimizer_cls", "kwargs", "message"),
    [
        (Ftrl, {"lr": -1}, "lr=-1: must be > 0"),
        (Ftrl, {"lr_power": 0.5}, "lr_power=0.5: must be <= 0"),
        (Ftrl, {"initial_accumulator_value": -0.1}, "initial_accumulator_value=-0.1: must be >= 0"),
        (Ftrl, {"l1": -1.0}, "l1=-1.0: must be >= 0"),
        (Ftrl, {"l2": -1.0}, "l2=-1.0: must be >= 0"),
        (Ftrl, {"l2_shrinkage": -1.0}, "l2_shrinkage=-1.0: must be >= 0"),
        (Lamb, {"lr": 0.0}, "lr=0.0: must be > 0"),
        (Lamb, {"betas": (0.9, 1.0)}, "betas=(0.9, 1.0): every element must be in [0, 1)"),
        (Lamb, {"eps": -1e-6}, "eps=-1e-06: must be >= 0"),
        (Lamb, {"weight_decay": -0.1}, "weight_decay=-0.1: must be >= 0"),
        (LazyAdam, {"lr": -1}, "lr=-1: must be > 0"),
        (LazyAdam, {"betas": (-0.1, 0.999)}, "betas=(-0.1, 0.999): every element must be in [0, 1)"),
        (LazyAdam, {"eps": -1.0}, "eps=-1.0: must be >= 0"),
        (TFRMSProp, {"lr": -1}, "lr=-1: must be > 0"),
        (TFRMSProp, {"decay": 1.0}, "decay=1.0: must be in [0, 1)"),
        (TFRMSProp, {"momentum": -0.1}, "momentum=-0.1: must be in [0, 1)"),
        (TFRMSProp, {"eps": -1.0}, "eps=-1.0: must be >= 0"),
        (MomentumW, {"lr": 0.0}, "lr=0.0: must be > 0"),
        (MomentumW, {"momentum": 1.0}, "momentum=1.0: must be in [0, 1)"),
        (MomentumW, {"weight_decay": -1e-6}, "weight_decay=-1e-06: must be >= 0"),
    ],
)
def test_invalid_arguments_raise(optimizer_cls, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        optimizer_cls([nn.Parameter(torch.zeros(2))], **kwargs)


class TinyLogisticRegression(nn.Module):
    """``logit = x·w + b + bias[category]``: a dense part and an embedding (sparse grads when ``sparse``)."""

    def __init__(self, sparse: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.category_bias = nn.Embedding(10, 1, sparse=sparse)

    def forward(self, features: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """``features (B, 4)``, ``categories (B,)`` -> ``logits (B,)``."""
        return (self.linear(features) + self.category_bias(categories)).squeeze(-1)


def logistic_data(n: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(n, 4, generator=generator)
    categories = torch.randint(0, 10, (n,), generator=generator)
    logits = features @ torch.tensor([1.5, -2.0, 0.5, 1.0]) + (categories.float() - 4.5) / 3
    labels = (torch.rand(n, generator=generator) < torch.sigmoid(logits)).float()
    return features, categories, labels


def train(optimizer_cls, steps: int) -> tuple[TinyLogisticRegression, torch.optim.Optimizer, list[float]]:
    torch.manual_seed(0)
    model = TinyLogisticRegression(sparse=optimizer_cls in SPARSE_CAPABLE)
    optimizer = optimizer_cls(model.parameters(), lr=TRAIN_LR[optimizer_cls])
    features, categories, labels = logistic_data()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(features, categories), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, optimizer, losses


@pytest.mark.parametrize("optimizer_cls", ALL, ids=lambda cls: cls.__name__)
def test_trains_a_tiny_logistic_regression(optimizer_cls):
    _, _, losses = train(optimizer_cls, steps=50)
    assert losses[-1] < 0.75 * losses[0], losses


@pytest.mark.parametrize("optimizer_cls", ALL, ids=lambda cls: cls.__name__)
def test_state_dict_round_trip_gives_identical_next_steps(optimizer_cls):
    model, optimizer, _ = train(optimizer_cls, steps=3)
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    resumed = TinyLogisticRegression(sparse=optimizer_cls in SPARSE_CAPABLE)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = optimizer_cls(resumed.parameters(), lr=TRAIN_LR[optimizer_cls])
    resumed_optimizer.load_state_dict(saved_optimizer)

    features, categories, labels = logistic_data()
    for net, opt in ((model, optimizer), (resumed, resumed_optimizer)):
        for _ in range(2):
            opt.zero_grad()
            nn.functional.binary_cross_entropy_with_logits(net(features, categories), labels).backward()
            opt.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer_cls", ALL, ids=lambda cls: cls.__name__)
def test_step_returns_the_closure_loss_and_uses_its_gradients(optimizer_cls):
    param = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = optimizer_cls([param], lr=0.1)

    def closure() -> float:
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss.item()

    assert optimizer.step(closure) == 5.0
    assert (param.detach() ** 2).sum().item() < 5.0


# ---------------------------------------------------------------------------------------------------- Adagrad
# optimizer=adagrad is torch.optim.Adagrad; these pin it to EasyRec's (TF's) update acc += g², w -= lr·g/√acc
# (torch adds eps=1e-10 to the denominator, below the tolerance here).


def test_adagrad_matches_the_tf_formula_on_hand_computed_numbers():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.Adagrad([w], lr=0.1, initial_accumulator_value=0.1)
    for grad in ([0.5, 0.0], [0.5, 1.0]):
        w.grad = torch.tensor(grad)
        optimizer.step()
    # step 1: acc = [0.35, 0.1], w = [1 - 0.05/√0.35, -2] = [0.9154846, -2]
    # step 2: acc = [0.6, 1.1], w = [0.9154846 - 0.05/√0.6, -2 - 0.1/√1.1] = [0.8509349, -2.0953463]
    torch.testing.assert_close(w.detach(), torch.tensor([0.8509349, -2.0953463]), rtol=0, atol=1e-6)
    torch.testing.assert_close(optimizer.state[w]["sum"], torch.tensor([0.6, 1.1]))


def test_sparse_adagrad_leaves_untouched_rows_and_their_accumulators_alone():
    torch.sparse.check_sparse_tensor_invariants.disable()  # as the trainer does; silences torch's warning
    torch.manual_seed(0)
    table = torch.nn.Embedding(10, 3, sparse=True)
    before = table.weight.detach().clone()
    optimizer = torch.optim.Adagrad(table.parameters(), lr=0.1, initial_accumulator_value=0.1)
    table(torch.tensor([1, 4, 4])).sum().backward()
    optimizer.step()
    untouched = [r for r in range(10) if r not in (1, 4)]
    torch.testing.assert_close(table.weight.detach()[untouched], before[untouched], rtol=0, atol=0)
    assert torch.equal(optimizer.state[table.weight]["sum"][untouched], torch.full((8, 3), 0.1))
    # row 4 was looked up twice: one gradient of 2 per element, acc = 0.1 + 4
    expected = before[4] - 0.1 * 2.0 / torch.sqrt(torch.tensor(4.1))
    torch.testing.assert_close(table.weight.detach()[4], expected)


# ---------------------------------------------------------------------------------------------- RowWiseAdagrad


def test_row_wise_adagrad_hand_computed_steps():
    # one row of two: s = 0.1 + mean(3², 1²) = 5.1, w = w − 0.5·g/√5.1; then s = 5.1 + mean(0, 2²) = 7.1
    weights, state = dense_steps(
        RowWiseAdagrad, [[1.0, -1.0]], [[[3.0, 1.0]], [[0.0, 2.0]]], lr=0.5, eps=0.0, initial_accumulator_value=0.1
    )
    first = np.array([1.0, -1.0]) - 0.5 * np.array([3.0, 1.0]) / math.sqrt(5.1)
    torch.testing.assert_close(weights[0][0], first)
    torch.testing.assert_close(weights[1][0], first - 0.5 * np.array([0.0, 2.0]) / math.sqrt(7.1))
    torch.testing.assert_close(as_np(state["sum"]), np.array([7.1]))


def test_row_wise_adagrad_sparse_and_dense_gradients_give_the_same_update():
    torch.sparse.check_sparse_tensor_invariants.disable()  # as the trainer does; silences torch's warning
    sparse, dense = make_embedding(), make_embedding()
    dense.sparse = False
    optimizers = [
        RowWiseAdagrad(table.parameters(), lr=0.1, initial_accumulator_value=0.1) for table in (sparse, dense)
    ]
    for ids, upstream in (([1, 4, 4], np.vstack([UPSTREAM_1, UPSTREAM_1[:1]])), ([4, 7], UPSTREAM_2)):
        for table, optimizer in zip((sparse, dense), optimizers, strict=True):
            optimizer.zero_grad()
            (table(torch.tensor(ids)) * torch.as_tensor(upstream)).sum().backward()
            optimizer.step()
    torch.testing.assert_close(sparse.weight, dense.weight)
    torch.testing.assert_close(optimizers[0].state[sparse.weight]["sum"], optimizers[1].state[dense.weight]["sum"])
    assert np.array_equal(as_np(sparse.weight)[UNTOUCHED], as_np(make_embedding().weight)[UNTOUCHED])
    assert torch.equal(optimizers[0].state[sparse.weight]["sum"][UNTOUCHED], torch.full((7,), 0.1, dtype=torch.float64))


def test_row_wise_adagrad_keeps_one_accumulator_per_row_of_any_parameter():
    params = [nn.Parameter(torch.zeros(5, 2, 3)), nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(()))]
    optimizer = RowWiseAdagrad(params)
    assert [tuple(optimizer.state[p]["sum"].shape) for p in params] == [(5,), (4,), (1,)]
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    assert all(torch.allclose(p, torch.full_like(p, -0.01)) for p in params)  # lr·1/√1
