"""Tests of the vectorised grouped AUC against a per-group loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from easyrec.metrics import grouped_auc
from easyrec.metrics.grouped_auc import REDUCTIONS


def _pairwise_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact AUC by counting positive/negative pairs; a tie counts 1/2."""
    pos, neg = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def _reference(probs: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> tuple[list, list, list]:
    """Per-group loop: (auc, size, positives) of each group that has both classes.

    The AUC is exact (pair counting in float64) and cross-checked with sklearn's ``roc_auc_score``,
    which computes in float32.
    """
    aucs, sizes, positives = [], [], []
    for key in torch.unique(groups).tolist():
        mask = groups == key
        y = labels[mask]
        p = int(y.sum())
        if p == 0 or p == y.numel():
            continue
        auc = _pairwise_auc(probs[mask].double().numpy(), y.numpy())
        assert auc == pytest.approx(roc_auc_score(y.numpy(), probs[mask].double().numpy()), abs=1e-6)
        aucs.append(auc)
        sizes.append(int(mask.sum()))
        positives.append(p)
    return aucs, sizes, positives


def _reduce(aucs: list, sizes: list, positives: list, reduction: str) -> float:
    a = np.asarray(aucs, dtype=np.float64)
    weights = {"mean": np.ones_like(a), "sample": np.asarray(sizes, float), "positive": np.asarray(positives, float)}
    w = weights[reduction]
    return float((a * w).sum() / w.sum())


def _random_data(seed: int, n: int = 3000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Group sizes from 1 to ~60, including many size-1 groups; non-contiguous, negative and shuffled ids.
    sizes = torch.cat([torch.ones(40, dtype=torch.long), torch.randint(2, 60, (200,), generator=gen)])
    ids = torch.randperm(10_000, generator=gen)[: sizes.numel()] * 7 - 5000
    groups = torch.repeat_interleave(ids, sizes)[:n]
    groups = groups[torch.randperm(groups.numel(), generator=gen)]
    m = groups.numel()
    probs = torch.round(torch.rand(m, generator=gen) * 10) / 10  # heavy ties
    # Per-group click rate, some groups all-positive or all-negative.
    rate = torch.rand(sizes.numel(), generator=gen)
    rate[:15] = 0.0
    rate[15:30] = 1.0
    rate_by_id = dict(zip(ids.tolist(), rate.tolist(), strict=True))
    row_rate = torch.tensor([rate_by_id[k] for k in groups.tolist()])
    labels = (torch.rand(m, generator=gen) < 0.3 * probs + 0.7 * row_rate).long()
    return probs.float(), labels, groups


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_matches_per_group_loop(seed: int, reduction: str) -> None:
    probs, labels, groups = _random_data(seed)
    aucs, sizes, positives = _reference(probs, labels, groups)
    assert 50 < len(aucs) < torch.unique(groups).numel()  # some groups were skipped
    out = grouped_auc(probs, labels, groups, reduction=reduction)
    assert out["gauc_groups"] == len(aucs)
    assert out["gauc"] == pytest.approx(_reduce(aucs, sizes, positives, reduction), abs=1e-12)


def test_easyrec_golden_and_aliases() -> None:
    # EasyRec eval_metric_test: two groups, mean 0.5833333, by sample 0.5925926, by positive 0.6.
    labels = torch.tensor([1, 0, 1, 1, 0, 1, 0, 0, 1])
    probs = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.9, 0.8, 0.7, 0.6])
    groups = torch.tensor([1, 1, 1, 1, 1, 2, 2, 2, 2])
    expected = {"mean": 7 / 12, "sample": 16 / 27, "positive": 0.6}
    aliases = {"mean": "mean", "sample": "mean_by_sample_num", "positive": "mean_by_positive_num"}
    for name, value in expected.items():
        for reduction in (name, aliases[name]):
            out = grouped_auc(probs, labels, groups, reduction=reduction)
            assert out == {"gauc": pytest.approx(value, abs=1e-12), "gauc_groups": 2}


def test_hand_computed_with_ties_and_skipped_groups() -> None:
    # Group 5: pos {0.5, 0.3}, neg {0.5, 0.1} -> pairs 0.5 vs 0.5 (1/2), 0.5>0.1, 0.3<0.5, 0.3>0.1 -> 2.5/4.
    # Group 9: pos {0.2}, neg {0.2, 0.2, 0.8} -> (1/2 + 1/2 + 0)/3 = 1/3.
    # Group 7 (only positives), group 3 (only negatives) and group 4 (single row) are skipped.
    probs = torch.tensor([0.5, 0.2, 0.3, 0.5, 0.9, 0.2, 0.1, 0.2, 0.4, 0.8, 0.6, 0.7])
    labels = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1])
    groups = torch.tensor([5, 9, 5, 5, 7, 9, 5, 9, 3, 9, 4, 7])
    out = grouped_auc(probs, labels, groups)
    assert out["gauc_groups"] == 2
    assert out["gauc"] == pytest.approx((0.625 + 1 / 3) / 2, abs=1e-12)
    out = grouped_auc(probs, labels, groups, reduction="sample")
    assert out["gauc"] == pytest.approx((4 * 0.625 + 4 / 3) / 8, abs=1e-12)
    out = grouped_auc(probs, labels, groups, reduction="positive")
    assert out["gauc"] == pytest.approx((2 * 0.625 + 1 / 3) / 3, abs=1e-12)


def test_one_group_equals_global_auc() -> None:
    gen = torch.Generator().manual_seed(3)
    probs = torch.round(torch.rand(2000, generator=gen) * 20) / 20
    labels = (torch.rand(2000, generator=gen) < probs).long()
    expected = _pairwise_auc(probs.double().numpy(), labels.numpy())
    assert expected == pytest.approx(roc_auc_score(labels.numpy(), probs.double().numpy()), abs=1e-6)
    for reduction in REDUCTIONS:
        out = grouped_auc(probs, labels, torch.full((2000,), 42), reduction=reduction)
        assert out == {"gauc": pytest.approx(expected, abs=1e-12), "gauc_groups": 1}


def test_nan_when_no_group_has_both_classes() -> None:
    probs = torch.tensor([0.1, 0.9, 0.4, 0.3])
    out = grouped_auc(probs, torch.tensor([1, 1, 0, 1]), torch.tensor([0, 0, 1, 2]))
    assert math.isnan(out["gauc"]) and out["gauc_groups"] == 0
    out = grouped_auc(torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.long))
    assert math.isnan(out["gauc"]) and out["gauc_groups"] == 0


def test_float_labels_and_large_ids() -> None:
    probs = torch.tensor([0.2, 0.8, 0.6, 0.1])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([2**40, 2**40, -(2**40), -(2**40)])
    out = grouped_auc(probs, labels, groups)
    assert out == {"gauc": pytest.approx(0.5), "gauc_groups": 2}


def test_errors_name_the_argument() -> None:
    p, y, g = torch.rand(4), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="reduction"):
        grouped_auc(p, y, g, reduction="median")
    with pytest.raises(ValueError, match="labels"):
        grouped_auc(p, y[:3], g)
    with pytest.raises(ValueError, match="groups"):
        grouped_auc(p, y, g[:3])
    with pytest.raises(ValueError, match="probs"):
        grouped_auc(p.view(2, 2), y.view(2, 2), g.view(2, 2))
    with pytest.raises(ValueError, match="groups"):
        grouped_auc(p, y, g.float())
    with pytest.raises(ValueError, match="labels"):
        grouped_auc(p, torch.tensor([0, 2, 0, 1]), g)
