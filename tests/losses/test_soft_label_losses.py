"""SoftBinaryCrossEntropy and SoftCrossEntropy (EasyRec's kd[] BINARY_CROSS_ENTROPY and CROSS_ENTROPY) against hand
values and a numpy reference of EasyRec's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hydra.utils import instantiate
from scipy.special import expit, logit, softmax

from easyrec.losses import SoftBinaryCrossEntropy, SoftCrossEntropy
from tests.losses.references import LN2, LN3, t

EPS = 1e-7
# q = 3/4 against p = 3/4: the entropy 0.75·ln(4/3) + 0.25·ln 4
ENTROPY_3_4 = 2 * LN2 - 0.75 * LN3


@pytest.mark.parametrize("cls", [SoftBinaryCrossEntropy, SoftCrossEntropy])
def test_binary_hand_examples(cls):
    # Student z = 0 (q = ½) against a teacher's ¾: −(¾·ln ½ + ¼·ln ½) = ln 2; z = ln 3 (q = ¾): the entropy.
    assert cls()(t([0.0]), t([0.75])).item() == pytest.approx(LN2, abs=1e-6)
    assert cls()(t([LN3]), t([0.75])).item() == pytest.approx(ENTROPY_3_4, abs=1e-6)
    # T = 2 divides both: a teacher probability 0.9 (logit ln 9) teaches σ(ln 3) = ¾, a student logit 2·ln 3 gives ¾.
    assert cls(temperature=2.0)(t([2 * LN3]), t([0.9])).item() == pytest.approx(ENTROPY_3_4, abs=1e-6)
    # Teacher logits: 2·ln 3 at T = 2 is ¾ again.
    loss = cls(temperature=2.0, label_is_logits=True)
    assert loss(t([2 * LN3]), t([2 * LN3])).item() == pytest.approx(ENTROPY_3_4, abs=1e-6)
    # Weights (3, 0): the second sample is left out; 3·ln 2 / 1 non-zero weight.
    assert cls()(t([0.0, 5.0]), t([0.75, 0.1]), t([3.0, 0.0])).item() == pytest.approx(3 * LN2, abs=1e-6)


def test_a_binary_teachers_half_teaches_a_half():
    # q = ¾ against p = ½: −(½·ln ¾ + ½·ln ¼) = 2 ln 2 − ½ ln 3 (EasyRec's log(y) would teach σ(ln ½) = ⅓)
    expected = 2 * LN2 - 0.5 * LN3
    assert SoftCrossEntropy()(t([LN3]), t([0.5])).item() == pytest.approx(expected, abs=1e-6)
    assert SoftBinaryCrossEntropy()(t([LN3]), t([0.5])).item() == pytest.approx(expected, abs=1e-12)


def test_multiclass_hand_examples():
    # CE: q = (⅓, ⅓, ⅓), p = (½, ¼, ¼): the log loss of each class, averaged over the 3:
    # −⅓·Σ_c [p_c·ln ⅓ + (1 − p_c)·ln ⅔] = ⅓·(ln 3 + 2·ln(3/2)) = ln 3 − ⅔·ln 2
    expected = LN3 - 2 / 3 * LN2
    assert SoftCrossEntropy()(t([[0.0, 0.0, 0.0]]), t([[0.5, 0.25, 0.25]])).item() == pytest.approx(expected, abs=1e-6)
    loss = SoftCrossEntropy(temperature=2.0, label_is_logits=True)  # teacher logits (2 ln 2, 0, 0) / 2
    assert loss(t([[1.0, 1.0, 1.0]]), t([[2 * LN2, 0.0, 0.0]])).item() == pytest.approx(expected, abs=1e-6)
    # BCE: each column its own binary probability, averaged: z = (0, ln 3) against (¾, ¾)
    loss = SoftBinaryCrossEntropy()
    assert loss(t([[0.0, LN3]]), t([[0.75, 0.75]])).item() == pytest.approx((LN2 + ENTROPY_3_4) / 2, abs=1e-12)


def np_soft_loss(kind, z, y, w, temperature, label_is_logits):
    """EasyRec's build_kd_loss for BINARY_CROSS_ENTROPY (``bce``) and CROSS_ENTROPY (``ce``), with teacher logits
    logit(clip(y)) for binary probabilities, SUM_BY_NONZERO_WEIGHTS over samples."""
    binary = z.ndim == 1 or kind == "bce"
    if label_is_logits:
        teacher = y
    elif binary:
        teacher = logit(np.clip(y, EPS, 1 - EPS))
    else:
        teacher = np.log(y + EPS)
    zt, tt = z / temperature, teacher / temperature
    if kind == "bce":
        p = expit(tt)
        losses = np.logaddexp(0, zt) - p * zt
    else:
        p, q = (expit(tt), expit(zt)) if binary else (softmax(tt, axis=1), softmax(zt, axis=1))
        losses = -(p * np.log(q + EPS) + (1 - p) * np.log(1 - q + EPS))
    losses = losses if losses.ndim == 1 else losses.mean(axis=1)
    if w is None:
        return float(losses.mean())
    return float((losses * w).sum() / max(np.count_nonzero(w), 1))


@pytest.mark.parametrize("kind,cls", [("bce", SoftBinaryCrossEntropy), ("ce", SoftCrossEntropy)])
@pytest.mark.parametrize("num_classes", [None, 4])
@pytest.mark.parametrize("temperature,label_is_logits", [(1.0, False), (2.5, False), (0.5, True)])
def test_matches_reference(kind, cls, num_classes, temperature, label_is_logits):
    rng = np.random.default_rng(3)
    shape = (30,) if num_classes is None else (30, num_classes)
    z = rng.normal(0, 2, size=shape)
    if label_is_logits:
        y = rng.normal(0, 2, size=shape)
    elif num_classes is None or kind == "bce":
        y = rng.random(shape)
    else:
        y = softmax(rng.normal(0, 2, size=shape), axis=1)
    w = rng.uniform(0.5, 2.0, size=30) * (rng.random(30) > 0.3)
    loss = cls(temperature=temperature, label_is_logits=label_is_logits)
    expected = np_soft_loss(kind, z, y, w, temperature, label_is_logits)
    assert loss(t(z), t(y), t(w)).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("cls", [SoftBinaryCrossEntropy, SoftCrossEntropy])
def test_gradient_pulls_the_student_to_the_teacher(cls):
    # ∂ℓ/∂z = (q − p)/T for BCE; the student above the teacher is pushed down, below it up.
    logits = t([2.0, -2.0]).requires_grad_()
    cls(temperature=2.0)(logits, t([0.5, 0.5])).backward()
    grad = logits.grad.numpy()
    assert grad[0] > 0 > grad[1]
    if cls is SoftBinaryCrossEntropy:
        np.testing.assert_allclose(grad, (expit(np.array([1.0, -1.0])) - 0.5) / 2.0 / 2, rtol=1e-12)


@pytest.mark.parametrize("cls", [SoftBinaryCrossEntropy, SoftCrossEntropy])
def test_attributes_options_and_empty_batches(cls):
    loss = cls()
    assert loss.task == "regression" and loss.label_range == (0.0, 1.0) and loss.label_values is None
    assert cls(label_is_logits=True).label_range is None
    np.testing.assert_allclose(loss.scores(t([0.0, LN3])).numpy(), [0.5, 0.75], rtol=1e-12)
    assert loss(t([]), t([])).item() == 0.0
    with pytest.raises(ValueError, match="temperature=0.0: must be > 0"):
        cls(temperature=0.0)
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        loss(t([0.0, 1.0]), t([0.5]))
    assert math.isfinite(loss(t([80.0, -80.0]), t([0.0, 1.0])).item())


@pytest.mark.parametrize("cls", [SoftBinaryCrossEntropy, SoftCrossEntropy])
def test_either_replaces_kl_in_the_distill_experiment(compose_train, cls):
    target = f"easyrec.losses.{cls.__name__}"
    cfg = compose_train(
        "experiment=distill", f"loss.tasks.distill.loss._target_={target}", "loss.tasks.distill.loss.temperature=2"
    )
    loss = instantiate(cfg.loss, _convert_="all")
    assert type(loss.losses["distill"]) is cls and loss.losses["distill"].temperature == 2.0
