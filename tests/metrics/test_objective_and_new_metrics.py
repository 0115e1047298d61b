"""``eval/loss`` (the training loss on the eval split), ``trainer.train_metrics``, and the metrics ``max_f1``, ``ne``
and the multi-class AUC, against numbers computed by hand (and sklearn)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score

from easyrec.errors import ConfigError
from easyrec.losses import (
    BinaryCrossEntropy,
    JRCLoss,
    L2Loss,
    MultiTaskLoss,
    PairwiseLogisticLoss,
    SoftmaxCrossEntropy,
    WeightedLosses,
)
from easyrec.metrics import EvalMetrics
from easyrec.metrics.binary import auc, binary_metrics, binned_auc, max_f1, normalized_entropy
from easyrec.metrics.multiclass import multiclass_auc, multiclass_metrics
from easyrec.metrics.running import TrainingMetrics
from tests.conftest import options
from tests.metrics.test_eval_metrics import fake_data
from tests.test_docs import CONF

# ------------------------------------------------------------------------------------------------ new metrics


def test_max_f1_golden_of_easyrec():
    # eval_metric_test.py: max_f1([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) = 2/3; cuts: top 1 -> P 1, R 1/2, F1 2/3;
    # top 2 -> 1/2; top 3 -> 2/5; all -> P 1/2, R 1, F1 2/3: the highest threshold of the two best is kept
    value, threshold = max_f1(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert value == pytest.approx(2 / 3) and threshold == pytest.approx(0.9)


def test_max_f1_cuts_only_between_tied_scores_and_matches_sklearn():
    # thresholds 0.8 (rows 0, 1: tp 1, P 1/2, R 1/2, F1 1/2) and 0.3 (all: tp 2, P 2/3, R 1, F1 4/5)
    value, threshold = max_f1(torch.tensor([0.8, 0.8, 0.3]), torch.tensor([1.0, 0.0, 1.0]))
    assert value == pytest.approx(0.8) and threshold == pytest.approx(0.3)
    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 2, 300), rng.random(300).round(2)  # rounded: many ties
    best = max(f1_score(labels, probs >= t) for t in np.unique(probs))
    value, threshold = max_f1(torch.tensor(probs), torch.tensor(labels, dtype=torch.float32))
    assert value == pytest.approx(best) and f1_score(labels, probs >= threshold) == pytest.approx(best)
    assert all(math.isnan(v) for v in max_f1(torch.tensor([0.2, 0.9]), torch.zeros(2)))  # no positive: undefined


def test_normalized_entropy_is_the_logloss_over_the_entropy_of_the_base_rate():
    probs, labels = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    logloss = -(math.log(0.9) + math.log(0.2) + math.log(0.3) + math.log(0.6)) / 4
    assert normalized_entropy(probs, labels) == pytest.approx(logloss / math.log(2))  # base rate 1/2
    # base rate 1/4: predicting it everywhere gives exactly 1
    assert normalized_entropy(torch.full((4,), 0.25), torch.tensor([1.0, 0.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert math.isnan(normalized_entropy(probs, torch.ones(4)))  # one class: no entropy to normalize by


def test_binary_metrics_give_the_chosen_ones_in_order_and_nan_when_diverged():
    probs, labels = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1.0, 0.0, 0.0, 1.0])
    values = binary_metrics(probs, labels, ("max_f1", "ne", "auc"))
    assert list(values) == ["max_f1", "max_f1_threshold", "ne", "auc"]
    assert values["auc"] == pytest.approx(0.5)  # pairs: (0.9 > 0.8, 0.7) and (0.6 < 0.8, 0.7): 2 of 4
    nans = binary_metrics(torch.tensor([math.nan, 0.5]), torch.tensor([1.0, 0.0]), ("max_f1",))
    assert list(nans) == ["max_f1", "max_f1_threshold"] and all(math.isnan(v) for v in nans.values())


def test_binned_auc_counts_scores_of_one_bin_as_tied():
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    # 4 bins: 0.9 (pos) > 0.6 (neg), 0.3 (pos) and 0.4 (neg) share bin 1: pairs 1 + 1 + 0.5 + 0 of 4
    assert binned_auc(torch.tensor([0.9, 0.6, 0.3, 0.4]), labels, bins=4) == pytest.approx(2.5 / 4)
    assert auc(torch.tensor([0.9, 0.6, 0.3, 0.4]), labels) == pytest.approx(2 / 4)  # exact: 0.3 < 0.4
    probs, labels = torch.rand(5000, generator=torch.Generator().manual_seed(0)), torch.rand(5000) < 0.3
    assert binned_auc(probs, labels.float()) == pytest.approx(auc(probs, labels.float()), abs=1e-4)
    assert math.isnan(binned_auc(probs, torch.zeros(5000)))


def test_multiclass_auc_is_the_macro_mean_of_one_vs_rest_aucs():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.5, 0.2, 0.3], [0.1, 0.2, 0.7]])
    labels = torch.tensor([0.0, 1.0, 1.0, 2.0])
    # class 0 (row 0 vs 1, 2, 3): 0.6 beats 0.2, 0.5, 0.1 -> 1; class 1 (rows 1, 2 vs 0, 3): 0.5 beats 0.3, 0.2;
    # 0.2 ties 0.2 and loses to 0.3 -> (2 + 0.5) / 4; class 2 (row 3): 0.7 beats all -> 1
    assert multiclass_auc(probs, labels) == pytest.approx((1 + 2.5 / 4 + 1) / 3)
    rng = np.random.default_rng(1)
    logits = torch.tensor(rng.normal(size=(200, 4)))
    targets = torch.tensor(rng.integers(0, 4, 200))
    probs = torch.softmax(logits, 1)
    expected = roc_auc_score(targets.numpy(), probs.numpy(), multi_class="ovr", average="macro")
    assert multiclass_auc(probs, targets) == pytest.approx(expected)
    # a class absent from the labels is left out
    assert multiclass_auc(probs[:3], torch.tensor([0, 1, 1])) == pytest.approx(
        np.mean([roc_auc_score([1, 0, 0], probs[:3, 0]), roc_auc_score([0, 1, 1], probs[:3, 1])])
    )
    assert list(multiclass_metrics(probs, targets, 2, ("auc", "recall_at_topk"))) == ["auc", "recall@2"]


def test_metrics_lists_choose_the_keys_and_the_defaults_keep_todays():
    labels = [1.0, 0.0, 0.0, 1.0]
    data = fake_data(labels, ["label"])
    heads = BinaryCrossEntropy().heads(["label"])
    assert EvalMetrics().names(heads, data) == ["eval/auc", "eval/logloss"]
    chosen = EvalMetrics(binary=["auc", "ne", "max_f1"])
    assert chosen.names(heads, data) == ["eval/auc", "eval/ne", "eval/max_f1", "eval/max_f1_threshold"]
    multiclass = SoftmaxCrossEntropy(num_classes=3).heads(["label"])
    assert EvalMetrics().names(multiclass, data) == ["eval/accuracy", "eval/logloss", "eval/recall@5"]
    assert EvalMetrics(multiclass=["auc"]).names(multiclass, data) == ["eval/auc"]
    with pytest.raises(ValueError, match="binary"):
        EvalMetrics(binary=["f2"])


# ------------------------------------------------------------------------------------------------ eval/loss


def eval_data(labels, names=("label",), sessions=None, batch_size=3):
    """Data whose eval split has ``labels`` (and ``sessions``), trained in batches of ``batch_size``."""
    data = fake_data(labels, list(names), sessions=sessions)
    data.batch_size = batch_size
    return data


def evaluated(loss, data, outputs, eval_batch_size=5, metrics=None):
    """The metrics (``eval/loss`` included) of ``outputs`` over ``data``'s eval split, in eval batches."""
    metrics = metrics or EvalMetrics()
    heads = loss.heads(data.spec.label_names)
    evaluation = metrics.evaluation(heads, data, loss)
    for start in range(0, outputs.shape[0], eval_batch_size):
        evaluation.update(outputs[start : start + eval_batch_size], data.eval.rows(start, start + eval_batch_size))
    values = evaluation.compute()
    assert list(values) == metrics.names(heads, data, loss)  # names() says exactly what compute() gives
    return values


def test_eval_loss_of_a_pointwise_loss_is_its_mean_over_every_eval_row():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.1, -0.4, 1.5, -2.2])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0])
    # eval batches of 5 and training batches of 3 rows: calls on rows 0-2, 3-4, 5-6, weighted by their rows
    values = evaluated(BinaryCrossEntropy(), eval_data(labels), logits)
    assert values["eval/loss"] == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, labels)))
    assert list(values)[0] == "eval/loss"


def test_eval_loss_weights_each_training_sized_batch_by_its_rows():
    # rows of 3 calls: [0, 1, 2] sessions 7, 7, 8; [3, 4] session 8 (the session split, as training splits it)
    logits = torch.tensor([2.0, 0.5, 1.0, -1.0, 0.0])
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    sessions = torch.tensor([7, 7, 8, 8, 8])
    loss = PairwiseLogisticLoss()
    # first call: the only pair is (0 over 1) in session 7; second: (4 over 3) in session 8
    first, second = math.log1p(math.exp(-(2.0 - 0.5))), math.log1p(math.exp(-(0.0 - (-1.0))))
    values = evaluated(loss, eval_data(labels, sessions=sessions), logits, eval_batch_size=5)
    assert values["eval/loss"] == pytest.approx((3 * first + 2 * second) / 5)
    for (start, stop), value in zip(((0, 3), (3, 5)), (first, second), strict=True):  # the loss training computes
        assert float(loss(logits[start:stop], labels[start:stop], None, sessions[start:stop])) == pytest.approx(value)


def test_eval_loss_parts_of_jrc_and_the_combination():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2), torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    sessions = torch.tensor([1, 1, 1, 2, 2, 2])
    loss = JRCLoss(alpha=0.3)
    values = evaluated(loss, eval_data(labels, sessions=sessions), logits, eval_batch_size=6)
    assert list(values)[:3] == ["eval/loss", "eval/loss/jrc_ce", "eval/loss/jrc_ge"]
    ce = sum(3 * loss._ce(logits[r], labels[r], None) for r in (slice(0, 3), slice(3, 6))) / 6
    assert values["eval/loss/jrc_ce"] == pytest.approx(float(ce))
    assert values["eval/loss"] == pytest.approx(0.3 * values["eval/loss/jrc_ce"] + 0.7 * values["eval/loss/jrc_ge"])


def test_eval_loss_runs_the_loss_in_eval_mode_and_draws_nothing():
    # random weights: softmax(N(0, I)) in training, 1/K in eval; the global generator is left as it was
    loss = WeightedLosses({"a": {"loss": BinaryCrossEntropy()}, "b": {"loss": L2Loss()}}, strategy="random")
    logits, labels = torch.tensor([0.5, -0.5, 1.0]), torch.tensor([1.0, 0.0, 0.0])
    state = torch.get_rng_state()
    values = evaluated(loss, eval_data(labels), logits)
    assert torch.equal(torch.get_rng_state(), state) and loss.training
    assert values["eval/loss"] == pytest.approx((values["eval/loss/a"] + values["eval/loss/b"]) / 2)
    assert values["eval/loss/b"] == pytest.approx(float(((logits - labels) ** 2).mean()))


def test_eval_loss_of_a_multi_task_loss_has_one_part_per_task():
    loss = MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "cvr": {"loss": BinaryCrossEntropy(), "label": "buy"},
        },
        label_columns=["click", "buy"],
    )
    labels = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    outputs = torch.tensor([[1.0, 0.2], [-1.0, -2.0], [0.5, 0.3], [0.0, -1.0]])
    values = evaluated(loss, eval_data(labels, names=("click", "buy"), batch_size=2), outputs)
    ctr = float(F.binary_cross_entropy_with_logits(outputs[:, 0], labels[:, 0]))
    cvr = float(F.binary_cross_entropy_with_logits(outputs[:, 1], labels[:, 1]))
    assert values["eval/loss/ctr"] == pytest.approx(ctr) and values["eval/loss/cvr"] == pytest.approx(cvr)
    assert values["eval/loss"] == pytest.approx(ctr + cvr)
    assert {"eval/ctr/auc", "eval/cvr/auc"} <= set(values)


def test_eval_loss_sums_the_rows_of_every_worker():
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    logits = torch.tensor([0.5, -0.5, 1.0, 2.0])
    data, loss = eval_data(labels), BinaryCrossEntropy()
    passes = []
    for rows in (slice(0, 1), slice(1, 4)):  # worker 0 has one row, worker 1 three
        evaluation = EvalMetrics().evaluation(loss.heads(["label"]), data, loss)
        evaluation.update(logits[rows], data.eval.rows(rows.start, rows.stop))
        passes.append(evaluation)

    class Workers:  # the sum over both workers, as an all-reduce gives it
        def sum(self, tensor):
            return sum(p.loss._totals for p in passes)

    joined = passes[0]
    joined.loss.gather(Workers())
    expected = float(F.binary_cross_entropy_with_logits(logits, labels))
    assert joined.loss.compute()["eval/loss"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------ train metrics

SINGLE = SimpleNamespace(world_size=1)


def test_train_metrics_cover_the_rows_of_the_window_and_start_anew():
    heads = BinaryCrossEntropy().heads(["label"])
    running = TrainingMetrics(["auc", "logloss"], heads, ["label"])
    first = (torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0]))
    second = (torch.tensor([-0.5, 1.0]), torch.tensor([1.0, 0.0]))
    running.add(*first)
    running.add(*second)
    logits, labels = torch.cat([first[0], second[0]]), torch.cat([first[1], second[1]])
    values = running.close(SINGLE)
    assert values["train/auc"] == pytest.approx(roc_auc_score(labels, logits))
    assert values["train/logloss"] == pytest.approx(float(F.binary_cross_entropy_with_logits(logits, labels)))
    running.add(*first)  # the next window: only its own rows
    assert running.close(SINGLE)["train/auc"] == pytest.approx(1.0)
    assert running.close(SINGLE) == {}  # a window without rows


def test_train_metrics_of_a_multi_task_loss_are_per_task_where_they_fit():
    loss = MultiTaskLoss(
        {"ctr": {"loss": BinaryCrossEntropy(), "label": "click"}, "value": {"loss": L2Loss(), "label": "value"}},
        label_columns=["click", "value"],
    )
    running = TrainingMetrics(["auc", "mae"], loss.heads(), ["click", "value"])
    outputs = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [0.0, 1.5]])
    labels = torch.tensor([[1.0, 3.0], [0.0, 0.0], [0.0, 1.0]])
    running.add(outputs, labels)
    assert running.close(SINGLE) == pytest.approx({"train/ctr/auc": 1.0, "train/value/mae": (1 + 0 + 0.5) / 3})
    with pytest.raises(ConfigError, match=r"trainer.train_metrics: accuracy judges none of the loss's tasks"):
        TrainingMetrics(["auc", "accuracy"], loss.heads(), ["click", "value"])


@pytest.mark.parametrize("option", options("loss"))
def test_every_loss_option_has_a_finite_eval_loss_with_its_parts(option):
    """Each loss of conf/loss/ on outputs of its shape, 0/1 labels of every label column and two sessions."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    columns = ["label", "conversion", "teacher"]
    root = OmegaConf.create({"data": {"features": {"label": columns}}})
    node = OmegaConf.load(CONF / "loss" / f"{option}.yaml")
    bases = [OmegaConf.load(CONF / "loss" / f"{base}.yaml") for base in node.pop("defaults", []) if base != "_self_"]
    root.loss = OmegaConf.merge(*bases, node)  # an option's defaults list: the options it extends, then itself
    loss = instantiate(root.loss)
    torch.manual_seed(0)
    rows = 12
    shape = (rows, 2, 4) if loss.task == "retrieval" else (rows, loss.num_outputs) if loss.num_outputs > 1 else (rows,)
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0] * 2)
    labels = torch.stack([labels, labels.flip(0), labels.roll(1)], 1) if loss.multi_task else labels
    sessions = torch.tensor([1] * 6 + [2] * 6)
    data = eval_data(labels, names=columns if loss.multi_task else ("label",), sessions=sessions, batch_size=6)
    values = evaluated(loss, data, torch.randn(shape), eval_batch_size=rows)
    objective = {k: v for k, v in values.items() if k.startswith("eval/loss")}
    assert list(objective) == ["eval/loss"] + [f"eval/loss/{part}" for part in loss.part_names()]
    assert all(math.isfinite(v) for v in objective.values()), objective
