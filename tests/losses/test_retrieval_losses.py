"""InBatchSoftmaxLoss and SoftmaxNegativeMiningLoss against plain-Python references and EasyRec's goldens."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from easyrec.losses.in_batch_softmax import InBatchSoftmaxLoss, duplicate_mask
from easyrec.losses.softmax_negative_mining import (
    SoftmaxNegativeMiningLoss,
    draw_shifts,
    softmax_loss_with_negative_mining,
)
from tests.losses.references import LN2, np_log_softmax, t

CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"

# EasyRec's loss_test.py inputs for softmax_loss_with_negative_mining.
GOLDEN_USER = [
    [0.1, 0.5, 0.3],
    [0.8, -0.1, 0.3],
    [0.28, 0.3, 0.9],
    [0.37, 0.45, 0.93],
    [-0.7, 0.15, 0.03],
    [0.18, 0.9, -0.3],
]
GOLDEN_ITEM = [
    [0.1, -0.5, 0.3],
    [0.8, -0.31, 0.3],
    [0.7, -0.45, 0.15],
    [0.08, -0.31, -0.9],
    [-0.7, 0.85, 0.03],
    [0.18, 0.89, -0.3],
]
GOLDEN_LABELS = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]

# ---------------------------------------------------------------------- references


def np_normalize(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt(np.maximum((x**2).sum(-1, keepdims=True), 1e-12))


def np_weighted_mean(losses, w):
    losses = np.asarray(losses)
    return float(losses.mean()) if w is None else float((losses * w).sum() / w.sum())


def np_negative_mining(user, item, y, w, shifts, margin=0.0, gamma=1.0, t_coef=1.0):
    u, v = np_normalize(user), np_normalize(item)
    b = len(y)
    losses, weights = [], []
    for i in range(b):
        if y[i] <= 0:
            continue
        pos = float(u[i] @ v[i]) - margin
        negs = []
        for s in shifts:
            neg = float(u[i] @ v[(i - s) % b])
            negs.append(t_coef * neg + t_coef - 1 if pos - neg < 0 else neg)
        logits = gamma * np.array([pos, *negs])
        losses.append(-np_log_softmax(logits)[0])
        weights.append(1.0 if w is None else w[i])
    if not losses:
        return 0.0
    losses, weights = np.array(losses), np.array(weights)
    return float((losses * weights).sum() / max(np.count_nonzero(weights), 1))


def np_in_batch(
    outputs, y, w=None, temperature=1.0, cosine=False, symmetric=False, mask_duplicates=True, reg_pos_weight=1.0
):
    outputs = np.asarray(outputs, dtype=np.float64)
    rows = [i for i in range(len(y)) if y[i] > 0]
    raw_items = outputs[rows, 1]
    users, items = outputs[rows, 0], raw_items
    if cosine:
        users, items = np_normalize(users), np_normalize(items)
    p = len(rows)

    def kept(i):
        """The columns of row i's softmax: i and every item that is not a copy of item i."""
        return [j for j in range(p) if j == i or not (mask_duplicates and np.array_equal(raw_items[j], raw_items[i]))]

    ce, reg = [], []
    for i in range(p):
        cols = kept(i)
        row = [users[i] @ items[j] / temperature for j in cols]
        loss = -np_log_softmax(row)[cols.index(i)]
        if symmetric:
            col = [users[j] @ items[i] / temperature for j in cols]
            loss = 0.5 * (loss - np_log_softmax(col)[cols.index(i)])
        ce.append(loss)
        reg.append(max(-(users[i] @ items[i]), 0.0))
    pw = None if w is None else np.asarray(w, dtype=np.float64)[rows]
    return np_weighted_mean(ce, pw) + reg_pos_weight * np_weighted_mean(reg, pw)


def two_tower_batch(b, d, seed, positive_rate=0.7, duplicates=True):
    rng = np.random.default_rng(seed)
    outputs = rng.normal(size=(b, 2, d))
    if duplicates:  # the same item in rows 0, 3 and 5
        outputs[3, 1] = outputs[5, 1] = outputs[0, 1]
    labels = (rng.random(b) < positive_rate).astype(np.float64)
    labels[[i for i in (0, 3, 5) if i < b]] = 1.0
    weights = rng.uniform(0.5, 2.0, size=b)
    weights[1] = 0.0
    return outputs, labels, weights


# ---------------------------------------------------------------------- negative mining


def golden(shifts, **kwargs):
    return softmax_loss_with_negative_mining(
        t(GOLDEN_USER), t(GOLDEN_ITEM), t(GOLDEN_LABELS), shifts=torch.tensor(shifts), **kwargs
    ).item()


def test_negative_mining_reproduces_easyrec_goldens_with_their_shifts():
    # EasyRec's goldens come from TF's RNG; they are the losses of one draw of the shifts each:
    # num_negative_samples=1 -> 0.5240243 (shift 2); num_negative_samples=2 -> 0.48577175 (shifts 3, 3).
    assert golden([2]) == pytest.approx(0.5240243, abs=1e-6)
    assert golden([3, 3]) == pytest.approx(0.48577175, abs=1e-6)
    for shifts in ([1], [4], [2, 5], [1, 3]):
        assert golden(shifts) == pytest.approx(
            np_negative_mining(GOLDEN_USER, GOLDEN_ITEM, GOLDEN_LABELS, None, shifts), rel=1e-12
        )


def test_negative_mining_draws_shifts_with_the_global_generator():
    outputs = torch.stack([t(GOLDEN_USER), t(GOLDEN_ITEM)], dim=1)
    loss = SoftmaxNegativeMiningLoss(num_negative_samples=1)
    reachable = [golden([s]) for s in range(1, 6)]
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = loss(outputs, t(GOLDEN_LABELS)).item()
        torch.manual_seed(seed)
        shifts = draw_shifts(1, 6)
        assert 1 <= shifts.item() < 6
        assert out == pytest.approx(golden(shifts.tolist()), rel=1e-12)
        seen.add(min(range(5), key=lambda k: abs(reachable[k] - out)))
    assert len(seen) > 1  # the draws differ


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"margin": 0.2}, {"gamma": 5.0}, {"coefficient_of_support_vector": 1.5, "margin": 0.1, "gamma": 3.0}],
)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shifts", [[1], [3, 7, 3], [2, 4, 6, 8, 9]])
def test_negative_mining_matches_reference(kwargs, weighted, shifts):
    outputs, labels, weights = two_tower_batch(10, 4, seed=len(shifts) + len(kwargs), duplicates=False)
    w = weights if weighted else None
    out = softmax_loss_with_negative_mining(
        t(outputs[:, 0]),
        t(outputs[:, 1]),
        t(labels),
        None if w is None else t(w),
        shifts=torch.tensor(shifts),
        **kwargs,
    )
    t_coef = kwargs.get("coefficient_of_support_vector", 1.0)
    margin, gamma = kwargs.get("margin", 0.0), kwargs.get("gamma", 1.0)
    expected = np_negative_mining(outputs[:, 0], outputs[:, 1], labels, w, shifts, margin, gamma, t_coef)
    assert out.item() == pytest.approx(expected, rel=1e-10)


def test_negative_mining_support_vector_hand_example():
    # Row 0: pos 1, its negative (item 1) 0: not a support vector. Row 1: pos 0, its negative (item 0) 1 > 0:
    # a support vector, raised to t·1 + t − 1 = 3 for t = 2.
    user, item, labels = t([[1.0, 0.0], [1.0, 0.0]]), t([[2.0, 0.0], [0.0, 3.0]]), t([1.0, 1.0])
    shifts = torch.tensor([1])
    out = softmax_loss_with_negative_mining(user, item, labels, shifts=shifts, coefficient_of_support_vector=2.0)
    assert out.item() == pytest.approx((math.log1p(math.exp(-1.0)) + math.log1p(math.exp(3.0))) / 2, rel=1e-12)
    # margin 0.5: pos' = (0.5, −0.5); row 0 still beats its negative; gamma 2 doubles every logit.
    out = softmax_loss_with_negative_mining(
        user, item, labels, shifts=shifts, margin=0.5, gamma=2.0, coefficient_of_support_vector=2.0
    )
    assert out.item() == pytest.approx((math.log1p(math.exp(-1.0)) + math.log1p(math.exp(7.0))) / 2, rel=1e-12)
    # Weights (3, 0): only row 0, weighted 3, over one non-zero weight.
    out = softmax_loss_with_negative_mining(user, item, labels, t([3.0, 0.0]), shifts=shifts)
    assert out.item() == pytest.approx(3 * math.log1p(math.exp(-1.0)), rel=1e-12)


def test_negative_mining_negatives_come_from_every_row():
    # Row 1 is not positive but lends its item to row 0 (shift 1 with B = 2).
    user, labels = t([[1.0, 0.0], [0.0, 1.0]]), t([1.0, 0.0])
    shifts = torch.tensor([1])
    out_a = softmax_loss_with_negative_mining(user, t([[1.0, 0.0], [0.0, 1.0]]), labels, shifts=shifts)
    out_b = softmax_loss_with_negative_mining(user, t([[1.0, 0.0], [1.0, 0.0]]), labels, shifts=shifts)
    assert out_a.item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-12)
    assert out_b.item() == pytest.approx(LN2, rel=1e-12)


def test_negative_mining_more_negatives_than_rows_and_tiny_batches():
    outputs, labels, _ = two_tower_batch(4, 3, seed=2, duplicates=False)
    out = SoftmaxNegativeMiningLoss(num_negative_samples=10)(t(outputs), t(labels))
    assert torch.isfinite(out) and out.item() > 0
    x = t(outputs[:1]).requires_grad_()
    single = SoftmaxNegativeMiningLoss()(x, t([1.0]))
    assert single.item() == 0.0
    single.backward()
    assert x.grad.abs().sum().item() == 0.0


@pytest.mark.parametrize("shifts", [[0], [6], [-1], [], [[1, 2]]])
def test_negative_mining_bad_shifts_are_refused(shifts):
    with pytest.raises(ValueError, match="shifts"):
        golden(shifts)


# ---------------------------------------------------------------------- in-batch softmax


def test_in_batch_hand_examples():
    eye = t([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    ones = t([1.0, 1.0])
    # S = I: −log(e / (e + 1)) per row.
    assert InBatchSoftmaxLoss()(eye, ones).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-12)
    assert InBatchSoftmaxLoss(temperature=0.5)(eye, ones).item() == pytest.approx(math.log1p(math.exp(-2.0)))
    # The same item twice: users (1, 0), (0, 1); S = [[1, 1], [0, 0]].
    dup = t([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    assert InBatchSoftmaxLoss()(dup, ones).item() == 0.0  # each row's only column is its own item
    assert InBatchSoftmaxLoss(mask_duplicates=False)(dup, ones).item() == pytest.approx(LN2, rel=1e-12)
    # reg_pos: one pair with <u, v> = −2 -> relu(2); the softmax over one column is 0.
    anti = t([[[-1.0, 0.0], [2.0, 0.0]]])
    assert InBatchSoftmaxLoss()(anti, t([1.0])).item() == pytest.approx(2.0)
    assert InBatchSoftmaxLoss(reg_pos_weight=0.5)(anti, t([1.0])).item() == pytest.approx(1.0)
    assert InBatchSoftmaxLoss(cosine=True)(anti, t([1.0])).item() == pytest.approx(1.0)  # cos = −1


def test_in_batch_symmetric_hand_example():
    # S = [[2, 1], [0, 1]]: user->item rows give log(1 + e^{−1}) each; item->user columns [2, 0] and [1, 1] give
    # log(1 + e^{−2}) and ln 2.
    outputs = t([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    forward = math.log1p(math.exp(-1.0))
    backward = (math.log1p(math.exp(-2.0)) + LN2) / 2
    assert InBatchSoftmaxLoss()(outputs, t([1.0, 1.0])).item() == pytest.approx(forward, rel=1e-12)
    out = InBatchSoftmaxLoss(symmetric=True)(outputs, t([1.0, 1.0]))
    assert out.item() == pytest.approx((forward + backward) / 2, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"temperature": 0.1, "cosine": True},
        {"temperature": 0.5, "symmetric": True},
        {"cosine": True, "symmetric": True, "reg_pos_weight": 0.0},
        {"mask_duplicates": False},
        {"mask_duplicates": False, "symmetric": True, "reg_pos_weight": 2.0},
    ],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_in_batch_matches_reference(kwargs, weighted):
    outputs, labels, weights = two_tower_batch(9, 4, seed=len(kwargs))
    w = weights if weighted else None
    out = InBatchSoftmaxLoss(**kwargs)(t(outputs), t(labels), None if w is None else t(w))
    assert out.item() == pytest.approx(np_in_batch(outputs, labels, w, **kwargs), rel=1e-10)


def test_in_batch_ignores_label_zero_rows_and_logs_parts():
    outputs, labels, weights = two_tower_batch(9, 4, seed=1)
    labels[2] = 0.0
    loss = InBatchSoftmaxLoss()
    assert loss.log_values() == {}
    out = loss(t(outputs), t(labels), t(weights))
    keep = labels > 0
    assert out.item() == pytest.approx(loss(t(outputs[keep]), t(labels[keep]), t(weights[keep])).item(), rel=1e-12)
    logged = loss.log_values()
    assert set(logged) == {"train/loss/in_batch_ce", "train/loss/reg_pos"}
    assert logged["train/loss/in_batch_ce"] + logged["train/loss/reg_pos"] == pytest.approx(out.item())


def test_duplicate_mask():
    items = t([[1.0, 2.0], [0.0, 1.0], [1.0, 2.0], [1.0, 2.0000001]])
    expected = [[False, False, True, False], [False] * 4, [True, False, False, False], [False] * 4]
    assert duplicate_mask(items).tolist() == expected


def test_infonce_conf_is_cosine_with_temperature_0_1():
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "infonce.yaml"))
    assert cfg.pop("_target_") == "easyrec.losses.InBatchSoftmaxLoss"
    loss = InBatchSoftmaxLoss(**cfg)
    assert loss.temperature == 0.1 and loss.cosine
    outputs, labels, _ = two_tower_batch(8, 3, seed=6)
    expected = np_in_batch(outputs, labels, temperature=0.1, cosine=True)
    assert loss(t(outputs), t(labels)).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------- in-batch softmax: duplicates
# (the contract shared with the other two-tower losses is in test_two_tower_losses.py)


def test_in_batch_identical_embeddings_are_all_duplicates():
    # Every item is a copy of every other: each softmax keeps only its own column -> ce = 0; reg = relu(−|x|²) = 0.
    x = t([[[1.0, 2.0], [1.0, 2.0]]] * 3)
    assert InBatchSoftmaxLoss()(x, t([1.0, 1.0, 1.0])).item() == 0.0
    assert InBatchSoftmaxLoss(mask_duplicates=False)(x, t([1.0, 1.0, 1.0])).item() == pytest.approx(math.log(3))


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_with_duplicate_items(symmetric):
    # The user side, with the duplicated items held fixed.
    outputs, labels, weights = two_tower_batch(7, 3, seed=8)
    items = t(outputs[:, 1])
    loss = InBatchSoftmaxLoss(symmetric=symmetric)
    users = t(outputs[:, 0]).requires_grad_()
    assert torch.autograd.gradcheck(lambda u: loss(torch.stack([u, items], 1), t(labels), t(weights)), (users,))
