"""The contract every two-tower retrieval loss keeps (CircleLoss, MultiSimilarityLoss, InBatchSoftmaxLoss,
SoftmaxNegativeMiningLoss): attributes and scores, refused shapes and arguments, finite losses and gradients on
edge cases, gradcheck, and conf files that match the constructor. The loss-specific tests stay in
test_metric_learning_losses.py and test_retrieval_losses.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from easyrec.losses.circle import CircleLoss
from easyrec.losses.embeddings import TwoTowerLoss
from easyrec.losses.in_batch_softmax import InBatchSoftmaxLoss
from easyrec.losses.multi_similarity import MultiSimilarityLoss
from easyrec.losses.softmax_negative_mining import SoftmaxNegativeMiningLoss
from tests.losses.references import t

CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"

# The circle loss is left out of gradcheck: its pair weights a_p, a_n are stop-gradient constants, so its gradient
# is not the derivative of its value (test_metric_learning_losses.py checks it against frozen weights).
GRADCHECKED = [
    pytest.param(lambda: MultiSimilarityLoss(), id="ms"),
    pytest.param(lambda: MultiSimilarityLoss(ms_mining=True), id="ms_mining"),
    pytest.param(lambda: InBatchSoftmaxLoss(), id="in_batch"),
    pytest.param(lambda: InBatchSoftmaxLoss(temperature=0.1, cosine=True, symmetric=True), id="infonce_sym"),
    pytest.param(lambda: SoftmaxNegativeMiningLoss(num_negative_samples=3), id="negative_mining"),
    pytest.param(
        lambda: SoftmaxNegativeMiningLoss(margin=0.1, gamma=4.0, coefficient_of_support_vector=1.5),
        id="negative_mining_sv",
    ),
]
MODULES = [pytest.param(lambda: CircleLoss(), id="circle"), *GRADCHECKED]


def random_batch(b, d, seed, positive_rate, positive_rows=(0,), zero_weight_rows=()):
    """A (B, 2, D) batch with 0/1 labels (``positive_rows`` forced to 1) and weights (``zero_weight_rows`` 0)."""
    rng = np.random.default_rng(seed)
    outputs = rng.normal(size=(b, 2, d))
    labels = (rng.random(b) < positive_rate).astype(np.float64)
    labels[list(positive_rows)] = 1.0
    weights = rng.uniform(0.5, 2.0, size=b)
    weights[list(zero_weight_rows)] = 0.0
    return outputs, labels, weights


@pytest.mark.parametrize("make", MODULES)
def test_two_tower_attributes_and_scores(make):
    loss = make()
    assert isinstance(loss, TwoTowerLoss)
    assert loss.task == "retrieval" and loss.label_values == (0.0, 1.0) and loss.requires_sessions is False
    outputs = t([[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 1.0]]])
    assert loss.scores(outputs).tolist() == [11.0, 0.0]


@pytest.mark.parametrize("make", MODULES)
@pytest.mark.parametrize("shape", [(4, 8), (4, 3, 8), (4, 2), (4,)])
def test_wrong_output_shape_is_refused(make, shape):
    with pytest.raises(ValueError, match=r"outputs: expected shape \(B, 2, D\) \(user and item embeddings"):
        make()(torch.zeros(shape), torch.ones(4))
    with pytest.raises(ValueError, match="outputs: expected shape"):
        make().scores(torch.zeros(shape))


@pytest.mark.parametrize("make", MODULES)
def test_wrong_label_or_weight_shape_is_refused(make):
    with pytest.raises(ValueError, match="labels: expected shape"):
        make()(torch.zeros(4, 2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="weights: expected shape"):
        make()(torch.zeros(4, 2, 3), torch.ones(4), torch.ones(5))


@pytest.mark.parametrize(
    "cls, kwargs, name",
    [
        (CircleLoss, {"margin": -0.1}, "margin"),
        (CircleLoss, {"gamma": 0.0}, "gamma"),
        (CircleLoss, {"gamma": float("inf")}, "gamma"),
        (MultiSimilarityLoss, {"alpha": 0.0}, "alpha"),
        (MultiSimilarityLoss, {"beta": -1.0}, "beta"),
        (MultiSimilarityLoss, {"lamb": float("nan")}, "lamb"),
        (MultiSimilarityLoss, {"eps": -0.1}, "eps"),
        (InBatchSoftmaxLoss, {"temperature": 0.0}, "temperature"),
        (InBatchSoftmaxLoss, {"temperature": float("nan")}, "temperature"),
        (InBatchSoftmaxLoss, {"reg_pos_weight": -1.0}, "reg_pos_weight"),
        (SoftmaxNegativeMiningLoss, {"num_negative_samples": 0}, "num_negative_samples"),
        (SoftmaxNegativeMiningLoss, {"num_negative_samples": 2.5}, "num_negative_samples"),
        (SoftmaxNegativeMiningLoss, {"margin": -0.5}, "margin"),
        (SoftmaxNegativeMiningLoss, {"gamma": 0.0}, "gamma"),
        (SoftmaxNegativeMiningLoss, {"coefficient_of_support_vector": 0.0}, "coefficient_of_support_vector"),
    ],
)
def test_bad_arguments_are_refused(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}[=:]"):
        cls(**kwargs)


def edge_cases():
    rng = np.random.default_rng(0)
    random = rng.normal(size=(4, 2, 3))
    same = np.tile(rng.normal(size=(1, 1, 3)), (4, 2, 1))
    zeros = random.copy()
    zeros[1] = 0.0  # a zero user and item
    zero_items = zeros.copy()
    zero_items[2, 1] = 0.0  # and a zero item beside a non-zero user
    ones, mixed = [1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0]
    return {
        "no_positive_row": (random, [0.0] * 4, None),
        "one_positive_row": (random, [0.0, 1.0, 0.0, 0.0], None),
        "all_rows_positive": (random, ones, [1.0, 2.0, 0.5, 1.0]),
        "zero_weights": (random, mixed, [0.0] * 4),
        "identical_embeddings": (same, ones, None),
        "zero_vectors": (zeros, ones, None),
        "zero_vectors_and_item": (zero_items, ones, None),
    }


@pytest.mark.parametrize("make", MODULES)
@pytest.mark.parametrize("case", list(edge_cases()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_cases_give_finite_losses_and_gradients(make, case, dtype):
    outputs, labels, weights = edge_cases()[case]
    x = torch.tensor(outputs, dtype=dtype).requires_grad_()
    out = make()(x, torch.tensor(labels, dtype=dtype), None if weights is None else torch.tensor(weights, dtype=dtype))
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(x.grad).all()
    if case in ("no_positive_row", "zero_weights"):
        assert out.item() == 0.0 and x.grad.abs().sum().item() == 0.0


@pytest.mark.parametrize("make", GRADCHECKED)
@pytest.mark.parametrize(
    "batch",
    [
        # Distinct items: a perturbed copy of an item would stop being a duplicate mid-check (the in-batch softmax).
        pytest.param({"b": 6, "d": 3, "seed": 9, "positive_rate": 0.6}, id="batch6"),
        pytest.param(
            {"b": 7, "d": 3, "seed": 8, "positive_rate": 0.7, "positive_rows": (0, 3, 5), "zero_weight_rows": (1,)},
            id="batch7",
        ),
    ],
)
def test_gradcheck(make, batch):
    outputs, labels, weights = random_batch(**batch)
    loss = make()

    def fn(o):
        torch.manual_seed(0)  # the same negative shifts at every evaluation
        return loss(o, t(labels), t(weights))

    x = t(outputs).requires_grad_()
    assert torch.autograd.gradcheck(fn, (x,))


@pytest.mark.parametrize(
    "name, cls",
    [
        ("circle", CircleLoss),
        ("multi_similarity", MultiSimilarityLoss),
        ("in_batch_softmax", InBatchSoftmaxLoss),
        ("infonce", InBatchSoftmaxLoss),
        ("softmax_negative_mining", SoftmaxNegativeMiningLoss),
    ],
)
def test_conf_matches_the_constructor(name, cls):
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert cfg.pop("_target_") == f"easyrec.losses.{cls.__name__}"
    loss = cls(**cfg)
    for key, value in cfg.items():
        assert getattr(loss, key) == value
