"""ZILNLoss against EasyRec's zero_inflated_lognormal_test, a scipy.stats.lognorm reference and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from easyrec.losses.ziln import ZILNLoss
from tests.losses.references import LN2, t

MIN_SIGMA = math.sqrt(1e-7)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
S1 = math.log(math.e - 1)  # softplus(S1) = 1


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_ziln(
    z,
    y,
    w=None,
    mu_reg=0.01,
    sigma_reg=0.01,
    max_sigma=5.0,
    class_weight=1.0,
    reg_weight=1.0,
):
    """EasyRec's zero_inflated_lognormal_loss in float64 with scipy's lognormal, plus our sample weights."""
    w = np.ones(len(y)) if w is None else w
    pos = (y > 0).astype(np.float64)
    zp, mu, s = z[:, 0], z[:, 1], z[:, 2]
    bce = np.maximum(zp, 0) - zp * pos + np.log1p(np.exp(-np.abs(zp)))
    cls = (w * bce).sum() / max(np.count_nonzero(w), 1)
    sigma = np.clip(np_softplus(s), MIN_SIGMA, max_sigma)
    logpdf = np.zeros(len(y))
    m = y > 0
    logpdf[m] = stats.lognorm.logpdf(y[m], s=sigma[m], loc=0.0, scale=np.exp(mu[m]))
    reg = -(w * pos * logpdf).sum() / ((w * pos).sum() + 1e-8)
    penalties = mu_reg * np.mean(mu**2) + sigma_reg * np.mean(s**2)
    return float(class_weight * cls + reg_weight * reg + penalties), float(cls), float(reg)


def np_ziln_pred(z, max_sigma=5.0, max_log_clip=20.0):
    zp, mu, s = z[:, 0], z[:, 1], z[:, 2]
    sigma = np.clip(np_softplus(s), MIN_SIGMA, max_sigma)
    log_pred = -np_softplus(-zp) + mu + 0.5 * sigma**2
    return np.exp(np.clip(log_pred, -100.0, max_log_clip))


def random_batch(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 3))
    z[: n // 5, 2] = rng.uniform(5.5, 8.0, size=n // 5)  # σ clipped at max_sigma = 5
    y = np.where(rng.random(n) < 0.5, 0.0, rng.lognormal(1.0, 1.0, size=n))
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.3] = 0.0
    return z, y, w


def test_reproduces_easyrec_zero_inflated_lognormal_test():
    # easy_rec/python/test/zero_inflated_lognormal_test.py: mu_reg = sigma_reg = 0, checked within 1e-6.
    logits = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    labels = np.array([0.0, 1.5])
    expected, _, _ = np_ziln(logits, labels, mu_reg=0.0, sigma_reg=0.0)
    loss = ZILNLoss(mu_regularization=0.0, sigma_regularization=0.0)
    assert loss(t(logits), t(labels)).item() == pytest.approx(expected, abs=1e-6)
    out32 = loss(torch.tensor(logits, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32))
    assert out32.dtype == torch.float32
    assert out32.item() == pytest.approx(expected, abs=1e-6)


def test_hand_example():
    # Row 1: z_p = 0, μ = 0, σ = 1, y = 1: BCE = ln 2, nll = ½ln 2π. Row 2: z_p = 0, μ = 5, y = 0: BCE = ln 2.
    # reg = ½ln 2π / (1 positive + 1e-8).
    logits, labels = t([[0.0, 0.0, S1], [0.0, 5.0, 0.0]]), t([1.0, 0.0])
    reg = HALF_LOG_2PI / (1 + 1e-8)
    loss = ZILNLoss(mu_regularization=0.0, sigma_regularization=0.0)
    assert loss(logits, labels).item() == pytest.approx(LN2 + reg, abs=1e-12)
    assert loss.log_values() == pytest.approx(
        {"train/loss/ziln_classification": LN2, "train/loss/ziln_regression": reg}, abs=1e-12
    )
    # Penalties: 0.1·mean(0², 5²) + 0.2·mean(S1², 0²).
    loss = ZILNLoss(mu_regularization=0.1, sigma_regularization=0.2)
    assert loss(logits, labels).item() == pytest.approx(LN2 + reg + 1.25 + 0.1 * S1**2, abs=1e-12)
    # Component weights.
    loss = ZILNLoss(mu_regularization=0.0, sigma_regularization=0.0, classification_weight=2.0, regression_weight=0.5)
    assert loss(logits, labels).item() == pytest.approx(2 * LN2 + 0.5 * reg, abs=1e-12)


def test_weights_hand_example():
    # Weights (0, 3) on the rows above: cls = 3·ln 2 / 1 non-zero weight; reg = 0 (the weighted positive mass is 0).
    logits, labels = t([[0.0, 0.0, S1], [0.0, 5.0, 0.0]]), t([1.0, 0.0])
    loss = ZILNLoss(mu_regularization=0.0, sigma_regularization=0.0)
    assert loss(logits, labels, t([0.0, 3.0])).item() == pytest.approx(3 * LN2, abs=1e-12)
    # Weights (2, 1): cls = (2 + 1)·ln 2 / 2, reg = 2·½ln 2π / (2 + 1e-8).
    expected = 1.5 * LN2 + 2 * HALF_LOG_2PI / (2 + 1e-8)
    assert loss(logits, labels, t([2.0, 1.0])).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"mu_regularization": 0.3, "sigma_regularization": 0.0, "max_sigma": 2.0},
        {"classification_weight": 0.5, "regression_weight": 3.0},
    ],
)
def test_matches_reference(weighted, kwargs):
    z, y, w = random_batch(60, seed=3)
    w = w if weighted else None
    expected, cls, reg = np_ziln(
        z,
        y,
        w,
        mu_reg=kwargs.get("mu_regularization", 0.01),
        sigma_reg=kwargs.get("sigma_regularization", 0.01),
        max_sigma=kwargs.get("max_sigma", 5.0),
        class_weight=kwargs.get("classification_weight", 1.0),
        reg_weight=kwargs.get("regression_weight", 1.0),
    )
    loss = ZILNLoss(**kwargs)
    assert loss(t(z), t(y), None if w is None else t(w)).item() == pytest.approx(expected, rel=1e-10)
    logged = loss.log_values()
    assert logged["train/loss/ziln_classification"] == pytest.approx(cls, rel=1e-10)
    assert logged["train/loss/ziln_regression"] == pytest.approx(reg, rel=1e-10)


def test_gradcheck():
    z, y, w = random_batch(10, seed=4)
    z[:, 2] = np.clip(z[:, 2], -2.0, 2.0)  # away from the σ clip, where the derivative jumps
    loss = ZILNLoss(mu_regularization=0.1, sigma_regularization=0.1)
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), t(w)), (t(z).requires_grad_(),))


@pytest.mark.parametrize("max_sigma, max_log_clip", [(5.0, 20.0), (1.0, 3.0)])
def test_scores_match_reference(max_sigma, max_log_clip):
    z, _, _ = random_batch(30, seed=5)
    z[0] = [2.0, 30.0, 0.0]  # log prediction above the clip
    z[1] = [-50.0, -80.0, 0.0]  # below −100: exp(−100)
    loss = ZILNLoss(max_sigma=max_sigma, max_log_clip_value=max_log_clip)
    scores = loss.scores(t(z))
    assert scores.shape == (30,)
    np.testing.assert_allclose(scores.numpy(), np_ziln_pred(z, max_sigma, max_log_clip), rtol=1e-12)
    assert scores[0].item() == pytest.approx(math.exp(max_log_clip))
    assert scores[1].item() == pytest.approx(math.exp(-100.0))


def test_scores_hand_example():
    # z_p = 0, μ = 1, σ = 1: exp(ln ½ + 1 + ½) = ½·e^1.5.
    assert ZILNLoss().scores(t([[0.0, 1.0, S1]])).item() == pytest.approx(0.5 * math.exp(1.5), rel=1e-12)


def test_return_log_pred_value_gives_the_clipped_log():
    # z_p = 0, μ = 1, σ = 1: ln ½ + 1 + ½; and the upper clip applies to the log (EasyRec's return_log_pred_value)
    loss = ZILNLoss(return_log_pred_value=True, max_log_clip_value=3.0)
    scores = loss.scores(t([[0.0, 1.0, S1], [0.0, 9.0, S1]]))
    assert scores.tolist() == pytest.approx([math.log(0.5) + 1.5, 3.0], rel=1e-12)


def test_attributes():
    loss = ZILNLoss()
    assert loss.num_outputs == 3
    assert loss.task == "regression"
    assert loss.label_values is None
    assert loss.label_range == (0.0, math.inf)
    assert loss.log_values() == {}


EDGE_LOGITS = [[0.3, 1.0, -0.5], [-1.0, 0.2, 0.4], [2.0, -0.7, 1.0], [0.0, 0.5, -2.0]]


@pytest.mark.parametrize(
    "labels, weights, scale",
    [
        ([0.0, 0.0, 0.0, 0.0], None, 1.0),  # all zero: no regression term
        ([1.5, 0.2, 30.0, 4.0], None, 1.0),  # all positive
        ([0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], 1.0),  # zero weights
        ([0.0, 2.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0], 1.0),  # the weighted positives are all 0
        ([0.0, 2.0, 1e-6, 1e6], [1.0, 0.5, 2.0, 1.0], 50.0),  # extreme logits: σ clipped high, huge μ
        ([0.0, 2.0, 1e-6, 1e6], None, -50.0),  # σ clipped at √1e-7, μ = ±50 far from log y
    ],
)
def test_finite_gradients_on_edge_cases(labels, weights, scale):
    logits = (torch.tensor(EDGE_LOGITS) * scale).requires_grad_()
    w = None if weights is None else torch.tensor(weights)
    out = ZILNLoss()(logits, torch.tensor(labels), w)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    assert all(math.isfinite(v) for v in ZILNLoss().scores(logits.detach()).tolist())


def test_all_zero_labels_give_classification_and_penalties_only():
    z = np.array(EDGE_LOGITS)
    y = np.zeros(4)
    expected, cls, reg = np_ziln(z, y)
    loss = ZILNLoss()
    assert loss(t(z), t(y)).item() == pytest.approx(expected, rel=1e-12)
    assert reg == 0.0 and loss.log_values()["train/loss/ziln_regression"] == 0.0


def test_batch_of_one_and_empty_batch():
    logits = torch.tensor([[50.0, -50.0, 50.0]], requires_grad=True)
    out = ZILNLoss()(logits, torch.tensor([3.0]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    empty = torch.zeros(0, 3, requires_grad=True)
    out = ZILNLoss()(empty, torch.zeros(0))
    out.backward()
    assert out.item() == 0.0 and empty.grad is not None


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"mu_regularization": -0.1}, "mu_regularization"),
        ({"sigma_regularization": float("nan")}, "sigma_regularization"),
        ({"max_sigma": 0.0}, "max_sigma"),
        ({"max_sigma": 1e-4}, "max_sigma"),
        ({"max_sigma": float("inf")}, "max_sigma"),
        ({"max_log_clip_value": -100.0}, "max_log_clip_value"),
        ({"classification_weight": -1.0}, "classification_weight"),
        ({"regression_weight": float("inf")}, "regression_weight"),
    ],
)
def test_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ZILNLoss(**kwargs)


@pytest.mark.parametrize(
    "logits_shape, labels_shape, weights_shape, name",
    [
        ((4,), (4,), None, r"logits: expected shape \(B, 3\), got \(4,\)"),
        ((4, 2), (4,), None, r"logits: expected shape \(B, 3\)"),
        ((4, 3), (4, 1), None, "labels"),
        ((4, 3), (4,), (2,), "weights"),
    ],
)
def test_shape_errors(logits_shape, labels_shape, weights_shape, name):
    weights = None if weights_shape is None else torch.ones(weights_shape)
    with pytest.raises(ValueError, match=name):
        ZILNLoss()(torch.zeros(logits_shape), torch.zeros(labels_shape), weights)
