"""Eval metrics chosen by each head's task (EasyRec's ``eval_config.metrics_set``), over a whole eval split."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge
from torch import Tensor, nn

from easyrec.config.arguments import checked
from easyrec.console import plural
from easyrec.data.batches import Batch
from easyrec.losses.base import Loss
from easyrec.metrics.binary import BINARY_METRICS, binary_keys, binary_metrics
from easyrec.metrics.grouped_auc import grouped_auc
from easyrec.metrics.multiclass import DEFAULT_MULTICLASS, MULTICLASS_METRICS, multiclass_keys, multiclass_metrics
from easyrec.metrics.objective import EvalLoss, loss_metric_names
from easyrec.metrics.regression import regression_metrics
from easyrec.metrics.retrieval import in_batch_recall_hits

log = logging.getLogger(__name__)

#: ``eval/gauc`` (mean over sessions), ``eval/gauc_sample`` and ``eval/gauc_positive`` (weighted by the
#: session's samples or positives; EasyRec's mean_by_sample_num and mean_by_positive_num).
GAUC_NAMES = {"mean": "gauc", "sample": "gauc_sample", "positive": "gauc_positive"}


K = Annotated[int, Ge(1)]
BinaryMetric = Literal[BINARY_METRICS]
MulticlassMetric = Literal[MULTICLASS_METRICS]


class EvalMetrics:
    """Which metrics judge each task; :meth:`evaluation` accumulates one pass over the eval split.

    * ``binary``: those of ``binary`` (default ``auc``, ``logloss``; also ``ne``, normalized entropy, and ``max_f1``
      with its ``max_f1_threshold``: :mod:`easyrec.metrics.binary`); with a session column ``gauc`` (one key per
      reduction); where the data knows the label's true probabilities (``data.features.oracle``, synthetic data)
      the oracle's ``oracle_auc`` and ``oracle_logloss``.
    * ``multiclass``: those of ``multiclass`` (default ``accuracy``, ``logloss``, ``recall_at_topk`` as
      ``recall@<top_k>``; also ``auc``, one-vs-rest macro-averaged).
    * ``regression``: ``rmse``, ``mae``; and ``auc`` of the prediction against ``label > 0`` when the eval labels
      are non-negative with both zeros and positives (a value model must also rank converters first). An eval
      split that is streamed (not in memory) cannot be looked at beforehand: ``auc`` is then always listed, and is
      NaN (with the reason in the log) for labels that do not fit.
    * ``retrieval``: ``recall@<k>`` for each of ``recall_at_k``, among the positive pairs of the same eval batch,
      and ``auc`` of the pair score against the label.

    A single loss's metrics are ``eval/<metric>``; a multi-task loss's are ``eval/<task>/<metric>``. An AUC that is
    NaN (an eval split of one row or one class, a diverged model) is warned about once per metric, with the reason.
    Given the loss, every task also gets ``eval/loss`` (and ``eval/loss/<part>``): see
    :class:`~easyrec.metrics.objective.EvalLoss`.

    Args:
        binary: the metrics of a binary head, any of ``auc``, ``logloss``, ``ne``, ``max_f1``.
        multiclass: the metrics of a multi-class head, any of ``accuracy``, ``logloss``, ``recall_at_topk``, ``auc``.
        gauc_reductions: any of ``mean``, ``sample``, ``positive``.
        top_k: k of the multi-class ``recall@k``.
        recall_at_k: the k of the retrieval ``recall@k``.
    """

    @checked
    def __init__(
        self,
        binary: Sequence[BinaryMetric] = ("auc", "logloss"),
        multiclass: Sequence[MulticlassMetric] = DEFAULT_MULTICLASS,
        gauc_reductions: Sequence[Literal["mean", "sample", "positive"]] = ("mean",),
        top_k: K = 5,
        recall_at_k: Sequence[K] = (1, 10, 50),
    ) -> None:
        self.binary, self.multiclass = tuple(dict.fromkeys(binary)), tuple(dict.fromkeys(multiclass))
        self.gauc_reductions, self.top_k, self.recall_at_k = tuple(gauc_reductions), top_k, tuple(recall_at_k)
        self.explained: set[str] = set()  # the NaN AUCs already warned about

    def names(self, heads: Sequence[Any], data: Any, loss: Loss | None = None) -> list[str]:
        """Every key :meth:`Evaluation.compute` returns for ``heads`` on ``data``'s eval split: from ``data.spec``
        (and, for a regression head, the eval labels when the split is in memory); with ``loss``, ``eval/loss``
        and its parts first."""
        objective = loss_metric_names(loss) if loss is not None else []
        return objective + [head.prefix + name for head in heads for name in self._metric_names(head, data)]

    def evaluation(self, heads: Sequence[Any], data: Any, loss: Loss | None = None) -> Evaluation:
        """One pass over ``data``'s eval split judging ``heads``; with the training ``loss``, ``eval/loss`` too (on
        batches of ``data.batch_size`` rows, as training computes it)."""
        return Evaluation(self, heads, data, None if loss is None else EvalLoss(loss, data.batch_size))

    def _metric_names(self, head: Any, data: Any) -> list[str]:
        if head.task == "binary":
            names = binary_keys(self.binary)
            if data.spec.session is not None:
                names += [GAUC_NAMES[r] for r in self.gauc_reductions]
            if has_oracle(data.spec, head):
                names += ["oracle_auc", "oracle_logloss"]
            return names
        if head.task == "multiclass":
            return multiclass_keys(self.multiclass, self.top_k)
        if head.task == "regression":
            in_memory = getattr(data, "eval", None)
            if in_memory is None:  # streamed: known only once evaluated, and the names are needed before
                return ["rmse", "mae", "auc"]
            labels = batch_labels(in_memory.labels, data.spec.label_names, head.label)
            return ["rmse", "mae"] + (["auc"] if _zero_and_positive(labels) else [])
        return [f"recall@{k}" for k in self.recall_at_k] + ["auc"]


class Evaluation:
    """One pass over the eval split: :meth:`update` with each batch's model output, then :meth:`compute`.

    The labels, sessions and true probabilities come with the batches, so the eval split need not be in memory
    (a streamed one is not); only ``(N,)`` predictions and labels per head are kept."""

    def __init__(self, metrics: EvalMetrics, heads: Sequence[Any], data: Any, loss: EvalLoss | None = None) -> None:
        self.metrics, self.heads, self.data, self.loss = metrics, list(heads), data, loss
        self.names = (loss.names if loss is not None else []) + metrics.names(self.heads, data)
        self._predictions: list[list[Tensor]] = [[] for _ in self.heads]
        # the batches' labels (B,) or (B, L), sessions (B,) and oracle (B, L), in order
        self._labels: list[Tensor] = []
        self._sessions: list[Tensor] = []
        self._oracle: list[Tensor] = []
        self._hits = [torch.zeros(len(metrics.recall_at_k), dtype=torch.long) for _ in self.heads]
        self._queries = [0 for _ in self.heads]

    @torch.inference_mode()
    def update(self, outputs: Tensor, batch: Any) -> None:
        """Add one eval batch: ``outputs`` is the model output for ``batch`` (eval batches come in order)."""
        self._labels.append(batch.labels.cpu())
        if batch.sessions is not None:
            self._sessions.append(batch.sessions.cpu())
        if batch.oracle is not None:
            self._oracle.append(batch.oracle.cpu())
        outputs = outputs.float()
        if self.loss is not None:
            self.loss.update(outputs, batch)
        for i, head in enumerate(self.heads):
            part = head.outputs(outputs)
            self._predictions[i].append(head.scores(part).cpu())
            if head.task == "retrieval":
                labels = batch_labels(batch.labels, self.data.spec.label_names, head.label)
                hits, queries = in_batch_recall_hits(part, labels, self.metrics.recall_at_k)
                self._hits[i] += hits
                self._queries[i] += queries

    def gather(self, workers: Any) -> None:
        """Combine the passes of several workers over disjoint, ordered shares of the eval batches (worker 0 the
        first share): afterwards every worker holds all predictions, labels, sessions and true probabilities in
        order, and :meth:`compute` gives the metrics of the whole split. ``workers``: a
        :class:`~easyrec.distributed.SingleProcess` or ``DDP``."""
        self._predictions = [workers.gather(predictions) for predictions in self._predictions]
        self._labels, self._sessions, self._oracle = (
            workers.gather(self._labels),
            workers.gather(self._sessions),
            workers.gather(self._oracle),
        )
        self._hits = [workers.sum(hits) for hits in self._hits]
        self._queries = [int(workers.sum(torch.tensor(queries))) for queries in self._queries]
        if self.loss is not None:
            self.loss.gather(workers)

    def compute(self) -> dict[str, float]:
        results: dict[str, float] = self.loss.compute() if self.loss is not None else {}
        label_names = self.data.spec.label_names
        all_labels = torch.cat(self._labels)
        for i, head in enumerate(self.heads):
            predictions = torch.cat(self._predictions[i])
            labels = batch_labels(all_labels, label_names, head.label)
            rows = batch_labels(all_labels, label_names, head.given) > 0 if head.given else None
            values = self._head_metrics(i, head, predictions, labels, rows)
            results.update({head.prefix + name: value for name, value in values.items()})
            nan_aucs = [head.prefix + k for k, v in values.items() if k.endswith("auc") and math.isnan(v)]
            if rows is not None:
                predictions, labels = predictions[rows], labels[rows]
            for name in (n for n in nan_aucs if n not in self.metrics.explained):
                self.metrics.explained.add(name)
                log.warning("%s is nan: %s", name, self._why_nan(head, predictions, labels))
        return results

    def _why_nan(self, head: Any, predictions: Tensor, labels: Tensor) -> str:
        """Why an AUC of ``head`` over these ``predictions (N,)`` and ``labels (N,)`` is NaN, in a few words."""
        if not bool(predictions.isfinite().all()):
            return "the model's predictions are not finite: training diverged (see train/skipped_steps; lower the lr)"
        in_memory = getattr(self.data, "eval", None)
        where = "the eval split" + (f" ({in_memory.source})" if in_memory is not None else "")
        where += f" where '{head.given}' is positive" if head.given else ""
        if head.task == "regression" and not _zero_and_positive(labels):
            return f"the labels of {where} are not non-negative with both zeros and positives"
        if len(labels) < 2:
            return f"{where} has {plural(len(labels), 'row')}: an AUC needs two classes"
        values, positive = torch.unique(labels), labels > 0
        if len(values) == 1:
            return f"{where} has only label {values[0].item():g}: an AUC needs both classes"
        if bool(positive.all()):
            return f"{where} has only positive labels: an AUC needs both classes"
        return f"no session of {where} has both classes"

    def _oracle_of(self, head: Any) -> Tensor | None:
        """The true probabilities of ``head``'s label ``(N,)``, or None. For a head given another label column,
        the ratio of the two (the conditional probability)."""
        if not has_oracle(self.data.spec, head):
            return None
        oracle, names = torch.cat(self._oracle), self.data.spec.label_names
        probs = oracle[:, names.index(head.label)]
        if not head.given:
            return probs
        return (probs / oracle[:, names.index(head.given)].clamp_min(1e-12)).clamp(0.0, 1.0)

    def _head_metrics(
        self, i: int, head: Any, predictions: Tensor, labels: Tensor, rows: Tensor | None
    ) -> dict[str, float]:
        """The metrics of one head, over the eval rows (``rows``: a mask of those that count, or None: all)."""
        metrics = self.metrics
        if head.task == "binary":
            sessions = torch.cat(self._sessions) if self.data.spec.session is not None else None
            oracle = self._oracle_of(head)
            if rows is not None:
                predictions, labels = predictions[rows], labels[rows]
                sessions = None if sessions is None else sessions[rows]
                oracle = None if oracle is None else oracle[rows]
            values = binary_metrics(predictions, labels, metrics.binary)
            if sessions is not None:
                for reduction in metrics.gauc_reductions:
                    values[GAUC_NAMES[reduction]] = grouped_auc(predictions, labels, sessions, reduction)["gauc"]
            if oracle is not None:
                values.update({f"oracle_{k}": v for k, v in binary_metrics(oracle, labels).items()})
            return values
        if head.task == "multiclass":
            return multiclass_metrics(predictions, labels, metrics.top_k, metrics.multiclass)
        if head.task == "regression":
            values = regression_metrics(predictions, labels)
            if _zero_and_positive(labels):
                values["auc"] = binary_metrics(predictions, (labels > 0).float(), ("auc",))["auc"]
            elif head.prefix + "auc" in self.names:  # listed before the labels were seen (a streamed split)
                values["auc"] = math.nan
            return values
        queries = max(self._queries[i], 1)
        values = {f"recall@{k}": int(h) / queries for k, h in zip(metrics.recall_at_k, self._hits[i], strict=True)}
        values["auc"] = binary_metrics(predictions.sigmoid(), (labels > 0).float(), ("auc",))["auc"]
        return values


# no_grad, not inference_mode: fbgemm registers its CPU lookup of sharded tables under the autograd keys only
@torch.no_grad()
def evaluate_model(
    model: nn.Module, batches: Iterable[Any], evaluation: Evaluation, device: torch.device, workers: Any = None
) -> dict:
    """Run ``model`` (in eval mode) over the eval ``batches`` in order and return ``evaluation``'s metrics: the one
    eval loop, shared by training (:meth:`Trainer.evaluate <easyrec.trainer.Trainer.evaluate>`) and
    ``easyrec evaluate``, so both give the same numbers for the same weights and data. With ``workers`` (several
    processes, each given its share of the batches), the predictions of all are gathered first; a sharded model's
    workers run it alike (``workers.in_lockstep``: a worker whose batches ran out runs it on 0 rows)."""
    model.eval()
    for batch in workers.in_lockstep(batches) if workers is not None else batches:
        if batch is None:  # the model's lookups are collectives: this worker takes part with no rows
            model(*Batch.of_zeros(evaluation.data.input_spec, 0, device).inputs)
            continue
        batch = batch.to(device)
        evaluation.update(model(*batch.inputs), batch)
    if workers is not None and workers.world_size > 1:
        evaluation.gather(workers)
    return evaluation.compute()


def batch_labels(labels: Tensor, label_names: Sequence[str], column: str) -> Tensor:
    """Column ``column`` of ``labels`` (``(B,)`` for one label column, ``(B, L)`` for several) -> ``(B,)``."""
    return labels if labels.dim() == 1 else labels[:, list(label_names).index(column)]


def has_oracle(spec: Any, head: Any) -> bool:
    """Whether the batches carry the true probabilities of ``head``'s label (and of its ``given`` label)."""
    return head.label in spec.oracle and (not head.given or head.given in spec.oracle)


def _zero_and_positive(labels: Tensor) -> bool:
    return bool((labels >= 0).all() and (labels == 0).any() and (labels > 0).any())
