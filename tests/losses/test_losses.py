"""BinaryCrossEntropy, BinaryFocalLoss and the reduction helpers against a numpy reference of EasyRec's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from easyrec.losses import BinaryCrossEntropy, BinaryFocalLoss
from easyrec.losses.reduction import mean_over_nonzero_weights, smooth_labels

LN2, LN3, LN4_3 = math.log(2), math.log(3), math.log(4 / 3)

# ---------------------------------------------------------------------- numpy reference


def np_reduce(losses: np.ndarray, weights: np.ndarray | None) -> float:
    """SUM_BY_NONZERO_WEIGHTS: Σ w·ℓ / #{w ≠ 0}; plain mean without weights."""
    if weights is None:
        return float(losses.mean())
    return float((losses * weights).sum() / max(np.count_nonzero(weights), 1))


def np_cross_entropy(z: np.ndarray, y: np.ndarray, smoothing: float) -> np.ndarray:
    """softplus(z) − y'·z with y' = y(1−s) + s/2, per sample."""
    target = y * (1 - smoothing) + smoothing / 2
    softplus = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))
    return softplus - target * z


def np_bce(z, y, w=None, smoothing=0.0) -> float:
    return np_reduce(np_cross_entropy(z, y, smoothing), w)


def np_focal(z, y, w=None, gamma=2.0, alpha=None, ohem_ratio=1.0, smoothing=0.0) -> float:
    p = np.clip(1 / (1 + np.exp(-z)), 1e-7, 1 - 1e-7)
    p_t = y * p + (1 - y) * (1 - p)
    big_w = (1 - p_t) ** gamma
    if alpha is not None:
        big_w = big_w * (alpha * y + (1 - alpha) * (1 - y))
    if w is not None:
        big_w = big_w * w
    ce = np_cross_entropy(z, y, smoothing)
    if ohem_ratio >= 1:
        return float((big_w * ce).sum() / max(np.count_nonzero(big_w), 1))
    per_sample = big_w * ce
    k = round(len(z) * ohem_ratio)
    hardest = np.sort(per_sample)[::-1][:k]
    hardest = hardest[hardest > 0]
    return float(hardest.mean()) if len(hardest) else 0.0


def random_batch(n: int, seed: int, zero_weights: bool = True):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=n)
    y = (rng.random(n) < 0.4).astype(np.float64)
    w = rng.uniform(0.5, 2.0, size=n)
    if zero_weights:
        w[rng.random(n) < 0.3] = 0.0
    return z, y, w


def t(x) -> torch.Tensor | None:
    return None if x is None else torch.as_tensor(x, dtype=torch.float64)


# ---------------------------------------------------------------------- reduction helpers


def test_mean_over_nonzero_weights():
    losses = t([1.0, 2.0, 3.0, 4.0])
    assert mean_over_nonzero_weights(losses, None).item() == 2.5
    # (2·1 + 0·2 + 1·3 + 0.5·4) / 3 non-zero weights
    assert mean_over_nonzero_weights(losses, t([2.0, 0.0, 1.0, 0.5])).item() == pytest.approx(7 / 3)
    assert mean_over_nonzero_weights(losses, t([0.0, 0.0, 0.0, 0.0])).item() == 0.0


def test_smooth_labels():
    labels = t([0.0, 1.0])
    assert smooth_labels(labels, 0.0) is labels
    assert smooth_labels(labels, 0.2).tolist() == pytest.approx([0.1, 0.9])


# ---------------------------------------------------------------------- BCE


def test_bce_hand_example():
    # z = (0, ln 3, −ln 3), y = (1, 1, 0): ℓ = (ln 2, ln 4/3, ln 4/3).
    z, y = t([0.0, LN3, -LN3]), t([1.0, 1.0, 0.0])
    assert BinaryCrossEntropy()(z, y).item() == pytest.approx(0.4228371084878357, abs=1e-12)  # (ln2 + 2 ln 4/3)/3
    # Weights (2, 0, 1): (2 ln 2 + ln 4/3) / 2 non-zero weights.
    assert BinaryCrossEntropy()(z, y, t([2.0, 0.0, 1.0])).item() == pytest.approx(0.8369882167858357, abs=1e-12)


def test_bce_label_smoothing_hand_example():
    # s = 0.2: y' = (0.9, 0.1); ℓ = (ln 2 − 0, ln 4 − 0.1·ln 3).
    z, y = t([0.0, LN3]), t([1.0, 0.0])
    expected = (3 * LN2 - 0.1 * LN3) / 2
    assert BinaryCrossEntropy(label_smoothing=0.2)(z, y).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_matches_reference(smoothing, weighted):
    z, y, w = random_batch(50, seed=1)
    w = w if weighted else None
    out = BinaryCrossEntropy(label_smoothing=smoothing)(t(z), t(y), t(w))
    assert out.item() == pytest.approx(np_bce(z, y, w, smoothing), rel=1e-12)


def test_bce_is_stable_for_large_logits():
    out = BinaryCrossEntropy()(t([100.0, -100.0, 100.0]), t([1.0, 0.0, 0.0]))
    assert out.item() == pytest.approx(100.0 / 3, rel=1e-9)


def test_bce_gradient():
    z, y, w = random_batch(20, seed=2)
    logits = t(z).requires_grad_()
    BinaryCrossEntropy(label_smoothing=0.1)(logits, t(y), t(w)).backward()
    target = y * 0.9 + 0.05
    expected = (1 / (1 + np.exp(-z)) - target) * w / np.count_nonzero(w)
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0, 1.5])
def test_bce_rejects_bad_label_smoothing(smoothing):
    with pytest.raises(ValueError, match="label_smoothing"):
        BinaryCrossEntropy(label_smoothing=smoothing)


# ---------------------------------------------------------------------- focal


def test_focal_hand_example():
    # z = (0, ln 3, −ln 3), y = (1, 1, 0): p = (1/2, 3/4, 1/4), p_t = (1/2, 3/4, 3/4),
    # (1 − p_t)² = (1/4, 1/16, 1/16), CE = (ln 2, ln 4/3, ln 4/3); 3 non-zero W.
    z, y = t([0.0, LN3, -LN3]), t([1.0, 1.0, 0.0])
    assert BinaryFocalLoss(gamma=2)(z, y).item() == pytest.approx(0.0697490180654863, abs=1e-9)
    # α = 0.25 multiplies positives by 1/4, negatives by 3/4: W = (1/16, 1/64, 3/64).
    assert BinaryFocalLoss(gamma=2, alpha=0.25)(z, y).item() == pytest.approx(0.02043394277107763, abs=1e-9)


def test_focal_smoothing_only_inside_cross_entropy():
    # z = ln 3, y = 1, s = 0.2: W = (1 − 3/4)² = 1/16 from the raw label; CE = ln 4 − 0.9·ln 3.
    out = BinaryFocalLoss(gamma=2, label_smoothing=0.2)(t([LN3]), t([1.0]))
    assert out.item() == pytest.approx((2 * LN2 - 0.9 * LN3) / 16, abs=1e-9)


def test_focal_ohem_hand_example():
    # W·CE = (ln2/4, ln(4/3)/16, ln(4/3)/16, 0): the last weight is 0. Keep round(4 · 0.5) = 2.
    z, y, w = t([0.0, LN3, -LN3, 0.0]), t([1.0, 1.0, 0.0, 0.0]), t([1.0, 1.0, 1.0, 0.0])
    out = BinaryFocalLoss(gamma=2, ohem_ratio=0.5)(z, y, w)
    assert out.item() == pytest.approx((LN2 / 4 + LN4_3 / 16) / 2, abs=1e-9)
    # Without OHEM: Σ W·CE over the 3 non-zero W.
    out = BinaryFocalLoss(gamma=2, ohem_ratio=1.0)(z, y, w)
    assert out.item() == pytest.approx((LN2 / 4 + LN4_3 / 8) / 3, abs=1e-9)


def test_focal_ohem_drops_non_positive_values():
    z, y, w = t([0.0, LN3, -LN3, 0.0]), t([1.0, 1.0, 0.0, 0.0]), t([1.0, 0.0, 0.0, 0.0])
    # Top 3 of (ln2/4, 0, 0, 0) keeps only ln2/4.
    assert BinaryFocalLoss(gamma=2, ohem_ratio=0.75)(z, y, w).item() == pytest.approx(LN2 / 4, abs=1e-9)


def test_focal_ohem_all_zero_weights_is_zero_with_a_gradient():
    logits = t([0.5, -0.5]).requires_grad_()
    out = BinaryFocalLoss(gamma=2, ohem_ratio=0.5)(logits, t([1.0, 0.0]), t([0.0, 0.0]))
    assert out.item() == 0.0
    out.backward()
    assert logits.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 2.5])
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("ohem_ratio", [1.0, 0.5, 0.3])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_matches_reference(gamma, alpha, ohem_ratio, smoothing, weighted):
    z, y, w = random_batch(20, seed=3)
    w = w if weighted else None
    loss = BinaryFocalLoss(gamma=gamma, alpha=alpha, ohem_ratio=ohem_ratio, label_smoothing=smoothing)
    expected = np_focal(z, y, w, gamma=gamma, alpha=alpha, ohem_ratio=ohem_ratio, smoothing=smoothing)
    assert loss(t(z), t(y), t(w)).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_0_and_no_alpha_is_bce(smoothing, weighted):
    z, y, w = random_batch(40, seed=4)
    w = t(w) if weighted else None
    focal = BinaryFocalLoss(gamma=0.0, alpha=None, label_smoothing=smoothing)(t(z), t(y), w)
    bce = BinaryCrossEntropy(label_smoothing=smoothing)(t(z), t(y), w)
    torch.testing.assert_close(focal, bce, rtol=1e-12, atol=0)


def test_focal_clips_probabilities():
    # σ(±40) rounds to 1/0; clipping keeps (1 − p_t) at 1e-7 instead of 0, so W stays non-zero.
    out = BinaryFocalLoss(gamma=1)(t([40.0, -40.0]), t([1.0, 0.0]))
    assert out.item() > 0
    assert out.item() == pytest.approx(np_focal(np.array([40.0, -40.0]), np.array([1.0, 0.0]), gamma=1), rel=1e-6)


def test_focal_gradient_includes_the_focal_weight():
    z, y, w = random_batch(12, seed=5)
    loss = BinaryFocalLoss(gamma=2, alpha=0.3, label_smoothing=0.1)
    logits = t(z).requires_grad_()
    # Finite differences see W depend on z; a detached W would fail this.
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), t(w)), (logits,))


def test_focal_ohem_gradient_only_on_kept_samples():
    z, y, _ = random_batch(10, seed=6)
    logits = t(z).requires_grad_()
    # k = round(10 · 0.38) = 4 (not the truncated 3).
    BinaryFocalLoss(gamma=2, ohem_ratio=0.38)(logits, t(y)).backward()
    assert torch.count_nonzero(logits.grad) == 4
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"gamma": -0.5}, "gamma"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"ohem_ratio": 0.0}, "ohem_ratio"),
        ({"ohem_ratio": 1.2}, "ohem_ratio"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_focal_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BinaryFocalLoss(**kwargs)


def test_losses_declare_binary_labels():
    assert BinaryCrossEntropy.label_values == BinaryFocalLoss.label_values == (0.0, 1.0)
