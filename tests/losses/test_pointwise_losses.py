"""L2Loss, SigmoidL2Loss and F1ReweightedLoss against numpy references of EasyRec's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from easyrec.losses import F1ReweightedLoss, L2Loss, SigmoidL2Loss

LN2, LN3, LN4_3 = math.log(2), math.log(3), math.log(4 / 3)

# ---------------------------------------------------------------------- numpy references


def np_reduce(losses: np.ndarray, weights: np.ndarray | None) -> float:
    """SUM_BY_NONZERO_WEIGHTS: Σ w·ℓ / #{w ≠ 0}; plain mean without weights."""
    if weights is None:
        return float(losses.mean())
    return float((losses * weights).sum() / max(np.count_nonzero(weights), 1))


def np_sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def np_l2(z, y, w=None) -> float:
    return np_reduce((z - y) ** 2, w)


def np_sigmoid_l2(z, y, w=None) -> float:
    return np_reduce((np_sigmoid(z) - y) ** 2, w)


def np_f1(z, y, w=None, beta_square=1.0, smoothing=0.0) -> float:
    n = len(z)
    p = np_sigmoid(z)
    num_pos = y.sum()
    num_neg = n - num_pos
    tp = p.sum()
    tn = n - tp
    nw = tp / (beta_square * num_pos + num_neg - tn + 1e-8)
    big_w = np.where(y == 1.0, 1.0, nw)
    if w is not None:
        big_w = big_w * w
    target = y * (1 - smoothing) + 0.5 * smoothing
    ce = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - target * z
    return float((big_w * ce).sum() / max(np.count_nonzero(big_w), 1))


def random_batch(n: int, seed: int, binary: bool = True):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=n)
    y = (rng.random(n) < 0.4).astype(np.float64) if binary else rng.normal(0, 1.5, size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.3] = 0.0
    assert (w == 0).any()
    return z, y, w


def t(x) -> torch.Tensor | None:
    return None if x is None else torch.as_tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------- L2


def test_l2_hand_example():
    # z − y = (1, −0.5, −2): squares (1, 0.25, 4).
    z, y = t([1.0, 2.0, -1.0]), t([0.0, 2.5, 1.0])
    assert L2Loss()(z, y).item() == pytest.approx(5.25 / 3, abs=1e-12)
    # Weights (2, 0, 0.5): (2·1 + 0.5·4) / 2 non-zero weights.
    assert L2Loss()(z, y, t([2.0, 0.0, 0.5])).item() == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_l2_matches_reference(weighted):
    z, y, w = random_batch(50, seed=11, binary=False)
    w = w if weighted else None
    assert L2Loss()(t(z), t(y), t(w)).item() == pytest.approx(np_l2(z, y, w), rel=1e-12)


def test_l2_gradient():
    z, y, w = random_batch(20, seed=12, binary=False)
    logits = t(z).requires_grad_()
    L2Loss()(logits, t(y), t(w)).backward()
    expected = 2 * (z - y) * w / np.count_nonzero(w)
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-10, atol=1e-15)


# ---------------------------------------------------------------------- sigmoid L2


def test_sigmoid_l2_hand_example():
    # σ(z) = (1/2, 3/4, 1/4), y = (1, 0.5, 0): squares (1/4, 1/16, 1/16).
    z, y = t([0.0, LN3, -LN3]), t([1.0, 0.5, 0.0])
    assert SigmoidL2Loss()(z, y).item() == pytest.approx(0.125, abs=1e-12)
    # Weights (1, 2, 0): (1/4 + 2/16) / 2 non-zero weights.
    assert SigmoidL2Loss()(z, y, t([1.0, 2.0, 0.0])).item() == pytest.approx(0.1875, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_l2_matches_reference(weighted, soft):
    z, y, w = random_batch(50, seed=13)
    if soft:
        y = np.random.default_rng(14).random(50)
    w = w if weighted else None
    assert SigmoidL2Loss()(t(z), t(y), t(w)).item() == pytest.approx(np_sigmoid_l2(z, y, w), rel=1e-12)


def test_sigmoid_l2_gradient():
    z, y, w = random_batch(20, seed=15)
    logits = t(z).requires_grad_()
    SigmoidL2Loss()(logits, t(y), t(w)).backward()
    p = np_sigmoid(z)
    expected = 2 * (p - y) * p * (1 - p) * w / np.count_nonzero(w)
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-10, atol=1e-15)


def test_regression_losses_allow_any_label():
    assert L2Loss.label_values is None
    assert SigmoidL2Loss.label_values is None


# ---------------------------------------------------------------------- F1 re-weighted


def test_f1_hand_example():
    # z = (0, ln 3, −ln 3), y = (1, 1, 0): p = (1/2, 3/4, 1/4), N = 3, P = 2, Nn = 1, tp = 3/2, tn = 3/2.
    # CE = (ln 2, ln 4/3, ln 4/3).
    z, y = t([0.0, LN3, -LN3]), t([1.0, 1.0, 0.0])
    # β² = 1/2: nw = 1.5 / (1 + 1 − 1.5) = 3; W = (1, 1, 3).
    out = F1ReweightedLoss(f1_beta_square=0.5)(z, y)
    assert out.item() == pytest.approx((LN2 + 4 * LN4_3) / 3, abs=1e-7)
    # β² = 1: nw = 1.5 / (2 + 1 − 1.5) = 1, plain BCE.
    out = F1ReweightedLoss()(z, y)
    assert out.item() == pytest.approx((LN2 + 2 * LN4_3) / 3, abs=1e-7)
    # β² = 2: nw = 1.5 / 3.5 = 3/7; sample weights (2, 0, 1) leave W = (2, 0, 3/7): 2 non-zero.
    out = F1ReweightedLoss(f1_beta_square=2.0)(z, y, t([2.0, 0.0, 1.0]))
    assert out.item() == pytest.approx((2 * LN2 + 3 / 7 * LN4_3) / 2, abs=1e-7)


def test_f1_label_smoothing_hand_example():
    # As above with β² = 1/2 (W = (1, 1, 3)) and s = 0.2: y' = (0.9, 0.9, 0.1), smoothing only inside the CE.
    # CE = (ln 2, ln 4 − 0.9·ln 3, ln 4/3 + 0.1·ln 3).
    z, y = t([0.0, LN3, -LN3]), t([1.0, 1.0, 0.0])
    expected = (LN2 + (2 * LN2 - 0.9 * LN3) + 3 * (LN4_3 + 0.1 * LN3)) / 3
    out = F1ReweightedLoss(f1_beta_square=0.5, label_smoothing=0.2)(z, y)
    assert out.item() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("beta_square", [1.0, 0.5, 2.0, 4.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_f1_matches_reference(beta_square, smoothing, weighted):
    z, y, w = random_batch(50, seed=16)
    w = w if weighted else None
    loss = F1ReweightedLoss(f1_beta_square=beta_square, label_smoothing=smoothing)
    expected = np_f1(z, y, w, beta_square=beta_square, smoothing=smoothing)
    assert loss(t(z), t(y), t(w)).item() == pytest.approx(expected, rel=1e-10)


def test_f1_negative_weight_uses_probabilities_of_all_samples():
    # The positive has sample weight 0, so only the negatives' weighted CE counts, and their CE is unchanged when
    # the positive's logit moves; the loss still moves because tp = Σ p includes the positive's probability.
    y, w = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0])
    loss = F1ReweightedLoss(f1_beta_square=2.0)
    results = []
    for z in (np.array([0.0, -1.0, -1.0]), np.array([3.0, -1.0, -1.0])):
        out = loss(t(z), t(y), t(w)).item()
        assert out == pytest.approx(np_f1(z, y, w, beta_square=2.0), rel=1e-10)
        results.append(out)
    assert results[1] > results[0] * 1.1


def test_f1_gradient_flows_through_negative_weight():
    z, y, w = random_batch(12, seed=17)
    loss = F1ReweightedLoss(f1_beta_square=2.0, label_smoothing=0.1)
    logits = t(z).requires_grad_()
    # Finite differences see nw depend on z; a detached nw would fail this.
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), t(w)), (logits,))
    loss(logits, t(y), t(w)).backward()
    assert torch.isfinite(logits.grad).all()


def test_f1_float32_backward():
    z, y, w = random_batch(64, seed=18)
    logits = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    out = F1ReweightedLoss()(logits, torch.tensor(y, dtype=torch.float32), torch.tensor(w, dtype=torch.float32))
    out.backward()
    assert out.dtype == torch.float32
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()


def test_f1_declares_binary_labels():
    assert F1ReweightedLoss.label_values == (0.0, 1.0)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"f1_beta_square": 0.0}, "f1_beta_square"),
        ({"f1_beta_square": -1.0}, "f1_beta_square"),
        ({"f1_beta_square": float("nan")}, "f1_beta_square"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_f1_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        F1ReweightedLoss(**kwargs)


def test_f1_reweighted_reproduces_easyrec_golden_value():
    # easy_rec/python/test/loss_test.py: f1_reweight_sigmoid_cross_entropy(..., beta_square=4) = 0.47844395
    logits = torch.tensor([0.1, 0.5, 0.3, 0.8, -0.1, 0.3])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    assert F1ReweightedLoss(f1_beta_square=4.0)(logits, labels).item() == pytest.approx(0.47844395, abs=1e-7)
