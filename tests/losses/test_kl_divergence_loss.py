"""KLDivergenceLoss against hand values and a scipy.special.rel_entr reference of EasyRec's KD KL_DIVERGENCE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, logit, rel_entr, softmax

from easyrec.losses.kl_divergence import KLDivergenceLoss
from tests.losses.references import LN2, LN3, t

EPS = 1e-7


def np_kl(z, y, w=None, temperature=1.0, label_is_logits=False):
    """EasyRec's teacher/student transforms, then Σ_c rel_entr(p, q) per sample, SUM_BY_NONZERO_WEIGHTS."""
    if z.ndim == 1:
        teacher = y if label_is_logits else logit(np.clip(y, EPS, 1 - EPS))
        p1, q1 = expit(teacher / temperature), expit(z / temperature)
        p, q = np.stack([1 - p1, p1], axis=1), np.stack([1 - q1, q1], axis=1)
    else:
        teacher = y if label_is_logits else np.log(y + EPS)
        p, q = softmax(teacher / temperature, axis=1), softmax(z / temperature, axis=1)
    losses = rel_entr(p, q).sum(axis=1)
    if w is None:
        return float(losses.mean())
    return float((losses * w).sum() / max(np.count_nonzero(w), 1))


def np_keras_kld(p, q):
    """Keras' KLD as EasyRec calls it: both distributions clipped to [1e-7, 1]."""
    p, q = np.clip(p, EPS, 1), np.clip(q, EPS, 1)
    return (p * np.log(p / q)).sum(axis=-1)


def random_batch(n, seed, num_classes=None, label_is_logits=False):
    rng = np.random.default_rng(seed)
    shape = (n,) if num_classes is None else (n, num_classes)
    z = rng.normal(0, 2, size=shape)
    if label_is_logits:
        y = rng.normal(0, 2, size=shape)
    elif num_classes is None:
        y = rng.random(n)
        y[:3] = [0.0, 1.0, 0.5]  # the clip at 1e-7 matters at 0 and 1
    else:
        y = softmax(rng.normal(0, 2, size=shape), axis=1)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.3] = 0.0
    return z, y, w


def test_binary_hand_example():
    # Student z = 0: q = (½, ½). Teacher p = ¾: KL = ¼·ln(½) + ¾·ln(3/2) = ¾·ln 3 − ln 2.
    expected = 0.75 * LN3 - LN2
    assert KLDivergenceLoss()(t([0.0]), t([0.75])).item() == pytest.approx(expected, abs=1e-12)
    # Teacher logit 2·ln 3 at T = 2: σ(ln 3) = ¾; the student's 0 stays 0.
    loss = KLDivergenceLoss(temperature=2.0, label_is_logits=True)
    assert loss(t([0.0]), t([2 * LN3])).item() == pytest.approx(expected, abs=1e-12)
    # Two samples, weights (3, 0): the second (any value) is left out; 3·KL / 1 non-zero weight.
    out = KLDivergenceLoss()(t([0.0, 5.0]), t([0.75, 0.1]), t([3.0, 0.0]))
    assert out.item() == pytest.approx(3 * expected, abs=1e-12)


def test_multiclass_hand_example():
    # q = (⅓, ⅓, ⅓), p = (½, ¼, ¼): KL = ½·ln(3/2) + ½·ln(3/4) = ½·ln(9/8) (teacher probabilities shift by ~1e-7).
    loss = KLDivergenceLoss()
    assert loss(t([[0.0, 0.0, 0.0]]), t([[0.5, 0.25, 0.25]])).item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-6)
    # As teacher logits (ln 2, 0, 0) the teacher is exactly (½, ¼, ¼).
    loss = KLDivergenceLoss(label_is_logits=True)
    assert loss(t([[1.0, 1.0, 1.0]]), t([[LN2, 0.0, 0.0]])).item() == pytest.approx(0.5 * math.log(9 / 8), abs=1e-12)


@pytest.mark.parametrize("num_classes", [None, 4])
@pytest.mark.parametrize("temperature", [1.0, 2.5, 0.5])
@pytest.mark.parametrize("label_is_logits", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(num_classes, temperature, label_is_logits, weighted):
    z, y, w = random_batch(40, seed=7, num_classes=num_classes, label_is_logits=label_is_logits)
    w = w if weighted else None
    loss = KLDivergenceLoss(temperature=temperature, label_is_logits=label_is_logits)
    expected = np_kl(z, y, w, temperature, label_is_logits)
    assert loss(t(z), t(y), None if w is None else t(w)).item() == pytest.approx(expected, rel=1e-10, abs=1e-15)


def test_agrees_with_keras_kld_away_from_the_clip():
    # EasyRec's Keras KLD clips both distributions at 1e-7; for probabilities well inside (0, 1) they agree.
    z, y, _ = random_batch(30, seed=8)
    y = np.clip(y, 0.01, 0.99)
    q1, p1 = expit(z), y
    keras = np_keras_kld(np.stack([1 - p1, p1], axis=1), np.stack([1 - q1, q1], axis=1)).mean()
    assert KLDivergenceLoss()(t(z), t(y)).item() == pytest.approx(keras, abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_zero_when_student_equals_teacher(temperature):
    z = np.linspace(-4, 4, 9)
    logits = t(z).requires_grad_()
    out = KLDivergenceLoss(temperature=temperature, label_is_logits=True)(logits, t(z))
    out.backward()
    assert out.item() == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(logits.grad.numpy(), 0.0, atol=1e-15)
    # Teacher probabilities σ(z): the same distribution, up to rounding.
    assert KLDivergenceLoss(temperature=temperature)(t(z), t(expit(z))).item() == pytest.approx(0.0, abs=1e-12)
    zc = np.random.default_rng(9).normal(size=(5, 3))
    assert KLDivergenceLoss(label_is_logits=True)(t(zc), t(zc + 2.0)).item() == pytest.approx(0.0, abs=1e-14)


def test_temperature_flattens_both_distributions():
    z, y = t([3.0, -2.0, 0.5]), t([0.1, 0.9, 0.3])
    values = [KLDivergenceLoss(temperature=T)(z, y).item() for T in (1.0, 4.0, 100.0)]
    assert values[0] > values[1] > values[2] > 0
    assert values[2] < 1e-3


def test_gradient_matches_reference():
    # Binary: ∂KL/∂z = (q − p)/T per sample, times w / #{w ≠ 0}.
    z, y, w = random_batch(12, seed=10)
    logits = t(z).requires_grad_()
    KLDivergenceLoss(temperature=2.0)(logits, t(y), t(w)).backward()
    p = expit(logit(np.clip(y, EPS, 1 - EPS)) / 2.0)
    expected = (expit(z / 2.0) - p) / 2.0 * w / np.count_nonzero(w)
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-9, atol=1e-15)
    zc, yc, wc = random_batch(6, seed=11, num_classes=3)
    loss = KLDivergenceLoss(temperature=1.5)
    assert torch.autograd.gradcheck(lambda x: loss(x, t(yc), t(wc)), (t(zc).requires_grad_(),))


def test_attributes_and_scores():
    loss = KLDivergenceLoss()
    assert loss.task == "regression"
    assert loss.label_values is None
    assert loss.label_range == (0.0, 1.0)
    assert KLDivergenceLoss(label_is_logits=True).label_range is None
    np.testing.assert_allclose(loss.scores(t([0.0, LN3])).numpy(), [0.5, 0.75], rtol=1e-12)
    zc = np.array([[0.0, LN2, 0.0]])
    np.testing.assert_allclose(loss.scores(t(zc)).numpy(), softmax(zc, axis=1), rtol=1e-12)


@pytest.mark.parametrize("label_is_logits", [False, True])
@pytest.mark.parametrize(
    "labels, weights, scale",
    [
        ([1.0, 1.0, 1.0, 1.0], None, 1.0),  # all positive
        ([0.0, 0.0, 0.0, 0.0], None, 1.0),  # all negative
        ([0.0, 1.0, 0.3, 1.0], [0.0, 0.0, 0.0, 0.0], 1.0),  # zero weights
        ([0.0, 1.0, 0.3, 1.0], [1.0, 0.0, 2.0, 0.5], 50.0),  # extreme logits
        ([1.0, 0.0, 0.3, 0.0], None, -50.0),
    ],
)
def test_finite_gradients_on_edge_cases(label_is_logits, labels, weights, scale):
    base = torch.tensor([1.0, -1.0, 0.5, -0.2])
    logits = (base * scale).requires_grad_()
    y = torch.tensor(labels) * (60.0 if label_is_logits else 1.0)  # teacher logits ±60 too
    w = None if weights is None else torch.tensor(weights)
    out = KLDivergenceLoss(temperature=0.5, label_is_logits=label_is_logits)(logits, y, w)
    out.backward()
    assert torch.isfinite(out) and out.item() >= 0
    assert torch.isfinite(logits.grad).all()
    if weights is not None and not any(weights):
        assert out.item() == 0.0


def test_extreme_student_still_learns():
    # Keras' clip would freeze a student probability below 1e-7; the log-space KL still pushes it.
    logits = torch.tensor([-50.0], requires_grad=True)
    out = KLDivergenceLoss()(logits, torch.tensor([0.5]))
    out.backward()
    assert out.item() == pytest.approx(0.5 * 50 - LN2, rel=1e-4)
    assert logits.grad.item() == pytest.approx(-0.5, rel=1e-6)


def test_multiclass_extreme_and_one_hot_teacher():
    logits = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 0.0]], requires_grad=True)
    out = KLDivergenceLoss()(logits, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()


def test_batch_of_one_and_empty_batch():
    z, y = np.array([0.7]), np.array([0.2])
    assert KLDivergenceLoss()(t(z), t(y)).item() == pytest.approx(np_kl(z, y), rel=1e-12)
    empty = torch.zeros(0, requires_grad=True)
    out = KLDivergenceLoss()(empty, torch.zeros(0))
    out.backward()
    assert out.item() == 0.0 and empty.grad is not None


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        KLDivergenceLoss(temperature=temperature)


@pytest.mark.parametrize(
    "logits_shape, labels_shape, weights_shape, name",
    [
        ((4,), (5,), None, "labels"),
        ((4, 3), (4,), None, "labels"),
        ((4, 3), (4, 2), None, "labels"),
        ((4,), (4,), (3,), "weights"),
        ((4, 3), (4, 3), (4, 3), "weights"),
        ((2, 2, 2), (2, 2, 2), None, r"logits: expected shape \(B,\) or \(B, C\)"),
    ],
)
def test_shape_errors(logits_shape, labels_shape, weights_shape, name):
    weights = None if weights_shape is None else torch.ones(weights_shape)
    with pytest.raises(ValueError, match=name):
        KLDivergenceLoss()(torch.zeros(logits_shape), torch.zeros(labels_shape), weights)
