"""PairwiseLogisticLoss, PairwiseHingeLoss and PairwiseFocalLoss against a plain-Python pair-loop reference."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from easyrec.losses import BinaryFocalLoss, PairwiseFocalLoss, PairwiseHingeLoss, PairwiseLogisticLoss
from easyrec.losses.pairs import build_pairs, pair_mask, reduce_pair_losses

LN2, LN3, LN4_3 = math.log(2), math.log(3), math.log(4 / 3)
E = math.e

# ---------------------------------------------------------------------- pair-loop reference


def np_pairs(y, s=None, w=None):
    """[(i, j, w_i)] for y_i > y_j in the same session, by an explicit double loop."""
    out = []
    for i in range(len(y)):
        for j in range(len(y)):
            if y[i] > y[j] and (s is None or s[i] == s[j]):
                out.append((i, j, 1.0 if w is None else float(w[i])))
    return out


def np_reduce(losses, pair_weights, weighted, ohem_ratio):
    """SUM_BY_NONZERO_WEIGHTS over pairs, or OHEM top-k mean of the positive weighted losses."""
    if not losses:
        return 0.0
    losses, pair_weights = np.array(losses), np.array(pair_weights)
    if ohem_ratio >= 1:
        if not weighted:
            return float(losses.mean())
        return float((losses * pair_weights).sum() / max(np.count_nonzero(pair_weights), 1))
    values = np.sort(losses * pair_weights)[::-1][: max(1, round(len(losses) * ohem_ratio))]
    values = values[values > 0]
    return float(values.mean()) if len(values) else 0.0


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def np_logistic(z, y, w=None, s=None, temperature=1.0, hinge_margin=None, ohem_ratio=1.0, use_label_margin=False):
    losses, pws = [], []
    for i, j, pw in np_pairs(y, s, w):
        d = (z[i] - z[j]) / temperature
        if use_label_margin:
            d -= (y[i] - y[j]) / temperature
        elif hinge_margin is not None:
            d -= hinge_margin
        losses.append(softplus(-d))
        pws.append(pw)
    return np_reduce(losses, pws, w is not None, ohem_ratio)


def np_hinge(
    z,
    y,
    w=None,
    s=None,
    temperature=1.0,
    margin=1.0,
    ohem_ratio=1.0,
    label_is_logits=True,
    use_label_margin=True,
    use_exponent=False,
):
    losses, pws = [], []
    label_scale = temperature if label_is_logits else 1.0
    for i, j, pw in np_pairs(y, s, w):
        logit_diff = (z[i] - z[j]) / temperature
        diff = (y[i] - y[j]) / label_scale - logit_diff if use_label_margin else margin - logit_diff
        loss = max(math.exp(min(max(diff, -88.0), 88.0)) - 1.0, 0.0) if use_exponent else max(diff, 0.0)
        losses.append(loss)
        pws.append(pw)
    return np_reduce(losses, pws, w is not None, ohem_ratio)


def np_pairwise_focal(z, y, w=None, s=None, gamma=2.0, alpha=None, hinge_margin=None, ohem_ratio=1.0, temperature=1.0):
    """Binary focal loss with label 1 on d_ij, written out per pair (independent of BinaryFocalLoss)."""
    losses, pws = [], []
    for i, j, pw in np_pairs(y, s, w):
        d = (z[i] - z[j]) / temperature
        if hinge_margin is not None and not d < hinge_margin:
            continue
        p = min(max(1 / (1 + math.exp(-d)), 1e-7), 1 - 1e-7)
        focal_weight = (1 - p) ** gamma * (1.0 if alpha is None else alpha)
        losses.append(softplus(-d))
        pws.append(focal_weight * pw)
    if not losses:
        return 0.0
    losses, pws = np.array(losses), np.array(pws)
    if ohem_ratio >= 1:
        return float((losses * pws).sum() / max(np.count_nonzero(pws), 1))
    values = np.sort(losses * pws)[::-1][: max(1, round(len(losses) * ohem_ratio))]
    values = values[values > 0]
    return float(values.mean()) if len(values) else 0.0


def random_batch(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=n)
    y = rng.integers(0, 4, size=n).astype(np.float64)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.3] = 0.0
    s = rng.integers(0, 4, size=n)
    return z, y, w, s


def t(x):
    return None if x is None else torch.as_tensor(x, dtype=torch.float64)


def sid(x):
    return None if x is None else torch.as_tensor(x, dtype=torch.int64)


LOSSES = {
    "logistic": (PairwiseLogisticLoss, np_logistic),
    "hinge": (PairwiseHingeLoss, np_hinge),
    "focal": (PairwiseFocalLoss, np_pairwise_focal),
}

CONFIGS = [
    ("logistic", {}),
    ("logistic", {"temperature": 0.7, "hinge_margin": 0.5}),
    ("logistic", {"temperature": 2.0, "use_label_margin": True}),
    ("hinge", {}),
    ("hinge", {"temperature": 0.5, "label_is_logits": False}),
    ("hinge", {"temperature": 1.5, "use_label_margin": False, "margin": 0.8}),
    ("hinge", {"use_exponent": True}),
    ("hinge", {"use_exponent": True, "use_label_margin": False, "temperature": 2.0}),
    ("focal", {}),
    ("focal", {"gamma": 1.0, "alpha": 0.3, "temperature": 0.8}),
    ("focal", {"gamma": 0.0, "hinge_margin": 0.5}),
]

# ---------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("name, kwargs", CONFIGS)
@pytest.mark.parametrize("ohem_ratio", [1.0, 0.5])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("with_sessions", [False, True])
def test_matches_pair_loop_reference(name, kwargs, ohem_ratio, weighted, with_sessions):
    cls, reference = LOSSES[name]
    z, y, w, s = random_batch(24, seed=len(name) + len(kwargs))
    w = w if weighted else None
    s = s if with_sessions else None
    out = cls(ohem_ratio=ohem_ratio, **kwargs)(t(z), t(y), t(w), sid(s))
    expected = reference(z, y, w, s, ohem_ratio=ohem_ratio, **kwargs)
    assert expected > 0
    assert out.item() == pytest.approx(expected, rel=1e-9)


def test_pair_mask_and_pair_weights():
    y, s, w = t([2.0, 1.0, 1.0, 0.0]), sid([0, 0, 1, 1]), t([5.0, 6.0, 7.0, 8.0])
    assert pair_mask(y).nonzero().tolist() == [[0, 1], [0, 2], [0, 3], [1, 3], [2, 3]]
    pairs = build_pairs(t([0.0] * 4), y, w, s)
    assert list(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True)) == [(0, 1), (2, 3)]
    assert pairs.weights.tolist() == [5.0, 7.0]  # weight of the higher-label sample
    assert pairs.count == 2


def test_reduce_pair_losses():
    losses, weights, anchor = t([1.0, 2.0, 3.0, 4.0]), t([2.0, 0.0, 1.0, 0.5]), t([0.0])
    assert reduce_pair_losses(losses, None, 1.0, anchor).item() == 2.5
    assert reduce_pair_losses(losses, weights, 1.0, anchor).item() == pytest.approx(7 / 3)
    # w·ℓ = (2, 0, 3, 2); k = round(4 · 0.5) = 2 -> (3 + 2) / 2.
    assert reduce_pair_losses(losses, weights, 0.5, anchor).item() == pytest.approx(2.5)
    # k = max(1, round(4 · 0.1)) = 1.
    assert reduce_pair_losses(losses, None, 0.1, anchor).item() == 4.0


# ---------------------------------------------------------------------- hand examples


def test_logistic_hand_example():
    # z = (ln 3, 0, 0), y = (2, 1, 0): d = (ln 3, ln 3, 0) for pairs (0,1), (0,2), (1,2);
    # softplus(−d) = (ln 4/3, ln 4/3, ln 2).
    z, y = t([LN3, 0.0, 0.0]), t([2.0, 1.0, 0.0])
    loss = PairwiseLogisticLoss()
    assert loss(z, y).item() == pytest.approx(0.4228371084878357, abs=1e-12)  # (2 ln 4/3 + ln 2) / 3
    # Weights (2, 0, 1): pair weights (2, 2, 0) -> 4 ln(4/3) / 2.
    assert loss(z, y, t([2.0, 0.0, 1.0])).item() == pytest.approx(2 * LN4_3, abs=1e-12)
    # Sessions (0, 0, 1): only the pair (0, 1) is left.
    assert loss(z, y, None, sid([0, 0, 1])).item() == pytest.approx(LN4_3, abs=1e-12)


def test_logistic_temperature_and_margins():
    z, y = t([LN3, 0.0, 0.0]), t([2.0, 1.0, 0.0])
    # T = 1/2: d = (2 ln 3, 2 ln 3, 0) -> softplus(−d) = (ln 10/9, ln 10/9, ln 2).
    expected = (2 * math.log(10 / 9) + LN2) / 3
    assert PairwiseLogisticLoss(temperature=0.5)(z, y).item() == pytest.approx(expected, abs=1e-12)
    # hinge_margin = ln 3: d = (0, 0, −ln 3) -> (ln 2, ln 2, ln 4).
    assert PairwiseLogisticLoss(hinge_margin=LN3)(z, y).item() == pytest.approx(4 * LN2 / 3, abs=1e-12)
    # Label margin: d = (ln 3 − 1, ln 3 − 2, −1).
    expected = (softplus(1 - LN3) + softplus(2 - LN3) + softplus(1.0)) / 3
    assert PairwiseLogisticLoss(use_label_margin=True)(z, y).item() == pytest.approx(expected, abs=1e-12)
    # The label margin wins over hinge_margin (as in EasyRec).
    assert PairwiseLogisticLoss(use_label_margin=True, hinge_margin=5.0)(z, y).item() == pytest.approx(expected)


def test_logistic_is_stable_for_large_differences():
    out = PairwiseLogisticLoss()(t([-500.0, 500.0]), t([1.0, 0.0]))
    assert out.item() == pytest.approx(1000.0, rel=1e-12)
    assert PairwiseLogisticLoss()(t([500.0, -500.0]), t([1.0, 0.0])).item() == 0.0


def test_hinge_hand_example():
    # z = (1, 0.5, 0), y = (2, 1, 0); pairs (0,1), (0,2), (1,2) with z_i − z_j = (0.5, 1, 0.5).
    z, y = t([1.0, 0.5, 0.0]), t([2.0, 1.0, 0.0])
    # Label margin (default): diff = (1 − 0.5, 2 − 1, 1 − 0.5) = (0.5, 1, 0.5).
    assert PairwiseHingeLoss()(z, y).item() == pytest.approx(2 / 3, abs=1e-12)
    # Constant margin 1: diff = (0.5, 0, 0.5).
    assert PairwiseHingeLoss(use_label_margin=False)(z, y).item() == pytest.approx(1 / 3, abs=1e-12)
    # Exponential hinge on (0.5, 1, 0.5).
    expected = (2 * (math.exp(0.5) - 1) + (E - 1)) / 3
    assert PairwiseHingeLoss(use_exponent=True)(z, y).item() == pytest.approx(expected, abs=1e-12)
    # T = 2 with label_is_logits: everything halves.
    assert PairwiseHingeLoss(temperature=2.0)(z, y).item() == pytest.approx(1 / 3, abs=1e-12)
    # T = 2 on the logits only: diff = (1 − 0.25, 2 − 0.5, 1 − 0.25) = (0.75, 1.5, 0.75).
    out = PairwiseHingeLoss(temperature=2.0, label_is_logits=False)(z, y)
    assert out.item() == pytest.approx(1.0, abs=1e-12)
    # OHEM: k = round(3 · 0.5) = 2 -> (1 + 0.5) / 2; with the constant margin (0.5, 0.5) -> 0.5.
    assert PairwiseHingeLoss(ohem_ratio=0.5)(z, y).item() == pytest.approx(0.75, abs=1e-12)
    assert PairwiseHingeLoss(ohem_ratio=0.5, use_label_margin=False)(z, y).item() == pytest.approx(0.5)
    # Weights (0, 3, 1): pair weights (0, 0, 3) -> 3 · 0.5 / 1.
    assert PairwiseHingeLoss()(z, y, t([0.0, 3.0, 1.0])).item() == pytest.approx(1.5, abs=1e-12)


def test_hinge_exponent_uses_the_model_logits():
    # EasyRec's bug replaced the logits by sigmoid(labels); here the logits matter.
    y = t([1.0, 0.0])
    loss = PairwiseHingeLoss(use_exponent=True, use_label_margin=False, margin=1.0)
    assert loss(t([0.0, 0.0]), y).item() == pytest.approx(E - 1, abs=1e-12)
    assert loss(t([1.0, 0.0]), y).item() == 0.0
    # The exponent is clipped at 88: finite for a huge diff.
    assert math.isfinite(loss(t([-1000.0, 0.0]), y).item())
    assert loss(t([-1000.0, 0.0]), y).item() == pytest.approx(math.exp(88) - 1, rel=1e-12)


def test_focal_hand_example():
    # z = (ln 3, 0, 0), y = (2, 1, 0): d = (ln 3, ln 3, 0); p = (3/4, 3/4, 1/2);
    # W = (1 − p)² = (1/16, 1/16, 1/4); CE = softplus(−d) = (ln 4/3, ln 4/3, ln 2); 3 non-zero W.
    z, y = t([LN3, 0.0, 0.0]), t([2.0, 1.0, 0.0])
    expected = (LN4_3 / 8 + LN2 / 4) / 3
    assert PairwiseFocalLoss()(z, y).item() == pytest.approx(expected, abs=1e-12)
    # α = 0.25 scales every pair (all pseudo-labels are 1).
    assert PairwiseFocalLoss(alpha=0.25)(z, y).item() == pytest.approx(expected / 4, abs=1e-12)
    # hinge_margin = 0.5 drops the two pairs with d = ln 3 > 0.5.
    assert PairwiseFocalLoss(hinge_margin=0.5)(z, y).item() == pytest.approx(LN2 / 4, abs=1e-12)
    # T = 1/2: d = (2 ln 3, 2 ln 3, 0), p = (9/10, 9/10, 1/2).
    expected = (2 * math.log(10 / 9) / 100 + LN2 / 4) / 3
    assert PairwiseFocalLoss(temperature=0.5)(z, y).item() == pytest.approx(expected, abs=1e-12)
    # Weights (2, 0, 1): pair weights (2, 2, 0) -> W = (1/8, 1/8, 0), 2 non-zero.
    assert PairwiseFocalLoss()(z, y, t([2.0, 0.0, 1.0])).item() == pytest.approx(LN4_3 / 8, abs=1e-12)


def test_focal_reuses_binary_focal_loss_on_pair_logits():
    z, y, w, s = random_batch(16, seed=11)
    pairs = build_pairs(t(z), t(y), t(w), sid(s))
    d = t(z)[pairs.first] - t(z)[pairs.second]
    expected = BinaryFocalLoss(gamma=1.5, alpha=0.4, ohem_ratio=0.6)(d, torch.ones_like(d), pairs.weights)
    out = PairwiseFocalLoss(gamma=1.5, alpha=0.4, ohem_ratio=0.6)(t(z), t(y), t(w), sid(s))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0)


# ---------------------------------------------------------------------- pairs, sessions, edge cases


@pytest.mark.parametrize("cls", [PairwiseLogisticLoss, PairwiseHingeLoss, PairwiseFocalLoss])
@pytest.mark.parametrize(
    "labels, sessions",
    [
        ([1.0, 1.0, 1.0], None),  # all labels equal
        ([2.0, 1.0, 0.0], [0, 1, 2]),  # every pair crosses sessions
        ([1.0], None),  # a single sample
    ],
)
def test_no_pair_is_zero_with_a_gradient(cls, labels, sessions):
    logits = t([0.3, -1.2, 2.0][: len(labels)]).requires_grad_()
    out = cls(ohem_ratio=0.5)(logits, t(labels), t([1.0] * len(labels)), sid(sessions))
    assert out.item() == 0.0
    out.backward()
    assert logits.grad.tolist() == [0.0] * len(labels)


def test_focal_hinge_margin_leaving_no_pair_is_zero():
    logits = t([5.0, 0.0]).requires_grad_()
    out = PairwiseFocalLoss(hinge_margin=1.0)(logits, t([1.0, 0.0]))
    assert out.item() == 0.0
    out.backward()
    assert logits.grad.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("cls", [PairwiseLogisticLoss, PairwiseHingeLoss, PairwiseFocalLoss])
def test_pairs_across_sessions_are_excluded(cls):
    # Session 0 = samples 0, 1; session 1 = samples 2, 3. The loss is the pair mean of the two sessions'
    # pairs, and moving a logit in session 1 must not change session 0's pair.
    z, y, s = t([0.2, 0.5, -1.0, 3.0]), t([1.0, 0.0, 3.0, 2.0]), sid([0, 0, 1, 1])
    loss = cls()
    both = loss(z, y, None, s).item()
    first = loss(z[:2], y[:2]).item()
    second = loss(z[2:], y[2:]).item()
    assert both == pytest.approx((first + second) / 2, rel=1e-12)
    assert both != pytest.approx(loss(z, y).item())  # without sessions there are 6 pairs
    logits = z.clone().requires_grad_()
    loss(logits, y, None, s).backward()
    assert logits.grad[0].item() == pytest.approx(-logits.grad[1].item())
    assert logits.grad[2].item() == pytest.approx(-logits.grad[3].item())


@pytest.mark.parametrize("name, kwargs", CONFIGS)
@pytest.mark.parametrize("ohem_ratio", [1.0, 0.5])
def test_gradients_flow(name, kwargs, ohem_ratio):
    cls, _ = LOSSES[name]
    z, y, w, s = random_batch(10, seed=7)
    logits = t(z).requires_grad_()
    loss = cls(ohem_ratio=ohem_ratio, **kwargs)
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), t(w), sid(s)), (logits,))


def test_float32_batch_of_4096_is_vectorised():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4096, generator=generator).requires_grad_()
    labels = torch.randint(0, 4, (4096,), generator=generator).float()
    sessions = torch.randint(0, 64, (4096,), generator=generator)
    start = time.perf_counter()
    for cls in (PairwiseLogisticLoss, PairwiseHingeLoss, PairwiseFocalLoss):
        out = cls()(logits, labels, torch.ones(4096))
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
        assert cls(ohem_ratio=0.5)(logits, labels, None, sessions).item() > 0
    assert time.perf_counter() - start < 20  # ~8M pairs per loss without sessions


# ---------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (PairwiseLogisticLoss, {"temperature": 0.0}, "temperature"),
        (PairwiseLogisticLoss, {"temperature": -1.0}, "temperature"),
        (PairwiseLogisticLoss, {"ohem_ratio": 0.0}, "ohem_ratio"),
        (PairwiseLogisticLoss, {"ohem_ratio": 1.5}, "ohem_ratio"),
        (PairwiseLogisticLoss, {"hinge_margin": -0.1}, "hinge_margin"),
        (PairwiseHingeLoss, {"temperature": 0.0}, "temperature"),
        (PairwiseHingeLoss, {"ohem_ratio": -0.5}, "ohem_ratio"),
        (PairwiseHingeLoss, {"margin": -1.0}, "margin"),
        (PairwiseFocalLoss, {"temperature": -2.0}, "temperature"),
        (PairwiseFocalLoss, {"gamma": -0.5}, "gamma"),
        (PairwiseFocalLoss, {"alpha": 0.0}, "alpha"),
        (PairwiseFocalLoss, {"alpha": 1.0}, "alpha"),
        (PairwiseFocalLoss, {"ohem_ratio": 0.0}, "ohem_ratio"),
        (PairwiseFocalLoss, {"ohem_ratio": 1.01}, "ohem_ratio"),
        (PairwiseFocalLoss, {"hinge_margin": float("nan")}, "hinge_margin"),
    ],
)
def test_invalid_arguments_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [PairwiseLogisticLoss, PairwiseHingeLoss, PairwiseFocalLoss])
def test_shape_mismatch_raises(cls):
    with pytest.raises(ValueError, match="labels"):
        cls()(t([0.0, 1.0]), t([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="sessions"):
        cls()(t([0.0, 1.0]), t([1.0, 0.0]), None, sid([0]))
    with pytest.raises(ValueError, match="logits"):
        cls()(t([[0.0, 1.0]]), t([1.0, 0.0]))


def test_label_values_allow_graded_labels():
    assert PairwiseLogisticLoss.label_values is None
    assert PairwiseHingeLoss.label_values is None
    assert PairwiseFocalLoss.label_values is None
