"""Every loss gives a finite value and finite gradients on edge-case batches.

Two tables: ``LOSSES`` (a named factory per loss and option set, plus how to build its inputs) and
``EDGE_CASES`` (a batch pattern: binary labels, sessions, weights, logit kind). Each loss is run on each
case in float32 (the training dtype); the value, the gradient w.r.t. the logits and the gradients of the loss's
own parameters (uncertainty weights, logit scales) must all be finite. To add a loss, append a ``LossSpec``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor, nn

from easyrec.losses.bce import BinaryCrossEntropy
from easyrec.losses.circle import CircleLoss
from easyrec.losses.f1_reweighted import F1ReweightedLoss
from easyrec.losses.focal import BinaryFocalLoss
from easyrec.losses.in_batch_softmax import InBatchSoftmaxLoss
from easyrec.losses.jrc import JRCLoss
from easyrec.losses.kl_divergence import KLDivergenceLoss
from easyrec.losses.l2 import L2Loss
from easyrec.losses.listwise_distill import ListwiseDistillLoss
from easyrec.losses.listwise_rank import ListwiseRankLoss
from easyrec.losses.multi_similarity import MultiSimilarityLoss
from easyrec.losses.multi_task import MultiTaskLoss
from easyrec.losses.pairwise_focal import PairwiseFocalLoss
from easyrec.losses.pairwise_hinge import EXP_CLIP, PairwiseHingeLoss
from easyrec.losses.pairwise_logistic import PairwiseLogisticLoss
from easyrec.losses.reduction import hardest_mean, mean_over_nonzero_weights
from easyrec.losses.sigmoid_l2 import SigmoidL2Loss
from easyrec.losses.soft_labels import SoftBinaryCrossEntropy, SoftCrossEntropy
from easyrec.losses.softmax_ce import SoftmaxCrossEntropy
from easyrec.losses.softmax_negative_mining import SoftmaxNegativeMiningLoss
from easyrec.losses.weighted import WeightedLosses
from easyrec.losses.ziln import ZILNLoss
from tests.conftest import options

EXTREME = 60.0

# ---------------------------------------------------------------------- label builders


def binary(pattern: Tensor) -> Tensor:
    """Labels as given: ``pattern (B,)`` in {0, 1}."""
    return pattern


def rank_positions(pattern: Tensor) -> Tensor:
    """Teacher rank positions (1 = best): a positive is rank 1, the i-th sample otherwise is rank ``2 + i``."""
    return torch.where(pattern > 0, torch.ones_like(pattern), 2.0 + torch.arange(pattern.shape[0]).to(pattern))


def class_ids(pattern: Tensor) -> Tensor:
    """Class ids of a 3-class loss: a positive is class 2, a negative class 0 or 1 by position."""
    return torch.where(pattern > 0, torch.full_like(pattern, 2.0), (torch.arange(pattern.shape[0]) % 2).to(pattern))


def values(pattern: Tensor) -> Tensor:
    """Zero-inflated values: 0 for a negative, ``1 + 10·i`` for the i-th sample otherwise."""
    return pattern * (1.0 + 10.0 * torch.arange(pattern.shape[0]).to(pattern))


def teacher_probs(pattern: Tensor) -> Tensor:
    """A teacher's probabilities: 0.9 for a positive, 0.1 otherwise (and an exact 0 or 1 on the ends)."""
    probs = 0.1 + 0.8 * pattern
    if probs.shape[0] >= 2:
        probs[0], probs[-1] = 1.0, 0.0
    return probs


def task_labels(pattern: Tensor) -> Tensor:
    """``(B, 3)`` labels of the multi-task table row: click, conversion (every other click) and value."""
    conversion = pattern * (torch.arange(pattern.shape[0]) % 2 == 0).to(pattern)
    return torch.stack([pattern, conversion, values(conversion)], dim=1)


def multi_task(strategy: str) -> MultiTaskLoss:
    learn = strategy == "uncertainty"
    return MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click", "learn_weight": learn},
            "ctcvr": {
                "loss": BinaryCrossEntropy(),
                "label": "conversion",
                "learn_weight": learn,
                "task_space_indicator": "click",  # on the clicked rows only: none in some batches
                "out_task_space_weight": 0.0,
            },
            "ltv": {"loss": ZILNLoss(), "label": "value", "learn_weight": learn, "use_sample_weight": False},
            "rank": {"loss": ListwiseRankLoss(), "label": "click", "output": "ctr"},
        },
        label_columns=["click", "conversion", "value"],
        strategy=strategy,
        order_calibrate={"ctcvr": ["ctr"]},
    )


# ---------------------------------------------------------------------- the loss table


@dataclass(frozen=True)
class LossSpec:
    """One row of the loss table: how to build the loss and its inputs.

    Attributes:
        name: test id.
        make: builds the loss module (called once per test).
        logit_shape: trailing shape of the model output per sample: ``()`` for ``(B,)``, ``(2,)`` for ``(B, 2)``.
        sessions: forward takes ``sessions (B,)``.
        labels: maps the case's binary pattern ``(B,)`` to this loss's labels (e.g. rank positions).
        skip: ``{edge case name: why it is meaningless for this loss}``; those combinations are not generated.
    """

    name: str
    make: Callable[[], nn.Module]
    logit_shape: tuple[int, ...] = ()
    sessions: bool = False
    labels: Callable[[Tensor], Tensor] = binary
    skip: Mapping[str, str] = field(default_factory=dict)


def weighted_fixed() -> WeightedLosses:
    return WeightedLosses(
        {"bce": {"loss": BinaryCrossEntropy(), "weight": 1.0}, "pair": {"loss": PairwiseLogisticLoss(), "weight": 0.5}}
    )


def weighted_uncertainty() -> WeightedLosses:
    return WeightedLosses(
        {
            "bce": {"loss": BinaryCrossEntropy(), "learn_weight": True},
            "l2": {"loss": L2Loss(), "learn_weight": True},
            "hinge": {"loss": PairwiseHingeLoss(use_label_margin=False), "weight": 0.3},
        },
        strategy="uncertainty",
    )


def weighted_random() -> WeightedLosses:
    return WeightedLosses(
        {"focal": {"loss": BinaryFocalLoss()}, "rank": {"loss": ListwiseRankLoss(scale_logits=True)}},
        strategy="random",
    )


LOSSES = [
    # pointwise
    LossSpec("bce", BinaryCrossEntropy),
    LossSpec("bce_smoothing", lambda: BinaryCrossEntropy(label_smoothing=0.1)),
    LossSpec("focal", BinaryFocalLoss),
    LossSpec("focal_alpha_ohem", lambda: BinaryFocalLoss(gamma=2.0, alpha=0.25, ohem_ratio=0.5, label_smoothing=0.1)),
    LossSpec("focal_gamma_half_ohem", lambda: BinaryFocalLoss(gamma=0.5, ohem_ratio=0.3)),
    LossSpec("f1_reweighted", F1ReweightedLoss),
    LossSpec("f1_reweighted_beta_smoothing", lambda: F1ReweightedLoss(f1_beta_square=4.0, label_smoothing=0.1)),
    LossSpec("l2", L2Loss),
    LossSpec("sigmoid_l2", SigmoidL2Loss),
    # pairwise
    LossSpec("pairwise_logistic", PairwiseLogisticLoss, sessions=True),
    LossSpec(
        "pairwise_logistic_margin_ohem",
        lambda: PairwiseLogisticLoss(temperature=0.5, hinge_margin=1.0, ohem_ratio=0.5),
        sessions=True,
    ),
    LossSpec("pairwise_logistic_label_margin", lambda: PairwiseLogisticLoss(use_label_margin=True), sessions=True),
    LossSpec("pairwise_hinge", PairwiseHingeLoss, sessions=True),
    LossSpec(
        "pairwise_hinge_margin_ohem",
        lambda: PairwiseHingeLoss(margin=0.5, ohem_ratio=0.5, use_label_margin=False),
        sessions=True,
    ),
    LossSpec("pairwise_hinge_exponent", lambda: PairwiseHingeLoss(use_exponent=True), sessions=True),
    LossSpec(
        "pairwise_hinge_exponent_margin",
        lambda: PairwiseHingeLoss(temperature=0.5, use_exponent=True, use_label_margin=False, label_is_logits=False),
        sessions=True,
    ),
    LossSpec("pairwise_focal", PairwiseFocalLoss, sessions=True),
    LossSpec(
        "pairwise_focal_margin_ohem",
        lambda: PairwiseFocalLoss(gamma=1.5, alpha=0.25, hinge_margin=0.5, ohem_ratio=0.5, temperature=2.0),
        sessions=True,
    ),
    # listwise
    LossSpec("listwise_rank", ListwiseRankLoss, sessions=True),
    LossSpec(
        "listwise_rank_label_logits_scaled",
        lambda: ListwiseRankLoss(temperature=0.5, label_is_logits=True, scale_logits=True),
        sessions=True,
    ),
    LossSpec("listwise_distill", ListwiseDistillLoss, sessions=True, labels=rank_positions),
    LossSpec(
        "listwise_distill_scaled",
        lambda: ListwiseDistillLoss(temperature=2.0, label_clip_max_value=4, scale_logits=True),
        sessions=True,
        labels=rank_positions,
    ),
    # joint ranking & calibration: two logits per sample
    *[
        LossSpec(f"jrc_{strategy}", lambda s=strategy: JRCLoss(alpha=0.3, strategy=s), (2,), sessions=True)
        for strategy in ("fixed", "random_uniform", "random_normal", "random_bernoulli", "uncertainty")
    ],
    LossSpec("jrc_other_label", lambda: JRCLoss(same_label_loss=False), (2,), sessions=True),
    LossSpec(
        "jrc_other_label_uncertainty",
        lambda: JRCLoss(same_label_loss=False, strategy="uncertainty"),
        (2,),
        sessions=True,
    ),
    # several losses on one output
    LossSpec("weighted_fixed", weighted_fixed, sessions=True),
    LossSpec("weighted_uncertainty", weighted_uncertainty, sessions=True),
    LossSpec("weighted_random", weighted_random, sessions=True),
    # multi-class, value and distillation losses
    LossSpec("softmax_ce", lambda: SoftmaxCrossEntropy(3), (3,), labels=class_ids),
    LossSpec("softmax_ce_smoothing", lambda: SoftmaxCrossEntropy(3, label_smoothing=0.2), (3,), labels=class_ids),
    LossSpec("ziln", ZILNLoss, (3,), labels=values),
    LossSpec("kl_divergence", KLDivergenceLoss, labels=teacher_probs),
    LossSpec("kl_divergence_logits_t2", lambda: KLDivergenceLoss(2.0, label_is_logits=True), labels=values),
    LossSpec("soft_bce", SoftBinaryCrossEntropy, labels=teacher_probs),
    LossSpec("soft_bce_logits_t2", lambda: SoftBinaryCrossEntropy(2.0, label_is_logits=True), labels=values),
    LossSpec("soft_ce", SoftCrossEntropy, labels=teacher_probs),
    LossSpec("soft_ce_t3", lambda: SoftCrossEntropy(3.0), labels=teacher_probs),
    # several tasks, one output column each (ltv: three), a listwise term and order calibration
    *[
        LossSpec(f"multi_task_{s}", lambda s=s: multi_task(s), (5,), sessions=True, labels=task_labels)
        for s in ("fixed", "uncertainty", "random")
    ],
    # two-tower retrieval: outputs (B, 2, D) user and item embeddings; the positive rows are the pairs
    LossSpec("in_batch_softmax", InBatchSoftmaxLoss, (2, 4)),
    LossSpec("infonce_symmetric", lambda: InBatchSoftmaxLoss(0.1, cosine=True, symmetric=True), (2, 4)),
    LossSpec("circle", CircleLoss, (2, 4)),
    LossSpec("multi_similarity", MultiSimilarityLoss, (2, 4)),
    LossSpec("softmax_negative_mining", lambda: SoftmaxNegativeMiningLoss(num_negative_samples=3), (2, 4)),
]


def test_the_table_has_the_loss_of_every_conf_option(compose_train):
    tested = {type(spec.make()).__name__ for spec in LOSSES}
    for option in options("loss"):
        assert compose_train(f"loss={option}").loss._target_.rsplit(".", 1)[1] in tested, option


# ---------------------------------------------------------------------- the edge-case table


@dataclass(frozen=True)
class EdgeCase:
    """A batch pattern, independent of the loss.

    Attributes:
        name: test id.
        pattern: binary labels ``(B,)``, mapped to each loss's labels by ``LossSpec.labels``.
        sessions: session ids ``(B,)`` (used only by losses that take sessions).
        weights: sample weights ``(B,)`` or None.
        logits: ``"normal"`` (seeded N(0, 1.5²)), ``"extreme"`` (±60 alternating over the samples, so some
            are confidently right and some confidently wrong), ``"wrong"`` (every sample confidently wrong: −60 for
            a positive, +60 for a negative) or ``"tied"`` (every entry +60). With several outputs per sample the
            sign alternates over them, the last one keeping the sample's sign (JRC's click logit is column 1).
        needs_sessions: only meaningful for losses that take sessions (otherwise it repeats ``mixed``).
    """

    name: str
    pattern: list[float]
    sessions: list[int]
    weights: list[float] | None = None
    logits: str = "normal"
    needs_sessions: bool = False


MIXED = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
SESSIONS = [3, 3, 3, 8, 8, 5, 5, 5]  # every session holds both labels

EDGE_CASES = [
    EdgeCase("mixed", MIXED, SESSIONS, [0.5, 1.0, 2.0, 1.0, 0.3, 1.5, 1.0, 0.7]),
    EdgeCase("all_positive", [1.0] * 8, SESSIONS),
    EdgeCase("all_negative", [0.0] * 8, SESSIONS),
    EdgeCase("single_item_sessions", MIXED, [11, 4, 7, 0, 9, 2, 30, 5], needs_sessions=True),
    EdgeCase("single_sample", [1.0], [4]),
    EdgeCase("single_negative_sample", [0.0], [4]),
    EdgeCase("zero_weights", MIXED, SESSIONS, [0.0] * 8),
    # session 8 (samples 3 and 4) gets weight 0 as a whole
    EdgeCase("some_zero_weights", MIXED, SESSIONS, [0.0, 1.5, 0.0, 0.0, 0.0, 0.5, 0.0, 2.0]),
    EdgeCase("extreme_logits", MIXED, SESSIONS, logits="extreme"),
    EdgeCase("extreme_logits_weighted", MIXED, SESSIONS, [0.0, 1.5, 1.0, 0.0, 2.0, 0.5, 1.0, 2.0], logits="extreme"),
    EdgeCase("extreme_logits_all_positive", [1.0] * 8, SESSIONS, logits="extreme"),
    EdgeCase("confidently_wrong_logits", MIXED, SESSIONS, logits="wrong"),
    EdgeCase(
        "confidently_wrong_logits_weighted", MIXED, SESSIONS, [2.0, 0.0, 1.0, 1.0, 0.5, 0.0, 3.0, 1.0], logits="wrong"
    ),
    EdgeCase("tied_extreme_logits", MIXED, SESSIONS, logits="tied"),
    EdgeCase("empty_batch", [], []),
]


def make_logits(kind: str, pattern: Tensor, trailing: tuple[int, ...]) -> Tensor:
    """``(B, *trailing)`` float32 logits of the given kind (see :class:`EdgeCase`) for binary ``pattern (B,)``."""
    shape = (pattern.shape[0], *trailing)
    if kind == "normal":
        return torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 1.5
    if kind == "tied":
        return torch.full(shape, EXTREME)
    signs = {"extreme": 1.0 - 2.0 * (torch.arange(shape[0]) % 2), "wrong": 2.0 * pattern - 1.0}[kind]
    signs = signs.view(-1, *[1] * len(trailing))
    for dim, size in enumerate(trailing, start=1):  # alternate over each output dim, + on its last entry
        flip = 1.0 - 2.0 * ((size - 1 - torch.arange(size)) % 2)
        signs = signs * flip.view([size if d == dim else 1 for d in range(len(shape))])
    return -EXTREME * signs if kind == "wrong" else EXTREME * signs


def inputs(spec: LossSpec, case: EdgeCase) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(logits (B, *logit_shape) leaf, labels (B,), weights (B,) | None, sessions (B,) | None)``."""
    pattern = torch.tensor(case.pattern, dtype=torch.float32)
    logits = make_logits(case.logits, pattern, spec.logit_shape).requires_grad_()
    weights = None if case.weights is None else torch.tensor(case.weights, dtype=torch.float32)
    sessions = torch.tensor(case.sessions, dtype=torch.long) if spec.sessions else None
    return logits, spec.labels(pattern), weights, sessions


def combinations():
    for spec in LOSSES:
        for case in EDGE_CASES:
            if case.name in spec.skip or (case.needs_sessions and not spec.sessions):
                continue
            yield pytest.param(spec, case, id=f"{spec.name}-{case.name}")


def call(loss: nn.Module, spec: LossSpec, logits, labels, weights, sessions) -> Tensor:
    if spec.sessions:
        return loss(logits, labels, weights, sessions)
    return loss(logits, labels, weights)


# ---------------------------------------------------------------------- the tests


def test_tables_are_consistent():
    assert len({s.name for s in LOSSES}) == len(LOSSES)
    assert len({c.name for c in EDGE_CASES}) == len(EDGE_CASES)
    names = {c.name for c in EDGE_CASES}
    for spec in LOSSES:
        assert set(spec.skip) <= names, spec.name
        assert all(reason for reason in spec.skip.values()), spec.name
    for case in EDGE_CASES:
        assert len(case.sessions) == len(case.pattern)
        assert case.weights is None or len(case.weights) == len(case.pattern)


@pytest.mark.parametrize(("spec", "case"), combinations())
def test_value_and_gradients_are_finite(spec: LossSpec, case: EdgeCase):
    torch.manual_seed(0)  # the random weighting strategies draw from the global generator
    loss = spec.make()
    logits, labels, weights, sessions = inputs(spec, case)
    value = call(loss, spec, logits, labels, weights, sessions)
    assert value.dim() == 0
    assert torch.isfinite(value), f"loss = {value.item()}"
    value.backward()
    assert logits.grad is not None, "the loss is not connected to the logits"
    assert torch.isfinite(logits.grad).all(), f"d loss / d logits = {logits.grad}"
    for name, parameter in loss.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), f"d loss / d {name} = {parameter.grad}"
    if case.name == "empty_batch":
        assert value.item() == 0.0 and logits.grad.shape == logits.shape


@pytest.mark.parametrize("spec", [s for s in LOSSES if any(True for _ in s.make().parameters())], ids=lambda s: s.name)
def test_own_parameters_get_finite_gradients_on_a_mixed_batch(spec: LossSpec):
    """The losses with parameters really train them (the edge-case test allows a missing gradient)."""
    torch.manual_seed(0)
    loss = spec.make()
    logits, labels, weights, sessions = inputs(spec, EDGE_CASES[0])
    call(loss, spec, logits, labels, weights, sessions).backward()
    for name, parameter in loss.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


# ---------------------------------------------------------------------- regressions found by the table


def test_reductions_of_an_empty_batch_are_connected_zeros():
    """``losses.mean()`` of nothing was NaN (BCE, L2, sigmoid L2) and OHEM's top-k of nothing raised."""
    losses = torch.zeros(0, requires_grad=True)
    for value in (mean_over_nonzero_weights(losses, None), hardest_mean(losses, 0.5)):
        value.backward()
        assert value.item() == 0.0 and losses.grad.shape == (0,)


@pytest.mark.parametrize("diff", [EXP_CLIP + 30.0, EXP_CLIP - 0.5])
def test_exponential_hinge_in_float32_does_not_overflow_at_the_clip(diff):
    """Six pairs each worth ``e^min(diff, 88) − 1`` (up to 1.7e38): their float32 sum was ``inf``."""
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    logits = torch.tensor([0.0, 0.0, 0.0, diff, diff], requires_grad=True)
    loss = PairwiseHingeLoss(use_exponent=True, use_label_margin=False, margin=0.0)
    value = loss(logits, labels, torch.ones(5))
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert value.item() == pytest.approx(math.expm1(min(diff, EXP_CLIP)), rel=1e-6)
    assert torch.isfinite(logits.grad).all()
