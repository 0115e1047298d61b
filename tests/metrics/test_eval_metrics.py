"""Eval metrics chosen by the task: regression, multi-class, retrieval, and the per-head evaluation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from easyrec.data.batches import EncodedSplit
from easyrec.losses import BinaryCrossEntropy, L2Loss, MultiTaskLoss, SoftmaxCrossEntropy, ZILNLoss
from easyrec.losses.heads import Head, pair_scores
from easyrec.metrics import EvalMetrics, in_batch_recall_hits, multiclass_metrics, regression_metrics
from easyrec.metrics.binary import binary_metrics


def test_regression_metrics_match_numpy():
    predictions, labels = torch.tensor([1.0, 2.0, 4.0, 0.5]), torch.tensor([1.5, 2.0, 1.0, 0.0])
    errors = predictions.numpy() - labels.numpy()
    values = regression_metrics(predictions, labels)
    assert values["rmse"] == pytest.approx(math.sqrt(np.mean(errors**2)))
    assert values["mae"] == pytest.approx(np.mean(np.abs(errors)))


def test_multiclass_metrics_accuracy_logloss_and_top_k():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4]])
    labels = torch.tensor([0.0, 1.0, 1.0, 2.0])
    values = multiclass_metrics(probs, labels, top_k=2)
    assert values["accuracy"] == pytest.approx(0.5)  # rows 0 and 2
    assert values["recall@2"] == pytest.approx(1.0)  # every label is among the two likeliest
    assert values["logloss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.5, 0.4])))
    assert multiclass_metrics(probs, labels, top_k=1)["recall@1"] == pytest.approx(0.5)


def test_in_batch_recall_counts_the_items_that_score_strictly_higher():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
    outputs = torch.stack([users, items], 1)
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the last row is not a positive pair: not a query or candidate
    # candidates: items 0 [1,0], 1 [1,0] (the same item), 2 [0,2]
    # query 0 [1,0]: own 1; scores 1, 1, 0 -> none higher -> rank 1
    # query 1 [0,1]: own 0; scores 0, 0, 2 -> one higher -> rank 2
    # query 2 [1,1]: own 2; scores 1, 1, 2 -> none higher -> rank 1
    hits, queries = in_batch_recall_hits(outputs, labels, ks=(1, 2), chunk=2)
    assert queries == 3 and hits.tolist() == [2, 3]


def split(labels, sessions=None, oracle=None) -> EncodedSplit:
    labels = torch.as_tensor(labels, dtype=torch.float32)
    n = labels.shape[0]
    dense, sparse = torch.zeros(n, 0), torch.zeros(n, 0, dtype=torch.int32)
    return EncodedSplit(dense, sparse, labels, None, "eval", sessions, oracle)


def fake_data(labels, names, sessions=None, oracle=None):
    """Data whose eval split has ``labels``; ``oracle``: the true probabilities ``(N,)`` of the first label."""
    labels = torch.as_tensor(labels, dtype=torch.float32)
    table = None
    if oracle is not None:
        table = torch.full((labels.shape[0], len(names)), math.nan)
        table[:, 0] = oracle
    spec = SimpleNamespace(
        label_names=names, session=None if sessions is None else "s", oracle={} if oracle is None else {names[0]: "p"}
    )
    return SimpleNamespace(eval=split(labels, sessions, table), spec=spec)


def evaluate(metrics, heads, data, outputs, batch_size=3):
    """The metrics of ``outputs`` over ``data``'s eval split, fed in batches that carry the labels, sessions and
    oracle (Evaluation reads nothing else of the split)."""
    evaluation = metrics.evaluation(heads, data)
    for start in range(0, outputs.shape[0], batch_size):
        evaluation.update(outputs[start : start + batch_size], data.eval.rows(start, start + batch_size))
    values = evaluation.compute()
    assert list(values) == metrics.names(heads, data)  # names() says exactly what compute() gives
    return values


def test_binary_head_gives_auc_logloss_gauc_reductions_and_oracle():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.3, -0.2, 1.0, -2.0])
    labels = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    sessions = torch.tensor([1, 1, 1, 2, 2, 2, 2])
    data = fake_data(labels, ["label"], sessions, oracle=torch.full((7,), 0.5))
    metrics = EvalMetrics(gauc_reductions=("mean", "sample", "positive"))
    values = evaluate(metrics, BinaryCrossEntropy().heads(["label"]), data, logits)
    assert values["eval/auc"] == pytest.approx(roc_auc_score(labels, logits.numpy()))
    assert values["eval/oracle_auc"] == pytest.approx(0.5)
    assert {"eval/gauc", "eval/gauc_sample", "eval/gauc_positive", "eval/logloss"} <= set(values)


def test_regression_head_adds_auc_when_labels_are_zero_or_positive():
    data = fake_data([0.0, 3.0, 0.0, 10.0], ["value"])
    values = evaluate(EvalMetrics(), L2Loss().heads(["value"]), data, torch.tensor([0.5, 2.0, 0.1, 8.0]))
    assert values["eval/rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 0.01 + 4) / 4))
    assert values["eval/auc"] == 1.0
    negative = fake_data([-1.0, 3.0, 0.0, 10.0], ["value"])
    assert "eval/auc" not in EvalMetrics().names(L2Loss().heads(["value"]), negative)


def test_ziln_head_evaluates_its_expected_value():
    loss = ZILNLoss()
    logits = torch.tensor([[3.0, 1.0, 0.0], [-3.0, 0.0, 0.0], [2.0, 2.0, -1.0]])
    data = fake_data([5.0, 0.0, 9.0], ["value"])
    values = evaluate(EvalMetrics(), loss.heads(["value"]), data, logits)
    expected = loss.scores(logits)
    assert values["eval/mae"] == pytest.approx(float((expected - torch.tensor([5.0, 0.0, 9.0])).abs().mean()), rel=1e-5)
    assert values["eval/auc"] == 1.0


def test_multiclass_head_on_class_probabilities():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    data = fake_data([0.0, 1.0, 2.0, 2.0], ["action"])
    values = evaluate(EvalMetrics(top_k=2), SoftmaxCrossEntropy(3).heads(["action"]), data, logits)
    assert values["eval/accuracy"] == pytest.approx(0.75)
    assert set(values) == {"eval/accuracy", "eval/logloss", "eval/recall@2"}


def test_multi_task_heads_are_prefixed_and_read_their_columns_and_labels():
    loss = MultiTaskLoss(
        {"ctr": {"loss": BinaryCrossEntropy(), "label": "click"}, "value": {"loss": ZILNLoss(), "label": "ltv"}},
        label_columns=["click", "ltv"],
    )
    heads = loss.heads(["click", "ltv"])
    assert [(h.name, h.task, h.label, h.columns) for h in heads] == [
        ("ctr", "binary", "click", (0, 1)),
        ("value", "regression", "ltv", (1, 4)),
    ]
    outputs = torch.randn(6, 4)
    labels = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 7.0], [0.0, 0.0]])
    data = fake_data(labels, ["click", "ltv"])
    values = evaluate(EvalMetrics(), heads, data, outputs)
    assert values["eval/ctr/auc"] == pytest.approx(roc_auc_score(labels[:, 0], outputs[:, 0]))
    assert set(values) == {"eval/ctr/auc", "eval/ctr/logloss", "eval/value/rmse", "eval/value/mae", "eval/value/auc"}


def test_retrieval_head_recall_per_eval_batch_and_pair_auc():
    head = Head("", "retrieval", "label", pair_scores)
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    data = fake_data([1.0, 1.0, 0.0, 0.0], ["label"])
    values = evaluate(EvalMetrics(recall_at_k=(1,)), [head], data, torch.stack([users, items], 1), batch_size=2)
    assert values == {"eval/recall@1": 1.0, "eval/auc": 1.0}


@pytest.mark.parametrize("bad", [{"gauc_reductions": ["median"]}, {"top_k": 0}, {"recall_at_k": [5, 0]}])
def test_bad_metric_settings_are_refused(bad):
    with pytest.raises(ValueError):
        EvalMetrics(**bad)


def test_a_conditional_head_judges_the_ratio_on_the_rows_where_the_given_label_is_positive():
    loss = MultiTaskLoss(
        {
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "ctcvr": {"loss": BinaryCrossEntropy(), "label": "buy"},
        },
        label_columns=["click", "buy"],
        eval_conditional={"cvr": {"task": "ctcvr", "given": "ctr"}},
    )
    heads = loss.heads(["click", "buy"])
    assert [(h.name, h.label, h.given) for h in heads][-1] == ("cvr", "buy", "click")
    outputs = torch.tensor([[2.0, 1.0], [1.0, -1.0], [0.5, -3.0], [-2.0, -1.0], [0.0, -0.5], [-1.0, -4.0]])
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    p_ctr, p_ctcvr = torch.sigmoid(outputs[:, 0]), torch.sigmoid(outputs[:, 1])
    oracle = {"click": torch.full((6,), 0.5), "buy": torch.tensor([0.4, 0.1, 0.2, 0.3, 0.1, 0.1])}
    spec = SimpleNamespace(label_names=["click", "buy"], session=None, oracle={"click": "p", "buy": "q"})
    data = SimpleNamespace(eval=split(labels, oracle=torch.stack([oracle["click"], oracle["buy"]], 1)), spec=spec)
    values = evaluate(EvalMetrics(), heads, data, outputs)
    clicked = labels[:, 0] > 0
    cvr = (p_ctcvr / p_ctr).clamp(0, 1)[clicked]
    assert values["eval/cvr/auc"] == pytest.approx(roc_auc_score(labels[clicked, 1], cvr))
    assert values["eval/cvr/oracle_auc"] == pytest.approx(roc_auc_score(labels[clicked, 1], oracle["buy"][clicked]))
    assert values["eval/ctcvr/auc"] == pytest.approx(roc_auc_score(labels[:, 1], p_ctcvr))


def test_a_conditional_head_must_name_two_tasks():
    with pytest.raises(ValueError, match="eval_conditional.cvr.given=click: no such task"):
        MultiTaskLoss(
            {"ctr": {"loss": BinaryCrossEntropy(), "label": "click"}},
            label_columns=["click"],
            eval_conditional={"cvr": {"task": "ctr", "given": "click"}},
        )


def test_binary_auc_counts_tied_scores_half_and_is_nan_for_one_class():
    probs, labels = torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    # positive-negative pairs: (0.4, 0.1) 1, (0.4, 0.4) 1/2, (0.8, 0.1) 1, (0.8, 0.4) 1
    assert binary_metrics(probs, labels)["auc"] == pytest.approx(3.5 / 4, abs=1e-12)
    assert math.isnan(binary_metrics(probs, torch.ones(4))["auc"])


def test_multiclass_accuracy_and_recall_at_k_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.25, 0.45, 0.3]])
    metrics = multiclass_metrics(probs, torch.tensor([1, 2, 0]), top_k=2)
    assert metrics["accuracy"] == pytest.approx(1 / 3)  # only row 2's most probable class is its label
    assert metrics["recall@2"] == pytest.approx(2 / 3)  # rows 1 and 2 have their label among the top 2
    assert multiclass_metrics(probs, torch.tensor([1, 2, 0]), top_k=5)["recall@5"] == 1.0


@pytest.mark.parametrize(
    "labels,reason",
    [
        ([1.0], "eval/auc is nan: the eval split (eval) has 1 row: an AUC needs two classes"),
        ([1.0, 1.0, 1.0], "eval/auc is nan: the eval split (eval) has only label 1: an AUC needs both classes"),
    ],
    ids=["one-row", "one-class"],
)
def test_a_nan_auc_is_warned_once_with_the_reason(caplog, labels, reason):
    data = fake_data(labels, ["label"])
    metrics = EvalMetrics()
    with caplog.at_level("WARNING", logger="easyrec.metrics.evaluation"):
        for _ in range(3):  # three evaluations of one run: one warning
            values = evaluate(metrics, BinaryCrossEntropy().heads(["label"]), data, torch.zeros(len(labels)))
    assert math.isnan(values["eval/auc"]) and math.isfinite(values["eval/logloss"])
    assert [record.getMessage() for record in caplog.records] == [reason]


def test_diverged_predictions_give_nan_metrics_and_say_why(caplog):
    data = fake_data([1.0, 0.0, 1.0, 0.0], ["label"])
    with caplog.at_level("WARNING", logger="easyrec.metrics.evaluation"):
        values = evaluate(
            EvalMetrics(), BinaryCrossEntropy().heads(["label"]), data, torch.tensor([float("nan"), 1, 2, 3])
        )
    assert math.isnan(values["eval/auc"]) and math.isnan(values["eval/logloss"])  # no crash in the logloss
    assert "eval/auc is nan: the model's predictions are not finite: training diverged" in caplog.text


def test_a_conditional_head_names_the_rows_it_keeps(caplog):
    loss = MultiTaskLoss(
        label_columns=["click", "buy"],
        tasks={
            "ctr": {"loss": BinaryCrossEntropy(), "label": "click"},
            "cvr": {"loss": BinaryCrossEntropy(), "label": "buy"},
        },
        eval_conditional={"cvr_given_click": {"task": "cvr", "given": "ctr"}},
    )
    labels = [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]  # every click converts: P(buy | click) has one class
    data = fake_data(labels, ["click", "buy"])
    with caplog.at_level("WARNING", logger="easyrec.metrics.evaluation"):
        evaluate(EvalMetrics(), loss.heads(["click", "buy"]), data, torch.zeros(4, 2))
    assert "the eval split (eval) where 'click' is positive has only label 1" in caplog.text


def test_an_evaluation_needs_only_the_batches_not_the_eval_split_in_memory():
    """A streamed eval split (``data.eval`` None): labels, sessions and oracle come from the batches, and the
    metrics equal those of the split in memory, fed in other batch sizes too."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    sessions = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3, 3])
    oracle = torch.rand(9, generator=generator)
    logits = torch.randn(9, generator=generator)
    in_memory = fake_data(labels, ["label"], sessions, oracle)
    heads = BinaryCrossEntropy().heads(["label"])
    expected = evaluate(EvalMetrics(), heads, in_memory, logits)
    streamed = SimpleNamespace(eval=None, spec=in_memory.spec)
    evaluation = EvalMetrics().evaluation(heads, streamed)
    for start, stop in [(0, 4), (4, 5), (5, 9)]:
        evaluation.update(logits[start:stop], in_memory.eval.rows(start, stop))
    assert evaluation.compute() == pytest.approx(expected)
    assert set(expected) == {"eval/auc", "eval/logloss", "eval/gauc", "eval/oracle_auc", "eval/oracle_logloss"}
    assert expected["eval/oracle_auc"] == pytest.approx(roc_auc_score(labels, oracle))


def test_gather_joins_the_labels_sessions_and_oracle_of_every_worker_in_rank_order():
    """Two workers, each with its share of the batches: the gathered metrics are those of one worker."""
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    sessions, oracle = torch.tensor([1, 1, 2, 2, 3, 3]), torch.tensor([0.9, 0.2, 0.4, 0.5, 0.1, 0.7])
    data = fake_data(labels, ["label"], sessions, oracle)
    logits = torch.tensor([1.0, -1.0, 0.2, 0.3, -2.0, 0.5])
    heads = BinaryCrossEntropy().heads(["label"])
    shares = []
    for rows in [(0, 2), (2, 6)]:
        share = EvalMetrics().evaluation(heads, data)
        share.update(logits[rows[0] : rows[1]], data.eval.rows(*rows))
        shares.append(share)

    class Rank1:  # the second worker's side of each all_gather, recorded
        calls: list[list] = []

        def gather(self, pieces):
            self.calls.append(list(pieces))
            return list(pieces)

        def sum(self, tensor):
            return tensor

    class Rank0(Rank1):  # every worker's pieces, in rank order, as DDP.gather gives them
        def gather(self, pieces):
            return list(pieces) + Rank1.calls.pop(0)

    shares[1].gather(Rank1())
    shares[0].gather(Rank0())
    assert shares[0].compute() == pytest.approx(evaluate(EvalMetrics(), heads, data, logits))


def test_a_streamed_regression_split_lists_auc_and_gives_nan_for_labels_that_do_not_fit(caplog):
    heads = L2Loss().heads(["value"])
    in_memory = fake_data([-1.0, 3.0, 0.0, 10.0], ["value"])
    assert "eval/auc" not in EvalMetrics().names(heads, in_memory)  # in memory: decided from the labels
    streamed = SimpleNamespace(eval=None, spec=in_memory.spec)
    evaluation = EvalMetrics().evaluation(heads, streamed)
    assert evaluation.names == ["eval/rmse", "eval/mae", "eval/auc"]
    evaluation.update(torch.tensor([0.5, 2.0, 0.1, 8.0]), in_memory.eval.rows(0, 4))
    with caplog.at_level("WARNING", logger="easyrec.metrics.evaluation"):
        values = evaluation.compute()
    assert list(values) == evaluation.names and math.isnan(values["eval/auc"])
    assert "the labels of the eval split are not non-negative with both zeros and positives" in caplog.text
