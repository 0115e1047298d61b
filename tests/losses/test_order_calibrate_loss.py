"""OrderCalibrateLoss against hand values and a numpy reference of EasyRec's ORDER_CALIBRATE_LOSS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easyrec.losses.order_calibrate import OrderCalibrateLoss
from tests.losses.references import t


def np_order_calibrate(p, u):
    """Σ_r mean_i relu(p_i − u_ir)."""
    u = u[:, None] if u.ndim == 1 else u
    return float(np.maximum(p[:, None] - u, 0.0).mean(axis=0).sum())


def test_hand_example():
    # One bound: relu(p − u) = (0, 0.2, 0): mean 0.2/3.
    probs = t([0.3, 0.6, 0.2])
    assert OrderCalibrateLoss()(probs, t([0.5, 0.4, 0.2])).item() == pytest.approx(0.2 / 3, abs=1e-12)
    # Two bounds: (0, 0.2, 0) and (0.2, 0, 0.1): 0.2/3 + 0.3/3.
    upper = t([[0.5, 0.1], [0.4, 0.7], [0.2, 0.1]])
    assert OrderCalibrateLoss()(probs, upper).item() == pytest.approx(0.5 / 3, abs=1e-12)


def test_one_dimensional_upper_is_one_bound():
    probs, upper = t([0.9, 0.1, 0.5, 0.7]), t([0.2, 0.3, 0.6, 0.1])
    loss = OrderCalibrateLoss()
    assert loss(probs, upper).item() == loss(probs, upper.unsqueeze(1)).item()


@pytest.mark.parametrize("num_bounds", [1, 3])
def test_matches_reference(num_bounds):
    rng = np.random.default_rng(num_bounds)
    p, u = rng.random(50), rng.random((50, num_bounds))
    assert OrderCalibrateLoss()(t(p), t(u)).item() == pytest.approx(np_order_calibrate(p, u), rel=1e-12)


def test_zero_when_ordered():
    rng = np.random.default_rng(4)
    u = rng.random((20, 2))
    p = u.min(axis=1) * rng.random(20)  # below every bound
    probs, upper = t(p).requires_grad_(), t(u).requires_grad_()
    out = OrderCalibrateLoss()(probs, upper)
    out.backward()
    assert out.item() == 0.0
    assert not probs.grad.any() and not upper.grad.any()


def test_gradient_only_where_violated():
    # Violations: (sample 1, bound 0), (sample 0, bound 1), (sample 2, bound 1); equality (sample 2, bound 0) is not.
    probs = t([0.3, 0.6, 0.2]).requires_grad_()
    upper = t([[0.5, 0.1], [0.4, 0.7], [0.2, 0.1]]).requires_grad_()
    OrderCalibrateLoss()(probs, upper).backward()
    np.testing.assert_allclose(probs.grad.numpy(), [1 / 3, 1 / 3, 1 / 3], rtol=1e-12)
    np.testing.assert_allclose(upper.grad.numpy(), [[0, -1 / 3], [-1 / 3, 0], [0, -1 / 3]], rtol=1e-12)


@pytest.mark.parametrize(
    "probs, upper",
    [
        ([0.9, 0.8, 1.0], [0.1, 0.0, 0.5]),  # all violated
        ([0.0, 0.1, 0.2], [0.5, 0.6, 1.0]),  # none violated
        ([0.5], [[0.2, 0.9]]),  # batch of one
        ([1.0, 0.0], [[0.0], [1.0]]),  # extreme probabilities
    ],
)
def test_finite_gradients_on_edge_cases(probs, upper):
    p, u = torch.tensor(probs, requires_grad=True), torch.tensor(upper, requires_grad=True)
    out = OrderCalibrateLoss()(p, u)
    out.backward()
    assert torch.isfinite(out) and out.item() >= 0
    assert torch.isfinite(p.grad).all() and torch.isfinite(u.grad).all()


def test_probabilities_from_extreme_logits():
    # p(ctcvr) = σ(z_ctr)·σ(z_cvr) against p(ctr) = σ(z_ctr), logits ±50: ordered, so 0 with finite gradients.
    z = torch.tensor([[50.0, -50.0], [-50.0, 50.0], [50.0, 50.0]], requires_grad=True)
    ctr = torch.sigmoid(z[:, 0])
    out = OrderCalibrateLoss()(ctr * torch.sigmoid(z[:, 1]), ctr)
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(z.grad).all()


def test_empty_batch():
    probs, upper = torch.zeros(0, requires_grad=True), torch.zeros(0, 2, requires_grad=True)
    out = OrderCalibrateLoss()(probs, upper)
    out.backward()
    assert out.item() == 0.0
    assert probs.grad is not None and upper.grad is not None


def test_is_not_a_label_loss():
    loss = OrderCalibrateLoss()
    for name in ("label_values", "label_range", "num_outputs", "task", "scores"):
        assert not hasattr(loss, name)


@pytest.mark.parametrize(
    "probs_shape, upper_shape, name",
    [
        ((4, 1), (4,), r"probs: expected shape \(B,\)"),
        ((4,), (3,), "upper"),
        ((4,), (5, 2), "upper"),
        ((4,), (4, 2, 1), "upper"),
    ],
)
def test_shape_errors(probs_shape, upper_shape, name):
    with pytest.raises(ValueError, match=name):
        OrderCalibrateLoss()(torch.zeros(probs_shape), torch.zeros(upper_shape))
