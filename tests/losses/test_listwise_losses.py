"""ListwiseRankLoss and ListwiseDistillLoss against a plain-Python loop over sessions."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from easyrec.losses import ListwiseDistillLoss, ListwiseRankLoss
from easyrec.losses.sessions import segment_log_softmax, segment_sum, session_index
from tests.losses.references import LN2, LN3, np_log_softmax, sid, t

# ---------------------------------------------------------------------- session-loop reference


def np_sessions(n, s):
    """[indices of each session], one list per unique id (the whole batch without sessions)."""
    if s is None:
        return [list(range(n))]
    return [[i for i in range(n) if s[i] == u] for u in sorted(set(s))]


def np_reduce(session_losses, groups, w):
    if w is None:
        return float(np.mean(session_losses))
    session_w = np.array([np.mean([w[i] for i in g]) for g in groups])
    return float((np.array(session_losses) * session_w).sum() / max(np.count_nonzero(session_w), 1))


def np_rank(z, y, w=None, s=None, temperature=1.0, label_is_logits=False, scale=(1.0, 0.0)):
    groups, losses = np_sessions(len(z), s), []
    for g in groups:
        zs = np.array([(z[i] * abs(scale[0]) + scale[1]) / temperature for i in g])
        ys = np.array([y[i] for i in g], dtype=np.float64)
        if label_is_logits:
            ys = np.exp(np_log_softmax(ys / temperature))
        losses.append(-float((ys * np_log_softmax(zs)).sum()))
    return np_reduce(losses, groups, w)


def np_distill(z, y, w=None, s=None, temperature=1.0, label_clip_max_value=512, scale=(1.0, 0.0)):
    groups, losses, c = np_sessions(len(z), s), [], label_clip_max_value
    for g in groups:
        zs = np.array([(z[i] * abs(scale[0]) + scale[1]) / temperature for i in g])
        ys = np.array([math.log1p(c) - math.log(min(max(y[i], 1.0), c)) for i in g])
        ys = ys / ys.sum()
        losses.append(-float((ys * np_log_softmax(zs)).sum()))
    return np_reduce(losses, groups, w)


def random_batch(n, seed, distill=False):
    """Sessions of varied sizes (incl. size 1) with non-contiguous, unsorted ids."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 5, 1, 3, 7, 4][: max(1, n)]
    ids = rng.permutation([3, 17, 42, 5, 99, 8, 61])[: len(sizes)]
    s = np.repeat(ids, sizes)
    order = rng.permutation(len(s))
    s = s[order].tolist()
    b = len(s)
    z = rng.normal(size=b) * 2
    y = rng.integers(1, 12, size=b).astype(float) if distill else rng.integers(0, 3, size=b).astype(float)
    w = rng.uniform(0.2, 2.0, size=b)
    return z.tolist(), y.tolist(), w.tolist(), s


RANK_CONFIGS = [
    {},
    {"temperature": 0.5},
    {"label_is_logits": True},
    {"label_is_logits": True, "temperature": 2.0},
    {"scale_logits": True},
    {"scale_logits": True, "label_is_logits": True, "temperature": 0.7},
]
DISTILL_CONFIGS = [
    {},
    {"temperature": 0.5},
    {"label_clip_max_value": 5},
    {"label_clip_max_value": 1},
    {"scale_logits": True, "temperature": 3.0, "label_clip_max_value": 8},
]

# ---------------------------------------------------------------------- hand-computed examples


def test_rank_literal_raw_labels():
    # Session 7: z = [0, ln3], y = [1, 0]   -> softmax [1/4, 3/4], ℓ = ln4.
    # Session 2: z = [5], y = [1]           -> log softmax 0, ℓ = 0 (size-1 session).
    # Session 9: z = [0, 0], y = [1, 1]     -> raw labels are not normalised: ℓ = 2·ln2.
    z, y, s = t([0.0, LN3, 5.0, 0.0, 0.0]), t([1.0, 0.0, 1.0, 1.0, 1.0]), sid([7, 7, 2, 9, 9])
    assert ListwiseRankLoss()(z, y, None, s).item() == pytest.approx((2 * LN2 + 0 + 2 * LN2) / 3, rel=1e-12)


def test_rank_literal_label_is_logits_with_temperature():
    # T = 2: z/T = [0, ln3] -> softmax [1/4, 3/4]; y/T = [ln3, 0] -> ŷ = [3/4, 1/4].
    # ℓ = −(3/4·ln(1/4) + 1/4·ln(3/4)) = ln4 − ln3/4.
    z, y = t([0.0, 2 * LN3]), t([2 * LN3, 0.0])
    loss = ListwiseRankLoss(temperature=2.0, label_is_logits=True)
    assert loss(z, y).item() == pytest.approx(2 * LN2 - LN3 / 4, rel=1e-12)
    # Same data, raw labels: ŷ = y/T is not used (raw y = [2·ln3, 0]): ℓ = 2·ln3·ln4.
    assert ListwiseRankLoss(temperature=2.0)(z, y).item() == pytest.approx(2 * LN3 * 2 * LN2, rel=1e-12)


def test_distill_literal():
    # C = 3; ranks [0 -> clipped to 1, 10 -> clipped to 3]: y = [ln4 − 0, ln4 − ln3], ŷ = y / ln(16/3).
    # z = [ln3, 0] -> log softmax [ln(3/4), ln(1/4)].
    z, y = t([LN3, 0.0]), t([0.0, 10.0])
    y_hat = np.array([2 * LN2, 2 * LN2 - LN3]) / math.log(16 / 3)
    expected = -(y_hat[0] * math.log(3 / 4) + y_hat[1] * math.log(1 / 4))
    assert ListwiseDistillLoss(label_clip_max_value=3)(z, y).item() == pytest.approx(expected, rel=1e-12)
    # A second, size-1 session contributes 0: the mean halves.
    z2, y2, s2 = t([LN3, 0.0, 4.0]), t([0.0, 10.0, 2.0]), sid([1, 1, 0])
    got = ListwiseDistillLoss(label_clip_max_value=3)(z2, y2, None, s2).item()
    assert got == pytest.approx(expected / 2, rel=1e-12)


# ---------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("kwargs", RANK_CONFIGS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_matches_reference(kwargs, weighted, seed):
    z, y, w, s = random_batch(7, seed)
    if kwargs.get("label_is_logits"):
        y = (np.asarray(y) * 1.7 - 1.0).tolist()
    loss = ListwiseRankLoss(**kwargs)
    scale = (1.0, 0.0)
    if kwargs.get("scale_logits"):
        with torch.no_grad():
            loss.scale.weight.fill_(-1.5)
            loss.scale.bias.fill_(0.3)
        scale = (-1.5, 0.3)
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "scale_logits"}
    got = loss(t(z), t(y), t(w) if weighted else None, sid(s)).item()
    assert got == pytest.approx(np_rank(z, y, w if weighted else None, s, scale=scale, **ref_kwargs), rel=1e-10)


@pytest.mark.parametrize("kwargs", DISTILL_CONFIGS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distill_matches_reference(kwargs, weighted, seed):
    z, y, w, s = random_batch(7, seed, distill=True)
    loss = ListwiseDistillLoss(**kwargs)
    scale = (1.0, 0.0)
    if kwargs.get("scale_logits"):
        with torch.no_grad():
            loss.scale.weight.fill_(2.0)
            loss.scale.bias.fill_(-0.4)
        scale = (2.0, -0.4)
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "scale_logits"}
    got = loss(t(z), t(y), t(w) if weighted else None, sid(s)).item()
    assert got == pytest.approx(np_distill(z, y, w if weighted else None, s, scale=scale, **ref_kwargs), rel=1e-10)


@pytest.mark.parametrize("cls, np_ref", [(ListwiseRankLoss, np_rank), (ListwiseDistillLoss, np_distill)])
def test_no_sessions_is_one_list(cls, np_ref):
    z, y, _, s = random_batch(7, 3, distill=cls is ListwiseDistillLoss)
    got = cls()(t(z), t(y)).item()
    assert got == pytest.approx(np_ref(z, y), rel=1e-10)
    assert got == pytest.approx(cls()(t(z), t(y), None, sid([4] * len(z))).item(), rel=1e-12)
    assert got != pytest.approx(cls()(t(z), t(y), None, sid(s)).item())


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_unsorted_non_contiguous_ids_match_sorted(cls):
    z, y, w, s = random_batch(7, 4, distill=cls is ListwiseDistillLoss)
    order = np.argsort(s, kind="stable")
    dense = {u: k for k, u in enumerate(sorted(set(s)))}
    shuffled = cls()(t(z), t(y), t(w), sid(s)).item()
    sorted_ = cls()(t(z)[order], t(y)[order], t(w)[order], sid([dense[s[i]] for i in order])).item()
    assert shuffled == pytest.approx(sorted_, rel=1e-12)


# ---------------------------------------------------------------------- sample weights


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_sample_weights_are_session_means(cls):
    z, y, _, s = random_batch(7, 5, distill=cls is ListwiseDistillLoss)
    loss, b = cls(), len(z)
    plain = loss(t(z), t(y), None, sid(s)).item()
    assert loss(t(z), t(y), torch.ones(b, dtype=torch.float64), sid(s)).item() == pytest.approx(plain, rel=1e-12)
    # Constant weights c act as EasyRec's scalar loss weight.
    assert loss(t(z), t(y), torch.full((b,), 2.5, dtype=torch.float64), sid(s)).item() == pytest.approx(2.5 * plain)
    # A session whose weights are all 0 drops out of the mean (its count too).
    w = np.ones(b)
    dropped = [i for i in range(b) if s[i] == s[0]]
    w[dropped] = 0.0
    kept = [i for i in range(b) if s[i] != s[0]]
    expected = loss(t(z)[kept], t(y)[kept], None, sid([s[i] for i in kept])).item()
    assert loss(t(z), t(y), t(w.tolist()), sid(s)).item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "cls, kwargs",
    [(ListwiseRankLoss, c) for c in RANK_CONFIGS] + [(ListwiseDistillLoss, c) for c in DISTILL_CONFIGS],
)
def test_gradcheck(cls, kwargs):
    z, y, w, s = random_batch(7, 6, distill=cls is ListwiseDistillLoss)
    loss = cls(**kwargs).double()
    logits = t(z).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), t(w), sid(s)), (logits,))


def test_rank_label_logits_gradcheck():
    # Teacher logits as labels also get a correct gradient (label_is_logits).
    z, y, _, s = random_batch(7, 7)
    labels = t(y).requires_grad_()
    loss = ListwiseRankLoss(temperature=1.5, label_is_logits=True)
    assert torch.autograd.gradcheck(lambda x: loss(t(z), x, None, sid(s)), (labels,))


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_scale_logits_parameters_get_gradients(cls):
    z, y, _, s = random_batch(7, 8, distill=cls is ListwiseDistillLoss)
    loss = cls(scale_logits=True)
    names = {name for name, _ in loss.named_parameters()}
    assert names == {"scale.weight", "scale.bias"}
    assert loss.scale.weight.item() == 1.0 and loss.scale.bias.item() == 0.0
    loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), None, sid(s)).backward()
    assert loss.scale.weight.grad is not None and loss.scale.weight.grad.item() != 0.0
    # b shifts every logit of a session equally: softmax is invariant, so its gradient is exactly 0.
    assert loss.scale.bias.grad is not None and loss.scale.bias.grad.abs().item() < 1e-6
    assert list(cls().parameters()) == []


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_sessions_are_independent(cls):
    z, y, s = t([0.2, 0.5, -1.0, 3.0, 1.0]), t([1.0, 2.0, 3.0, 1.0, 2.0]), sid([0, 0, 1, 1, 1])
    logits = z.clone().requires_grad_()
    cls()(logits, y, None, s).backward()
    # Within a session the log-softmax gradient sums to (Σŷ)·(Σp) − Σŷ = 0 per session for normalised targets.
    if cls is ListwiseDistillLoss:
        assert logits.grad[:2].sum().item() == pytest.approx(0.0, abs=1e-12)
        assert logits.grad[2:].sum().item() == pytest.approx(0.0, abs=1e-12)
    both = cls()(z, y, None, s).item()
    assert both == pytest.approx((cls()(z[:2], y[:2]).item() + cls()(z[2:], y[2:]).item()) / 2, rel=1e-12)


# ---------------------------------------------------------------------- helpers, edge cases


def test_segment_log_softmax_is_stable_and_matches_torch():
    x = t([1000.0, 999.0, -1000.0, 3.0, 3.0, 3.0])
    index, n = session_index(sid([5, 5, 1, 2, 2, 2]), 6)
    assert index.tolist() == [2, 2, 0, 1, 1, 1] and n == 3
    out = segment_log_softmax(x, index, n)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:2], torch.log_softmax(x[:2], 0))
    assert out[2].item() == 0.0
    torch.testing.assert_close(out[3:], torch.full((3,), -math.log(3), dtype=torch.float64))
    torch.testing.assert_close(segment_sum(out.exp(), index, n), torch.ones(3, dtype=torch.float64))
    index, n = session_index(None, 4)
    assert index.tolist() == [0, 0, 0, 0] and n == 1


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_empty_batch_gives_connected_zero(cls):
    logits = torch.zeros(0, requires_grad=True)
    out = cls()(logits, torch.zeros(0))
    assert out.item() == 0.0
    out.backward()


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_float32_batch_of_4096_is_vectorised(cls):
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(4096, generator=generator) * 10).requires_grad_()
    labels = torch.randint(0, 20, (4096,), generator=generator).float()
    sessions = torch.randint(0, 1_000_000, (4096,), generator=generator)
    start = time.perf_counter()
    out = cls(scale_logits=True)(logits, labels, torch.ones(4096), sessions)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(logits.grad).all()
    assert time.perf_counter() - start < 2


# ---------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (ListwiseRankLoss, {"temperature": 0.0}, "temperature"),
        (ListwiseRankLoss, {"temperature": -1.0}, "temperature"),
        (ListwiseRankLoss, {"temperature": float("nan")}, "temperature"),
        (ListwiseDistillLoss, {"temperature": 0.0}, "temperature"),
        (ListwiseDistillLoss, {"label_clip_max_value": 0.5}, "label_clip_max_value"),
        (ListwiseDistillLoss, {"label_clip_max_value": 0}, "label_clip_max_value"),
        (ListwiseDistillLoss, {"label_clip_max_value": float("inf")}, "label_clip_max_value"),
    ],
)
def test_invalid_arguments_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [ListwiseRankLoss, ListwiseDistillLoss])
def test_shape_mismatch_raises(cls):
    with pytest.raises(ValueError, match="labels"):
        cls()(t([0.0, 1.0]), t([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="weights"):
        cls()(t([0.0, 1.0]), t([1.0, 0.0]), t([1.0]))
    with pytest.raises(ValueError, match="sessions"):
        cls()(t([0.0, 1.0]), t([1.0, 0.0]), None, sid([0]))
    with pytest.raises(ValueError, match="logits"):
        cls()(t([[0.0, 1.0]]), t([1.0, 0.0]))


def test_label_values_allow_any_labels():
    assert ListwiseRankLoss.label_values is None
    assert ListwiseDistillLoss.label_values is None
