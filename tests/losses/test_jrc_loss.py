"""JRCLoss against a plain-Python loop over samples and sessions written from the spec formulas."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from easyrec.losses import JRCLoss
from tests.losses.references import LN2, LN3, np_log_softmax, sid, t

# ---------------------------------------------------------------------- per-sample loop reference


def np_ce(z, y, w=None):
    """Weighted 2-class softmax CE, Σ w·ℓ / #{w ≠ 0}."""
    n = len(y)
    w = [1.0] * n if w is None else w
    losses = [-np_log_softmax(z[j])[int(y[j])] for j in range(n)]
    return sum(w[j] * losses[j] for j in range(n)) / max(sum(1 for v in w if v != 0), 1)


def np_ge(z, y, w=None, s=None, same_label_loss=True):
    n = len(y)
    w = [1.0] * n if w is None else w
    s = [0] * n if s is None else s
    total = 0.0
    for j in range(n):
        session = [k for k in range(n) if s[k] == s[j]]
        if same_label_loss:
            log_pos = np_log_softmax([z[k][1] for k in session])
            log_neg = np_log_softmax([z[k][0] for k in session])
            bracket = 0.0
            for pos, i in enumerate(session):
                bracket -= log_pos[pos] if y[i] == 1 else log_neg[pos]
            total += w[j] / len(session) * bracket
        else:
            c = 1 if y[j] == 1 else 0  # the class of j's own logit; the other label's samples compete
            others = [z[k][c] for k in session if y[k] != y[j]]
            total += w[j] * -np_log_softmax([z[j][c], *others])[0]
    return total / n


def np_jrc(z, y, w=None, s=None, alpha=0.5, same_label_loss=True):
    return alpha * np_ce(z, y, w) + (1 - alpha) * np_ge(z, y, w, s, same_label_loss)


def random_batch(seed, weighted=True):
    """Sessions of varied sizes (incl. 1), some with one label only, unsorted non-contiguous ids, zero weights."""
    rng = np.random.default_rng(seed)
    sizes = [1, 2, 5, 1, 3, 7, 4]
    ids = rng.permutation([3, 17, 42, 5, 99, 8, 61])
    s = np.repeat(ids, sizes)
    y = rng.integers(0, 2, size=len(s)).astype(float)
    y[s == ids[2]] = 1.0  # a 5-sample session of positives only
    y[s == ids[4]] = 0.0  # a 3-sample session of negatives only
    order = rng.permutation(len(s))
    s, y = s[order].tolist(), y[order].tolist()
    z = (rng.normal(size=(len(s), 2)) * 2).tolist()
    w = rng.uniform(0.2, 2.0, size=len(s))
    w[rng.choice(len(s), 4, replace=False)] = 0.0
    return z, y, (w.tolist() if weighted else None), s


# ---------------------------------------------------------------------- literal examples

# session 7: [sample 0 (y=1, z=[0, ln3]), sample 1 (y=0, z=[0, 0])]
# session 2: [sample 2 (y=1, z=[0, 0]), sample 3 (y=1, z=[0, ln3])]
LIT_Z = [[0.0, LN3], [0.0, 0.0], [0.0, 0.0], [0.0, LN3]]
LIT_Y = [1.0, 0.0, 1.0, 1.0]
LIT_S = [7, 7, 2, 2]
LIT_CE = (3 * LN2 - LN3) / 2  # (2·(ln4 − ln3) + 2·ln2) / 4
# L_7 = −ln(3/4) − ln(1/2); L_2 = −ln(1/4) − ln(3/4); ge = (L_7 + L_2) / 4
LIT_GE_SAME = (7 * LN2 - 2 * LN3) / 4
# sample 0 vs sample 1's z⁺: −ln(3/4); sample 1 vs sample 0's z⁻: ln2; session 2 has no negatives: 0, 0
LIT_GE_OTHER = (3 * LN2 - LN3) / 4


@pytest.mark.parametrize(("same_label_loss", "ge"), [(True, LIT_GE_SAME), (False, LIT_GE_OTHER)])
def test_literal_two_sessions(same_label_loss, ge):
    loss = JRCLoss(alpha=0.25, same_label_loss=same_label_loss)
    value = loss(t(LIT_Z), t(LIT_Y), None, sid(LIT_S))
    assert value.item() == pytest.approx(0.25 * LIT_CE + 0.75 * ge, abs=1e-12)
    assert loss.log_values() == pytest.approx({"train/loss/jrc_ce": LIT_CE, "train/loss/jrc_ge": ge}, abs=1e-12)
    assert np_jrc(LIT_Z, LIT_Y, None, LIT_S, 0.25, same_label_loss) == pytest.approx(value.item(), abs=1e-12)


def test_literal_weighted():
    """w = [2, 0, 1, 1]: ce over the 3 non-zero weights; ge: (2/2)·L_7 + 0 + (1/2)·L_2 + (1/2)·L_2, over B = 4."""
    loss = JRCLoss(alpha=0.5)
    value = loss(t(LIT_Z), t(LIT_Y), t([2.0, 0.0, 1.0, 1.0]), sid(LIT_S))
    ce = (2 * (2 * LN2 - LN3) + LN2 + (2 * LN2 - LN3)) / 3
    assert loss.log_values()["train/loss/jrc_ce"] == pytest.approx(ce, abs=1e-12)
    assert loss.log_values()["train/loss/jrc_ge"] == pytest.approx(LIT_GE_SAME, abs=1e-12)
    assert value.item() == pytest.approx(0.5 * ce + 0.5 * LIT_GE_SAME, abs=1e-12)


# ---------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("same_label_loss", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(same_label_loss, weighted, alpha, seed):
    z, y, w, s = random_batch(seed, weighted)
    loss = JRCLoss(alpha=alpha, same_label_loss=same_label_loss)
    value = loss(t(z), t(y), None if w is None else t(w), sid(s))
    assert value.item() == pytest.approx(np_jrc(z, y, w, s, alpha, same_label_loss), rel=1e-10, abs=1e-12)
    logged = loss.log_values()
    assert logged["train/loss/jrc_ce"] == pytest.approx(np_ce(z, y, w), rel=1e-10)
    assert logged["train/loss/jrc_ge"] == pytest.approx(np_ge(z, y, w, s, same_label_loss), rel=1e-10)


@pytest.mark.parametrize("same_label_loss", [True, False])
def test_no_sessions_is_one_session(same_label_loss):
    z, y, w, _ = random_batch(3)
    loss = JRCLoss(same_label_loss=same_label_loss)
    value = loss(t(z), t(y), t(w))
    assert value.item() == pytest.approx(np_jrc(z, y, w, None, 0.5, same_label_loss), rel=1e-10)
    assert value.item() == pytest.approx(loss(t(z), t(y), t(w), sid([4] * len(y))).item(), rel=1e-12)


def test_unit_weights_same_label_is_listwise_ce_over_batch_size():
    """Unit weights: ge = (1/B)·Σ_s L_s, as the spec remarks."""
    z, y, _, s = random_batch(4, weighted=False)
    loss = JRCLoss(alpha=0.0)
    ones = loss(t(z), t(y), torch.ones(len(y), dtype=torch.float64), sid(s))
    assert ones.item() == pytest.approx(loss(t(z), t(y), None, sid(s)).item(), rel=1e-12)
    sessions = sorted(set(s))
    total = 0.0
    for u in sessions:
        g = [i for i in range(len(s)) if s[i] == u]
        lp, ln = np_log_softmax([z[i][1] for i in g]), np_log_softmax([z[i][0] for i in g])
        total -= sum(lp[k] if y[i] == 1 else ln[k] for k, i in enumerate(g))
    assert ones.item() == pytest.approx(total / len(y), rel=1e-10)


@pytest.mark.parametrize("same_label_loss", [True, False])
def test_shift_invariant_and_stable_for_large_logits(same_label_loss):
    z, y, w, s = random_batch(5)
    loss = JRCLoss(same_label_loss=same_label_loss)
    shifted = (t(z) + 1000.0).requires_grad_()
    value = loss(shifted, t(y), t(w), sid(s))
    value.backward()
    assert value.item() == pytest.approx(loss(t(z), t(y), t(w), sid(s)).item(), rel=1e-9)
    assert torch.isfinite(shifted.grad).all()


def test_one_label_sessions_have_zero_ge_without_same_label_loss_and_finite_grads():
    z = t([[0.3, -1.0], [2.0, 0.5], [-0.4, 0.1]]).requires_grad_()
    loss = JRCLoss(alpha=0.0, same_label_loss=False)
    value = loss(z, t([1.0, 1.0, 0.0]), None, sid([1, 1, 2]))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


# ---------------------------------------------------------------------- strategies


def test_uncertainty_formula_and_gradients():
    z, y, w, s = random_batch(6)
    loss = JRCLoss(strategy="uncertainty")
    assert torch.equal(loss.uncertainty.detach(), torch.zeros(2))
    assert [name for name, _ in loss.named_parameters()] == ["uncertainty"]
    value = loss(t(z), t(y), t(w), sid(s))
    ce, ge = loss.log_values().values()
    assert value.item() == pytest.approx(ce + ge, rel=1e-6)
    value.backward()
    # d/du (e^{−u}·L + ½u) = −e^{−u}·L + ½
    assert loss.uncertainty.grad.tolist() == pytest.approx([0.5 - ce, 0.5 - ge], rel=1e-5)
    with torch.no_grad():
        loss.uncertainty.copy_(torch.tensor([0.3, -0.7]))
    value = loss(t(z), t(y), t(w), sid(s))
    expected = math.exp(-0.3) * ce + 0.15 + math.exp(0.7) * ge - 0.35
    assert value.item() == pytest.approx(expected, rel=1e-6)
    loss.eval()
    assert loss(t(z), t(y), t(w), sid(s)).item() == pytest.approx(expected, rel=1e-6)


def expected_coefficients(strategy, seed):
    torch.manual_seed(seed)
    if strategy == "random_uniform":
        u = torch.rand((), dtype=torch.float64).item()
        return u, 1.0 - u
    if strategy == "random_normal":
        a, b = torch.softmax(torch.randn(2, dtype=torch.float64), dim=0).tolist()
        return a, b
    draws = torch.bernoulli(torch.full((2,), 0.5, dtype=torch.float64)).tolist()
    return tuple(draws) if sum(draws) == 1 else (0.5, 0.5)


@pytest.mark.parametrize("strategy", ["random_uniform", "random_normal", "random_bernoulli"])
def test_random_strategies_reproduce_seeded_draws(strategy):
    z, y, w, s = random_batch(7)
    ce, ge = np_ce(z, y, w), np_ge(z, y, w, s)
    loss = JRCLoss(alpha=0.2, strategy=strategy)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        value = loss(t(z), t(y), t(w), sid(s)).item()
        a, b = expected_coefficients(strategy, seed)
        assert a + b == pytest.approx(1.0) and 0 <= a <= 1
        assert value == pytest.approx(a * ce + b * ge, rel=1e-10)
        assert min(ce, ge) - 1e-12 <= value <= max(ce, ge) + 1e-12
        seen.add(round(value, 9))
    assert len(seen) > 1  # drawn anew at every call
    if strategy == "random_bernoulli":
        assert seen <= {round(ce, 9), round(ge, 9), round((ce + ge) / 2, 9)}


@pytest.mark.parametrize("strategy", ["random_uniform", "random_normal", "random_bernoulli"])
def test_eval_mode_uses_fixed_alpha(strategy):
    z, y, w, s = random_batch(8)
    loss = JRCLoss(alpha=0.2, strategy=strategy).eval()
    expected = np_jrc(z, y, w, s, alpha=0.2)
    for seed in range(3):
        torch.manual_seed(seed)
        assert loss(t(z), t(y), t(w), sid(s)).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------- gradients, scores, interface


@pytest.mark.parametrize("same_label_loss", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_gradcheck(same_label_loss, weighted):
    z, y, w, s = random_batch(9, weighted)
    loss = JRCLoss(alpha=0.3, same_label_loss=same_label_loss)
    logits = t(z).requires_grad_()
    weights = None if w is None else t(w)
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), weights, sid(s)), (logits,), fast_mode=True)


@pytest.mark.parametrize("same_label_loss", [True, False])
def test_gradcheck_full_mode_literal(same_label_loss):
    loss = JRCLoss(alpha=0.3, same_label_loss=same_label_loss)
    logits = (t(LIT_Z) + 0.1 * torch.randn(4, 2, dtype=torch.float64)).requires_grad_()
    weights = t([2.0, 0.0, 1.0, 0.5])
    assert torch.autograd.gradcheck(lambda x: loss(x, t(LIT_Y), weights, sid(LIT_S)), (logits,))


def test_gradcheck_uncertainty():
    z, y, w, s = random_batch(10)
    loss = JRCLoss(strategy="uncertainty").double()
    logits = t(z).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: loss(x, t(y), t(w), sid(s)), (logits,), fast_mode=True)


def test_scores_are_click_probability():
    logits = torch.randn(6, 2)
    assert torch.allclose(JRCLoss().scores(logits), torch.softmax(logits, dim=1)[:, 1])
    assert JRCLoss.scores(t(LIT_Z)).tolist() == pytest.approx([0.75, 0.5, 0.5, 0.75])


def test_class_attributes_and_log_values():
    assert JRCLoss.label_values == (0.0, 1.0)
    assert JRCLoss.requires_sessions is True
    assert JRCLoss.num_outputs == 2
    loss = JRCLoss()
    assert loss.log_values() == {}
    assert list(JRCLoss(strategy="fixed").parameters()) == []
    loss(t(LIT_Z), t(LIT_Y), None, sid(LIT_S))
    values = loss.log_values()
    assert set(values) == {"train/loss/jrc_ce", "train/loss/jrc_ge"}
    assert all(isinstance(v, float) for v in values.values())


def test_empty_batch_gives_connected_zero():
    logits = torch.zeros(0, 2, requires_grad=True)
    value = JRCLoss()(logits, torch.zeros(0), None, torch.zeros(0, dtype=torch.long))
    value.backward()
    assert value.item() == 0.0 and logits.grad.shape == (0, 2)


def test_float32_batch_of_4096_is_vectorised():
    g = torch.Generator().manual_seed(0)
    n = 4096
    logits = torch.randn(n, 2, generator=g, requires_grad=True)
    labels = torch.randint(0, 2, (n,), generator=g).float()
    sessions = torch.randint(0, 300, (n,), generator=g)
    start = time.perf_counter()
    for same in (True, False):
        value = JRCLoss(same_label_loss=same)(logits, labels, torch.rand(n, generator=g), sessions)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"strategy": "random"}, "strategy"),
        ({"strategy": "FIXED"}, "strategy"),
    ],
)
def test_invalid_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        JRCLoss(**kwargs)


def test_shape_errors_name_the_argument():
    loss = JRCLoss()
    z, y = torch.zeros(4, 2), torch.zeros(4)
    with pytest.raises(ValueError, match="logits"):
        loss(torch.zeros(4), y)
    with pytest.raises(ValueError, match="logits"):
        loss(torch.zeros(4, 3), y)
    with pytest.raises(ValueError, match="logits"):
        loss(torch.zeros(4, 2, 1), y)
    with pytest.raises(ValueError, match="labels"):
        loss(z, torch.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        loss(z, y, torch.ones(5))
    with pytest.raises(ValueError, match="sessions"):
        loss(z, y, None, torch.zeros(4, 1, dtype=torch.long))
