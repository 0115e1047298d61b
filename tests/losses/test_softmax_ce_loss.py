"""SoftmaxCrossEntropy against hand-computed values and a numpy reference of the sparse softmax cross-entropy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from easyrec.losses.softmax_ce import SoftmaxCrossEntropy
from tests.losses.references import LN2, LN3, t


def np_softmax_ce(z, y, w=None, smoothing=0.0):
    """Σ w·(−Σ_c y'_c log softmax(z)_c) / #{w ≠ 0}, y' = (1 − s)·onehot + s/C; plain mean without weights."""
    n, c = z.shape
    targets = np.full((n, c), smoothing / c)
    targets[np.arange(n), y.astype(int)] += 1 - smoothing
    losses = -(targets * log_softmax(z, axis=1)).sum(axis=1)
    if w is None:
        return float(losses.mean())
    return float((losses * w).sum() / max(np.count_nonzero(w), 1))


def random_batch(n, c, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=(n, c))
    y = rng.integers(0, c, size=n).astype(np.float64)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.3] = 0.0
    return z, y, w


# Rows: softmax (1/3, 1/3, 1/3), (1/2, 1/4, 1/4), (1/2, 1/4, 1/4).
HAND_Z = [[0.0, 0.0, 0.0], [LN2, 0.0, 0.0], [LN2, 0.0, 0.0]]
HAND_Y = [2.0, 0.0, 1.0]


def test_hand_example():
    # CE = (ln 3, ln 2, ln 4).
    loss = SoftmaxCrossEntropy(num_classes=3)
    assert loss(t(HAND_Z), t(HAND_Y)).item() == pytest.approx((LN3 + 3 * LN2) / 3, abs=1e-12)
    # Weights (2, 0, 1): (2·ln 3 + ln 4) / 2 non-zero weights.
    assert loss(t(HAND_Z), t(HAND_Y), t([2.0, 0.0, 1.0])).item() == pytest.approx(LN3 + LN2, abs=1e-12)


def test_label_smoothing_hand_example():
    # s = 0.3, C = 3: y' = (0.8, 0.1, 0.1) for class 0 on softmax (1/2, 1/4, 1/4): 0.8·ln 2 + 0.2·ln 4 = 1.2·ln 2.
    loss = SoftmaxCrossEntropy(num_classes=3, label_smoothing=0.3)
    assert loss(t([HAND_Z[1]]), t([0.0])).item() == pytest.approx(1.2 * LN2, abs=1e-12)
    # Uniform logits: every target sums to 1, so the CE is ln 3 whatever s is.
    assert loss(t([HAND_Z[0]]), t([2.0])).item() == pytest.approx(LN3, abs=1e-12)


@pytest.mark.parametrize("num_classes", [2, 3, 7])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_reference(num_classes, smoothing, weighted):
    z, y, w = random_batch(40, num_classes, seed=num_classes)
    w = w if weighted else None
    loss = SoftmaxCrossEntropy(num_classes, label_smoothing=smoothing)
    expected = np_softmax_ce(z, y, w, smoothing)
    assert loss(t(z), t(y), None if w is None else t(w)).item() == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_reference():
    z, y, w = random_batch(12, 4, seed=5)
    logits = t(z).requires_grad_()
    SoftmaxCrossEntropy(4, label_smoothing=0.2)(logits, t(y), t(w)).backward()
    targets = np.full((12, 4), 0.05)
    targets[np.arange(12), y.astype(int)] += 0.8
    expected = (softmax(z, axis=1) - targets) * (w / np.count_nonzero(w))[:, None]
    np.testing.assert_allclose(logits.grad.numpy(), expected, rtol=1e-10, atol=1e-15)
    assert torch.autograd.gradcheck(lambda x: SoftmaxCrossEntropy(4)(x, t(y), t(w)), (t(z).requires_grad_(),))


def test_attributes_and_scores():
    loss = SoftmaxCrossEntropy(num_classes=4)
    assert loss.num_outputs == 4
    assert loss.label_values == (0.0, 1.0, 2.0, 3.0)
    assert loss.task == "multiclass"
    probs = loss.scores(t(HAND_Z))
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.numpy(), softmax(np.array(HAND_Z), axis=1), rtol=1e-12)


@pytest.mark.parametrize(
    "labels, weights, scale",
    [
        ([0.0, 0.0, 0.0, 0.0], None, 1.0),  # one class only
        ([2.0, 2.0, 2.0, 2.0], None, 1.0),  # the other end only
        ([0.0, 1.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0], 1.0),  # zero weights
        ([0.0, 1.0, 2.0, 1.0], [1.0, 0.0, 2.0, 0.5], 50.0),  # extreme logits
        ([1.0, 0.0, 2.0, 2.0], None, -50.0),
    ],
)
def test_finite_gradients_on_edge_cases(labels, weights, scale):
    z = torch.tensor([[1.0, -1.0, 0.5], [-1.0, 1.0, 0.0], [0.0, 0.3, -1.0], [1.0, 1.0, -1.0]]) * scale
    logits = z.requires_grad_()
    w = None if weights is None else torch.tensor(weights)
    out = SoftmaxCrossEntropy(3, label_smoothing=0.1)(logits, torch.tensor(labels), w)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    if weights is not None and not any(weights):
        assert out.item() == 0.0


def test_batch_of_one_and_empty_batch():
    logits = torch.tensor([[50.0, -50.0]], requires_grad=True)
    out = SoftmaxCrossEntropy(2)(logits, torch.tensor([1.0]))
    out.backward()
    assert out.item() == pytest.approx(100.0, rel=1e-6)
    assert torch.isfinite(logits.grad).all()
    empty = torch.zeros(0, 2, requires_grad=True)
    out = SoftmaxCrossEntropy(2)(empty, torch.zeros(0))
    out.backward()
    assert out.item() == 0.0 and not math.isnan(out.item())


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"num_classes": 3, "label_smoothing": -0.1}, "label_smoothing"),
        ({"num_classes": 3, "label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SoftmaxCrossEntropy(**kwargs)


@pytest.mark.parametrize(
    "logits_shape, labels_shape, weights_shape, name",
    [
        ((4,), (4,), None, r"logits: expected shape \(B, 3\), got \(4,\)"),
        ((4, 2), (4,), None, r"logits: expected shape \(B, 3\), got \(4, 2\)"),
        ((4, 3), (5,), None, "labels"),
        ((4, 3), (4,), (3,), "weights"),
    ],
)
def test_shape_errors(logits_shape, labels_shape, weights_shape, name):
    weights = None if weights_shape is None else torch.ones(weights_shape)
    with pytest.raises(ValueError, match=name):
        SoftmaxCrossEntropy(3)(torch.zeros(logits_shape), torch.zeros(labels_shape), weights)
