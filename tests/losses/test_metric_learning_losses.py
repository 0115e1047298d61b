"""circle_loss / CircleLoss and multi_similarity_loss / MultiSimilarityLoss against plain-Python references and
EasyRec's golden value."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from easyrec.losses.circle import CircleLoss, circle_loss
from easyrec.losses.embeddings import l2_normalize, pair_anchors, positive_mask
from easyrec.losses.multi_similarity import MultiSimilarityLoss, multi_similarity_loss
from tests.losses.references import LN2, sid, t

# EasyRec's loss_test.py inputs.
GOLDEN_EMB = [
    [0.1, 0.2, 0.15, 0.1],
    [0.3, 0.6, 0.45, 0.3],
    [0.13, 0.6, 0.45, 0.3],
    [0.3, 0.26, 0.45, 0.3],
    [0.3, 0.6, 0.5, 0.13],
    [0.08, 0.43, 0.21, 0.6],
]
GOLDEN_LABELS = [1, 1, 2, 2, 3, 3]

# ---------------------------------------------------------------------- references (loops over anchors)


def softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def lse(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def np_cosine(emb):
    emb = np.asarray(emb, dtype=np.float64)
    norms = np.sqrt(np.maximum((emb**2).sum(1, keepdims=True), 1e-12))
    return (emb / norms) @ (emb / norms).T


def np_groups(y, s, i):
    """(positives, negatives) of anchor i: same label (and session), i excluded; everything else."""
    n = len(y)
    pos = [j for j in range(n) if j != i and y[j] == y[i] and (s is None or s[j] == s[i])]
    neg = [j for j in range(n) if j != i and j not in pos]
    return pos, neg


def np_reduce(losses, w):
    losses = np.asarray(losses)
    if w is None:
        return float(losses.mean())
    w = np.asarray(w, dtype=np.float64)
    return float((losses * w).sum() / max(np.count_nonzero(w), 1))


def np_circle(emb, y, s=None, margin=0.25, gamma=32.0, w=None, frozen=None):
    """``frozen``: embeddings whose cosines give the (stop-gradient) weights a_p, a_n; default ``emb``."""
    cos = np_cosine(emb)
    a_cos = cos if frozen is None else np_cosine(frozen)
    losses = []
    for i in range(len(y)):
        pos, neg = np_groups(y, s, i)
        if not pos or not neg:  # EasyRec's −1e12 mask gives softplus(≈ −1e12) = 0
            losses.append(0.0)
            continue
        lp = [-max(1 + margin - a_cos[i, j], 0.0) * (cos[i, j] - (1 - margin)) * gamma for j in pos]
        ln = [max(a_cos[i, j] + margin, 0.0) * (cos[i, j] - margin) * gamma for j in neg]
        losses.append(softplus(lse(lp) + lse(ln)))
    return np_reduce(losses, w)


def np_multi_similarity(emb, y, s=None, alpha=2.0, beta=50.0, lamb=1.0, eps=0.1, ms_mining=False, w=None):
    sim = np.maximum(np_cosine(emb), 0.0)
    losses = []
    for i in range(len(y)):
        pos, neg = np_groups(y, s, i)
        if ms_mining:
            hardest_neg = max([sim[i, j] for j in neg], default=0.0)
            hardest_pos = min([sim[i, j] for j in pos], default=0.0)
            pos, neg = (
                [j for j in pos if sim[i, j] < hardest_neg + eps],
                [j for j in neg if sim[i, j] > hardest_pos - eps],
            )
        pos_term = math.log(1 + sum(math.exp(-alpha * (sim[i, j] - lamb)) for j in pos)) / alpha
        neg_term = math.log(1 + sum(math.exp(beta * (sim[i, j] - lamb)) for j in neg)) / beta
        losses.append(pos_term + neg_term)
    return np_reduce(losses, w)


def random_batch(n, d, seed, num_labels=3, num_sessions=2):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d))
    y = rng.integers(0, num_labels, size=n)
    s = rng.integers(0, num_sessions, size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.random(n) < 0.3] = 0.0
    return emb, y, s, w


def two_tower_batch(b, d, seed, positive_rate=0.6):
    rng = np.random.default_rng(seed)
    outputs = rng.normal(size=(b, 2, d))
    labels = (rng.random(b) < positive_rate).astype(np.float64)
    labels[0] = 1.0
    weights = rng.uniform(0.5, 2.0, size=b)
    return outputs, labels, weights


def anchors_of(outputs, labels, weights=None):
    """NumPy: the 2P anchors [users; items], their class ids and weights."""
    pos = labels > 0
    p = int(pos.sum())
    emb = np.concatenate([outputs[pos, 0], outputs[pos, 1]])
    ids = np.concatenate([np.arange(p), np.arange(p)])
    return emb, ids, None if weights is None else np.concatenate([weights[pos], weights[pos]])


# ---------------------------------------------------------------------- circle


def test_circle_golden_from_easyrec():
    labels = sid(GOLDEN_LABELS)
    out = circle_loss(torch.tensor(GOLDEN_EMB), labels, labels, margin=0.25, gamma=64)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(52.75707, abs=1e-4)
    out64 = circle_loss(t(GOLDEN_EMB), labels, labels, margin=0.25, gamma=64)
    assert out64.item() == pytest.approx(np_circle(GOLDEN_EMB, GOLDEN_LABELS, GOLDEN_LABELS, 0.25, 64), rel=1e-12)
    assert out64.item() == pytest.approx(52.75707, abs=1e-5)


def test_triplet_mask_as_easyrec():
    labels = sid([1, 1, 2, 2, 3, 3, 4, 5])
    expected = np.zeros((8, 8), dtype=bool)
    for i, j in [(0, 1), (2, 3), (4, 5)]:
        expected[i, j] = expected[j, i] = True
    assert positive_mask(labels, labels).numpy().tolist() == expected.tolist()
    assert positive_mask(labels).numpy().tolist() == expected.tolist()
    # Sessions split a label: 0 and 1 share label 1 but not the session.
    mask = positive_mask(labels, sid([0, 1, 0, 0, 0, 0, 0, 0]))
    assert not mask[0, 1] and mask[2, 3]


@pytest.mark.parametrize("margin, gamma", [(0.25, 32.0), (0.1, 8.0), (0.4, 64.0)])
@pytest.mark.parametrize("with_sessions", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_circle_matches_reference(margin, gamma, with_sessions, weighted):
    emb, y, s, w = random_batch(12, 5, seed=int(gamma) + with_sessions)
    s, w = (s if with_sessions else None), (w if weighted else None)
    out = circle_loss(t(emb), sid(y), None if s is None else sid(s), margin, gamma, None if w is None else t(w))
    expected = np_circle(emb, y, s, margin, gamma, w)
    assert expected > 0
    assert out.item() == pytest.approx(expected, rel=1e-10)


def test_circle_hand_example():
    # Two pairs on orthogonal axes: each anchor has one positive (cos 1) and two negatives (cos 0):
    # logit_p = −m·(1 − (1 − m))·γ = −m²γ, logit_n = m·(0 − m)·γ = −m²γ (twice) -> softplus(ln 2 − 2m²γ).
    outputs = t([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 3.0], [0.0, 1.0]]])
    loss = CircleLoss(margin=0.25, gamma=32.0)
    assert loss(outputs, t([1.0, 1.0])).item() == pytest.approx(math.log1p(2 * math.exp(-4.0)), rel=1e-12)
    # A label-0 row is ignored altogether.
    more = torch.cat([outputs, t([[[5.0, 1.0], [-1.0, 2.0]]])])
    assert loss(more, t([1.0, 1.0, 0.0])).item() == pytest.approx(math.log1p(2 * math.exp(-4.0)), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_circle_two_tower_matches_reference(weighted):
    outputs, labels, weights = two_tower_batch(10, 4, seed=3)
    w = weights if weighted else None
    emb, ids, anchor_w = anchors_of(outputs, labels, w)
    out = CircleLoss(margin=0.2, gamma=16.0)(t(outputs), t(labels), None if w is None else t(w))
    assert out.item() == pytest.approx(np_circle(emb, ids, None, 0.2, 16.0, anchor_w), rel=1e-10)


# ---------------------------------------------------------------------- multi-similarity


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"alpha": 1.0, "beta": 10.0, "lamb": 0.5}, {"ms_mining": True}, {"ms_mining": True, "eps": 0.3, "lamb": 0.4}],
)
@pytest.mark.parametrize("with_sessions", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_multi_similarity_matches_reference(kwargs, with_sessions, weighted):
    emb, y, s, w = random_batch(12, 3, seed=len(kwargs) + 2 * with_sessions)
    s, w = (s if with_sessions else None), (w if weighted else None)
    out = multi_similarity_loss(
        t(emb), sid(y), None if s is None else sid(s), weights=None if w is None else t(w), **kwargs
    )
    expected = np_multi_similarity(emb, y, s, w=w, **kwargs)
    assert expected > 0
    assert out.item() == pytest.approx(expected, rel=1e-10)


def test_multi_similarity_mining_drops_pairs():
    emb, y, _, _ = random_batch(16, 3, seed=5)
    mined = multi_similarity_loss(t(emb), sid(y), ms_mining=True, eps=0.0, lamb=0.5).item()
    plain = multi_similarity_loss(t(emb), sid(y), lamb=0.5).item()
    assert mined < plain
    assert mined == pytest.approx(np_multi_similarity(emb, y, ms_mining=True, eps=0.0, lamb=0.5), rel=1e-10)


def test_multi_similarity_golden_inputs():
    # EasyRec has no ms golden: its ms_loss reshapes labels to (N, 1) and so broadcasts the masks to (N, N, N)
    # (0.5553 on these inputs); this is the per-anchor loss of the paper.
    out = multi_similarity_loss(t(GOLDEN_EMB), sid(GOLDEN_LABELS), sid(GOLDEN_LABELS))
    assert out.item() == pytest.approx(np_multi_similarity(GOLDEN_EMB, GOLDEN_LABELS), rel=1e-12)


def test_multi_similarity_hand_example():
    # Orthogonal pairs: pos S = 1, two negatives S = 0; with λ = 1: ln 2 / α + ln(1 + 2e^{−β}) / β.
    outputs = t([[[1.0, 0.0], [2.0, 0.0]], [[0.0, 3.0], [0.0, 1.0]]])
    expected = LN2 / 2 + math.log1p(2 * math.exp(-50.0)) / 50
    assert MultiSimilarityLoss()(outputs, t([1.0, 1.0])).item() == pytest.approx(expected, rel=1e-12)
    # λ = 0.5, α = 1, β = 4: log(1 + e^{−0.5}) + log(1 + 2e^{−2}) / 4.
    expected = math.log1p(math.exp(-0.5)) + math.log1p(2 * math.exp(-2.0)) / 4
    out = MultiSimilarityLoss(alpha=1.0, beta=4.0, lamb=0.5)(outputs, t([1.0, 1.0]))
    assert out.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("ms_mining", [False, True])
def test_multi_similarity_two_tower_matches_reference(ms_mining):
    outputs, labels, weights = two_tower_batch(10, 4, seed=4)
    emb, ids, anchor_w = anchors_of(outputs, labels, weights)
    loss = MultiSimilarityLoss(lamb=0.5, ms_mining=ms_mining)
    out = loss(t(outputs), t(labels), t(weights))
    assert out.item() == pytest.approx(np_multi_similarity(emb, ids, lamb=0.5, ms_mining=ms_mining, w=anchor_w))


# ---------------------------------------------------------------------- both: anchors, gradients, edge cases
# (the contract shared with the other two-tower losses is in test_two_tower_losses.py)


def test_circle_gradient_stops_at_the_pair_weights():
    # a_p and a_n are constants for the gradient (EasyRec's stop_gradient): compare with central differences
    # of the reference with a_p, a_n frozen at the evaluation point.
    emb, y, s, w = random_batch(8, 3, seed=21)
    x = t(emb).requires_grad_()
    circle_loss(x, sid(y), sid(s), 0.25, 8.0, t(w)).backward()
    h = 1e-6
    numeric = np.zeros_like(emb)
    for index in np.ndindex(*emb.shape):
        step = np.zeros_like(emb)
        step[index] = h
        up = np_circle(emb + step, y, s, 0.25, 8.0, w, frozen=emb)
        down = np_circle(emb - step, y, s, 0.25, 8.0, w, frozen=emb)
        numeric[index] = (up - down) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy(), numeric, rtol=1e-5, atol=1e-7)


def test_pair_anchors():
    user, item = t([[1.0, 0.0], [0.0, 1.0]]), t([[2.0, 0.0], [0.0, 2.0]])
    emb, ids, w = pair_anchors(user, item, t([3.0, 4.0]))
    assert emb.tolist() == [[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]]
    assert ids.tolist() == [0, 1, 0, 1] and w.tolist() == [3.0, 4.0, 3.0, 4.0]
    assert pair_anchors(user, item, None)[2] is None


def test_one_positive_row_has_no_negative():
    # The circle loss needs a negative: with one pair both anchors score softplus(≈ −1e12) = 0.
    outputs = t([[[1.0, 0.0], [0.3, 0.8]], [[0.2, 1.0], [1.0, 0.0]]])
    assert CircleLoss()(outputs, t([0.0, 1.0])).item() == 0.0
    # The ms loss still pulls the pair together: (1/α)·log(1 + e^{−α(S − λ)}) for both anchors.
    s = 0.2 / math.hypot(0.2, 1.0)
    expected = math.log1p(math.exp(-2.0 * (s - 1.0))) / 2.0
    assert MultiSimilarityLoss()(outputs, t([0.0, 1.0])).item() == pytest.approx(expected, rel=1e-12)


def test_functional_empty_batch():
    x = torch.zeros(0, 3, requires_grad=True)
    assert circle_loss(x, torch.zeros(0)).item() == 0.0
    assert multi_similarity_loss(x, torch.zeros(0)).item() == 0.0


def test_l2_normalize_matches_tensorflow():
    x = t([[3.0, 4.0], [0.0, 0.0], [1e-7, 0.0]])
    # tf.nn.l2_normalize: x / sqrt(max(Σx², 1e-12)).
    torch.testing.assert_close(l2_normalize(x), t([[0.6, 0.8], [0.0, 0.0], [0.1, 0.0]]))
