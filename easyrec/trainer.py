"""The training loop: one class that reads top to bottom."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from easyrec.checkpoints import (
    FORMAT,
    Checkpoints,
    EachOf,
    RandomState,
    Stateful,
    best_steps,
    write_json,
)
from easyrec.config.arguments import NonNegativeInt, Positive, PositiveInt, checked
from easyrec.console import TrainingReport, plural
from easyrec.data.batches import EncodedSplit, TrainStep
from easyrec.data.tabular import TabularData
from easyrec.distributed import SingleProcess
from easyrec.early_stopping import EarlyStopping, NeverStop
from easyrec.ema import EMASettings, average_of, raw_name
from easyrec.errors import ConfigError, Interrupted
from easyrec.loggers import Logger, NullLogger
from easyrec.loss_scaling import LossScale
from easyrec.losses.base import Loss
from easyrec.metrics import EvalMetrics, TrainingMetrics, evaluate_model
from easyrec.metrics.running import TrainMetric
from easyrec.models.base import l2_regularization
from easyrec.modules.kernel_penalty import KernelPenalty
from easyrec.optim.gradients import GradientReport, GradientTreatment
from easyrec.optim.grouped import GroupedOptimizer
from easyrec.sharded_checkpoints import read_shards
from easyrec.stopping import StopRequests

log = logging.getLogger(__name__)

#: ``trainer.precision``: see :class:`Trainer`
Precision = Literal["fp32", "bf16", "bf16_force", "fp16", "auto"]
#: The autocast dtype of each precision used (fp32: no autocast).
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _one_limit(max_epochs: int, max_steps: int | None, **_: object) -> str | None:
    return "max_epochs=0 and max_steps=null: set at least one limit" if max_epochs <= 0 and not max_steps else None


class Trainer:
    """Trains ``model`` on ``data`` with ``optimizer`` and ``loss``, evaluates, logs and checkpoints.

    Args:
        model: ``forward(dense (B, D), sparse (B, F)) -> logits (B,)``, ``(B, K)`` for a loss that asks for
            ``num_outputs = K`` (or several tasks), or ``(B, 2, D)`` user and item embeddings (two-tower).
        data: a set-up :class:`~easyrec.data.TabularData`.
        optimizer: a torch optimizer over the model's parameters, or a GroupedOptimizer.
        loss: a :class:`~easyrec.losses.base.Loss` (any other callable ``(logits, labels, weights)`` is wrapped in
            one); a loss whose forward also takes ``sessions`` gets the batch's session ids. Its heads (task, label
            column, ``scores``) decide what is evaluated and how.
        output_dir: the run directory; checkpoints go to ``output_dir/checkpoints/``.
        logger: where metrics go (MLflow, or nowhere).
        early_stopping: asked after each evaluation and each step whether to stop.
        distributed: the process layout (:class:`~easyrec.distributed.SingleProcess`, or
            :class:`~easyrec.distributed.DDP` workers, already started): each worker trains on its shard of every
            step's rows, gradients are averaged over workers, evaluation covers the whole eval split, every worker
            stops at the same step; only the main process writes files and logs metrics.
        lr_schedulers: step-based schedulers, stepped after every optimizer step.
        gradients: clipping, multipliers, noise and the non-finite check, prepared on ``model``
            (default: only the check, skipping non-finite steps).
        metrics: which metrics each task gets (default: :class:`~easyrec.metrics.EvalMetrics`'s).
        max_epochs: passes over the training split (0: no epoch limit, ``max_steps`` must be set).
        max_steps: optimizer steps, whichever limit comes first (None: no step limit).
        eval_every_n_steps: evaluate every N steps; always at the end. With neither this nor
            ``eval_every_n_seconds``: at the end of each epoch.
        eval_every_n_seconds: evaluate when N seconds of training have passed since the last evaluation
            (EasyRec's ``throttle_secs``; the main process's clock decides, for every worker).
        eval_max_rows: evaluate on the first N rows of the eval split (None: all of them), as EasyRec's
            ``eval_config.num_examples``; every worker evaluates its share of the same rows.
        log_every_n_steps: interval of ``train/loss``, ``train/lr`` (and ``train/lr/<group>``),
            ``train/grad_norm``, ``train/skipped_steps``, ``train/samples_per_s`` and, when the data streams,
            ``data/wait_fraction`` (the share of the interval spent waiting for the next step's batches).
        train_metrics: running metrics of the training forward's outputs over each logging interval, logged as
            ``train/<metric>`` (EasyRec's eval_online; see :class:`~easyrec.metrics.running.TrainingMetrics`).
        checkpoint_every_n_steps: write ``checkpoints/step-<step>.pt`` every N steps (None: only at the end).
        checkpoint_every_n_seconds: ... and/or every N seconds of training.
        checkpoint_every_epoch: also write a step checkpoint at the end of every epoch.
        keep_last_n: step checkpoints kept (the oldest are deleted); ``checkpoints/best.pt`` is kept apart.
        keep_best_n: also keep the N best evaluations' weights by ``monitor`` as ``checkpoints/best-<step>.pt``
            (zero-padded: the names sort by step), beside ``best.pt``, which stays the best (None: best.pt only).
        monitor: the eval metric that picks the best weights (None: no best checkpoint).
        monitor_mode: ``max`` if larger is better, ``min`` if smaller is.
        restore_best: at the end, load the best weights (by ``monitor``), evaluate them and return their metrics.
        progress_bar: show a rich progress bar when the terminal is interactive.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        precision: ``"fp32"``, or ``"bf16"``: the training forward pass runs under bfloat16 autocast (matrix
            products in bf16, on AMX or tensor cores where the machine has them); parameters, optimizer state, the
            loss and evaluation stay fp32. On a device without native bf16 (:func:`native_bf16`) software emulates
            it, many times slower (18x on an AVX2 CPU): ``"bf16"`` then warns and trains in fp32, ``"bf16_force"``
            uses bf16 anyway; ``"auto"``: bf16 where native, else fp32. ``"fp16"`` (CUDA only: a ConfigError
            on the CPU): float16 autocast with dynamic loss scaling (:class:`~easyrec.loss_scaling.LossScale`),
            for GPUs without bf16. :attr:`precision` is the one used.
        ema: ``{"decay": d}``: an exponential moving average of the dense weights (:mod:`easyrec.ema`), updated
            after every applied step; evaluation (``eval/*``; the raw weights' as ``eval/raw/*``), ``best.pt``
            and export use it (None or ``decay: None``: off).
        data_on_device: move the training split to the device once, so that each step gathers its rows there
            instead of copying them from the host: ``True``, ``False``, or ``"auto"`` (on a GPU whose free memory
            is more than twice the split's size).
        config: the resolved run config, kept in every checkpoint (for resume checks and ``easyrec evaluate``).

    A checkpoint holds everything an exact resume needs (see :mod:`easyrec.checkpoints`), the data's position in
    the epoch included (:meth:`TabularData.position`); :meth:`load_state_dict` restores it, and :meth:`fit` then
    continues from the same step, epoch and batch as if never stopped. SIGINT and
    SIGTERM stop training at the next step boundary with a checkpoint (a second Ctrl-C quits at once).

    The Trainer changes nothing process-wide: the run sets torch's threads and sparse checks
    (:func:`configure_process`) before building it.
    """

    @checked(across=_one_limit)
    def __init__(
        self,
        model: nn.Module,
        data: TabularData,
        optimizer: torch.optim.Optimizer | GroupedOptimizer,
        loss: Loss | Callable[..., torch.Tensor],
        output_dir: str | Path,
        logger: Logger | None = None,
        early_stopping: EarlyStopping | None = None,
        distributed: SingleProcess | None = None,
        lr_schedulers: Sequence[LRScheduler] = (),
        gradients: GradientTreatment | None = None,
        metrics: EvalMetrics | None = None,
        max_epochs: NonNegativeInt = 1,
        max_steps: PositiveInt | None = None,
        eval_every_n_steps: PositiveInt | None = None,
        eval_every_n_seconds: Positive | None = None,
        eval_max_rows: PositiveInt | None = None,
        log_every_n_steps: PositiveInt = 50,
        train_metrics: Sequence[TrainMetric] = (),
        checkpoint_every_n_steps: PositiveInt | None = None,
        checkpoint_every_n_seconds: Positive | None = None,
        checkpoint_every_epoch: bool = False,
        keep_last_n: Annotated[int, Ge(1)] = 3,
        keep_best_n: PositiveInt | None = None,
        monitor: str | None = None,
        monitor_mode: Literal["max", "min"] = "max",
        restore_best: bool = True,
        progress_bar: bool = True,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        precision: Precision = "fp32",
        data_on_device: Literal["auto", True, False] = "auto",
        ema: EMASettings | Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.distributed = distributed or SingleProcess()
        self.device = self.distributed.device(device)
        self.model = model.to(self.device)
        # the modules that keep a penalty of their training forward (FieldEmbedding, FieldEmbeddingCollection)
        self._regularized = [m for m in self.model.modules() if hasattr(m, "take_penalty") and getattr(m, "l2", 0) > 0]
        # model.l2_regularization: on the weights, once per step
        self._kernel_penalty = KernelPenalty.of(self.model, l2_regularization(self.model))
        self.ddp_model = self.distributed.wrap(self.model)  # trains; self.model evaluates and is saved
        self.precision = used_precision(precision, self.device)
        self.autocast_dtype = AUTOCAST[self.precision]
        self.loss_scale = LossScale(enabled=self.precision == "fp16")
        self.ema = average_of(model, ema, self.distributed)
        self.data, self.optimizer, self.loss = data, optimizer, Loss.of(loss).to(self.device)
        if data.streams and data_on_device is True:
            raise ConfigError(
                "trainer.data_on_device=true: the training split is read as a stream (data.streaming), never whole in "
                "memory; set trainer.data_on_device=false or data.streaming=false"
            )
        if not data.streams and (
            data_on_device is True or (data_on_device == "auto" and _fits_on(self.device, data.train))
        ):
            try:
                data.train_to(self.device)
            except torch.OutOfMemoryError as error:
                setting = "true" if data_on_device is True else data_on_device
                raise ConfigError(
                    f"trainer.data_on_device={setting}: the training split ({data.train.nbytes / 2**30:.2f} "
                    f"GiB) does not fit in the memory of {self.device}; set trainer.data_on_device=false"
                ) from error
        self._loss_takes_sessions = self.loss.takes_sessions
        self.metrics = metrics or EvalMetrics()
        self.heads = self.loss.heads(data.spec.label_names)
        self.train_metrics = (
            TrainingMetrics(train_metrics, self.heads, data.spec.label_names, self.metrics.top_k)
            if train_metrics
            else None
        )
        self.output_dir = Path(output_dir)
        self.logger = logger or NullLogger()
        self.early_stopping = early_stopping or NeverStop()
        self.lr_schedulers = list(lr_schedulers)
        if gradients is None:
            gradients = GradientTreatment()
            gradients.prepare(model)
        self.gradients = gradients
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.eval_every_n_steps, self.log_every_n_steps = eval_every_n_steps, log_every_n_steps
        self.eval_every_n_seconds, self.eval_max_rows = eval_every_n_seconds, eval_max_rows
        self.checkpoint_every_epoch = checkpoint_every_epoch
        self.checkpoints = Checkpoints(
            self.output_dir / "checkpoints",
            keep_last_n,
            self.distributed,
            _tables(model, self.distributed),
            keep_best_n=keep_best_n,
        )
        self.checkpoint_every_n_steps, self.checkpoint_every_n_seconds = (
            checkpoint_every_n_steps,
            checkpoint_every_n_seconds,
        )
        self.monitor, self.monitor_mode, self.restore_best = monitor, monitor_mode, restore_best
        self.config = dict(config or {})
        self.reporter = TrainingReport(log, show_bar=progress_bar and self.distributed.is_main)
        self.stops = StopRequests(self.early_stopping, self.distributed, max_epochs, max_steps)
        self.step = 0
        self.epoch = 0
        self.position: dict[str, Any] | None = None  # the data's position in the current epoch (None: its start)
        self.rows = 0  # rows trained on by all workers in the whole run (``train/rows``), carried over a resume
        self.eval_metrics: dict[str, float] = {}
        self.history: dict[int, dict[str, float]] = {}  # eval metrics by step
        self.best: dict[str, Any] | None = None  # {"value", "step", "metrics"} of the best evaluation by monitor
        self.last_eval_step: int | None = None
        self.run_id: str | None = None  # the tracked run, kept in checkpoints so that a resume continues it
        # what a checkpoint keeps, each under its key, besides the trainer's own state (see state_dict)
        self.parts: dict[str, Stateful] = {
            "model": self.model,
            "optimizer": self.optimizer,
            "loss": self.loss,
            "lr_schedulers": EachOf(self.lr_schedulers),
            "rng": RandomState(),
            "gradients": self.gradients,
            "early_stopping": self.early_stopping,
        }
        # only when on: a checkpoint written without them still resumes a run without them
        self.parts |= {"ema": self.ema} if self.ema else {}
        self.parts |= {"loss_scale": self.loss_scale} if self.loss_scale.enabled else {}
        self._last_checkpoint = self._last_eval = time.monotonic()
        self._checkpointed_step: int | None = None  # the step of this process's last checkpoint
        self.eval_seconds = 0.0  # spent evaluating inside the training loop of this process
        if keep_best_n and monitor is None:
            raise ConfigError(f"trainer.keep_best_n={keep_best_n}: needs trainer.monitor (the metric that ranks them)")
        names = self.metric_names()
        self.early_stopping.check_metrics(names)
        if monitor is not None and monitor not in names:
            raise ConfigError(f"trainer.monitor={monitor}: no such metric; the metrics are: {', '.join(names)}")

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Train to the epoch/step limit or an early stop; return the final eval metrics (those of the best
        weights with ``restore_best``). After :meth:`load_state_dict`, continue where the checkpoint left off."""
        total_steps = self._planned_steps()
        resumed = f", resuming at step {self.step}" if self.step else ""
        # a stream's epoch ends when its pieces run out: its steps are counted from their rows, or estimated
        about, estimated = ("about ", "; steps per epoch estimated from the pieces") if self.data.streams else ("", "")
        log.info("training for %s%s (%s%s)%s", about, plural(total_steps, "step"), self._limits(), estimated, resumed)
        waiting = _Waiting()
        regularized = bool(self._regularized) or self._kernel_penalty is not None
        window = _LogWindow(self.device, waiting if self.data.streams else None, regularized, self.train_metrics)
        train_start, rows_trained = time.perf_counter(), 0
        self._last_checkpoint = self._last_eval = time.monotonic()
        workers = self.distributed
        with self.stops.catching_signals(), self.reporter.progress(total_steps) as advance:
            while self.stops.why(self.step, self.epoch) is None:
                steps = self.data.train_steps(self.epoch, workers, self.position)
                with contextlib.closing(steps):  # a stream's loader workers stop when training stops mid-epoch
                    for step in waiting.over(steps):
                        window.add(*self._train_step(step), step.rows)
                        rows_trained += step.rows
                        self.step += 1
                        self.rows += step.rows
                        self.position = self.data.position()
                        train = None
                        if self.step % self.log_every_n_steps == 0 or self.step == total_steps:
                            train = {**window.close(workers), **self._learning_rates(), **self._loss_components()}
                            train["train/skipped_steps"] = float(self.gradients.skipped_steps)
                            train |= self.loss_scale.log_values()
                            self.logger.log_metrics(train, self.step)
                        advance(self.step, step.rows, self.optimizer.param_groups[0]["lr"], train)
                        if self._evaluation_due():
                            self._evaluate_and_track()
                        self.stops.after_step(self.step, train)
                        self._checkpoint_if_due()
                        if self.stops.why(self.step, self.epoch) is not None:
                            break
                    else:  # the epoch ran out
                        self.epoch += 1
                        self.position = None
                        if self.stops.why(self.step, self.epoch) is None:  # not the last: the end follows
                            self._end_epoch()
        if self.last_eval_step != self.step:
            self._evaluate_and_track()  # no step follows: nothing to stop
        seconds = time.perf_counter() - train_start
        summary = {
            "train/seconds": seconds,  # training and its evaluations, the final one included
            "train/eval_seconds": self.eval_seconds,  # those evaluations (not a re-evaluation of the best weights)
            # the training loop's throughput: rows of this process's steps (over all workers) per second spent
            # outside evaluation (checkpoints and logging included)
            "train/loop_samples_per_s": rows_trained / max(seconds - self.eval_seconds, 1e-9),
            "train/steps": float(self.step),
            "train/rows": float(self.rows),  # by all workers in the whole run, the attempts before a resume too
        }
        if self.data.streams:  # the share of the loop outside evaluation spent waiting for the next step's batches
            summary["data/wait_fraction"] = _mean(workers, waiting.seconds / max(seconds - self.eval_seconds, 1e-9))
        if self.data.streams or self.data.skipped_pieces:  # as the main process's data counts them
            summary["data/skipped_pieces"] = float(self.data.skipped_pieces)
        self.logger.log_metrics(summary, self.step)
        if self.stops.reason:
            self.logger.set_tags({"easyrec.stop_reason": self.stops.reason})
        self.save_checkpoint()
        final = self._restore_best()
        self._report({**final, **summary})
        return final

    def _evaluation_due(self) -> bool:
        """Whether to evaluate after this step: every ``eval_every_n_steps``, or ``eval_every_n_seconds`` after the
        last evaluation by the main process's clock (every worker evaluates at the same step)."""
        by_steps = self.eval_every_n_steps and self.step % self.eval_every_n_steps == 0
        by_time = self.eval_every_n_seconds and self.distributed.broadcast(
            time.monotonic() - self._last_eval >= self.eval_every_n_seconds
        )
        return bool(by_steps or by_time)

    def _end_epoch(self) -> None:
        """At the end of an epoch that is not the last: evaluate (unless a step or time schedule does), write a
        checkpoint with ``checkpoint_every_epoch`` (unless one was just written)."""
        if not (self.eval_every_n_steps or self.eval_every_n_seconds):
            self._evaluate_and_track()
            self.stops.settle()
            if self.stops.signal:
                self._interrupt()
        if self.checkpoint_every_epoch and self._checkpointed_step != self.step:
            self.save_checkpoint()

    def _train_step(self, step: TrainStep) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step on this worker's micro-batches of ``step``; returns this worker's part of the step's
        mean loss and of its regularization penalty (the parts sum to them over the workers), and the gradient norm
        before clipping.

        Each micro-batch's mean loss is weighted by its share of the step's rows (times the number of workers,
        which DDP's gradient average divides out), so the gradient is that of the mean loss over the whole step,
        however its rows are split over workers and micro-batches. A micro-batch of 0 rows (share 0: a worker whose
        pieces ran out) runs too, with a zero loss, so that DDP's all-reduce happens on every worker. Penalties of
        the model's modules (such as ``model.embedding_regularization``) are sums over rows, so the step's is the
        sum of its micro-batches'; ``model.l2_regularization``'s is one per step, shared like the loss.
        """
        self.ddp_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        part = torch.zeros((), device=self.device)
        penalty = torch.zeros((), device=self.device)
        last = len(step.batches) - 1
        for k, (batch, share) in enumerate(zip(step.batches, step.shares, strict=True)):
            batch = batch.to(self.device)
            # gradients are all-reduced in the backward of the last micro-batch only
            with self.distributed.no_sync(self.ddp_model) if k < last else contextlib.nullcontext():
                with torch.autocast(self.device.type, self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    logits = self.ddp_model(*batch.inputs)
                if len(batch):
                    loss = self._loss(logits.float(), batch)
                    if self.train_metrics is not None:
                        self.train_metrics.add(logits, batch.labels)
                else:  # a zero that reaches every parameter the forward used: their gradients exist, and are 0
                    loss = logits.float().sum()
                objective = loss * share
                for module in self._regularized:  # penalties sum over the rows: their share is 1
                    if (term := module.take_penalty()) is not None:
                        objective = objective + term
                        penalty += term.detach()
                if self._kernel_penalty is not None:  # one per step: each micro-batch adds its share
                    term = self._kernel_penalty() * share
                    objective = objective + term
                    penalty += term.detach()
                self.loss_scale.backward(objective * self.distributed.world_size)
            part += loss.detach() * share
        if not self.loss_scale.unscaled(self.optimizer):  # fp16 overflow: a smaller scale, and the step skipped
            self.loss_scale.skip()
            report = GradientReport(math.nan, apply=False)
        else:
            report = self.gradients.apply(self.step + 1)
            if report.apply:
                self.loss_scale.step(self.optimizer)
                if self.ema:
                    self.ema.update()
            else:
                log.warning("step %d: non-finite gradient norm, step skipped", self.step + 1)
        for scheduler in self.lr_schedulers:
            scheduler.step()
        return part, penalty, report.norm

    def _loss(self, logits: torch.Tensor, batch) -> torch.Tensor:
        if self._loss_takes_sessions:
            return self.loss(logits, batch.labels, batch.weights, sessions=batch.sessions)
        return self.loss(logits, batch.labels, batch.weights)

    def _checkpoint_if_due(self) -> None:
        """Write a step checkpoint when one is due; when a signal asked training to stop, :meth:`_interrupt`."""
        if self.stops.signal:
            self._interrupt()
        by_steps = self.checkpoint_every_n_steps and self.step % self.checkpoint_every_n_steps == 0
        # the main process's clock decides: every worker writes its shards of sharded tables at the same step
        by_time = self.checkpoint_every_n_seconds and self.distributed.broadcast(
            time.monotonic() - self._last_checkpoint >= self.checkpoint_every_n_seconds
        )
        if by_steps or by_time:
            self.save_checkpoint()

    def _interrupt(self) -> None:
        """Stop at this step boundary, as a signal asked: write a checkpoint, then raise Interrupted."""
        self.save_checkpoint()
        number, name = self.stops.signal
        log.warning("%s: stopped at step %d; resume with trainer.resume=true", name, self.step)
        raise Interrupted(number, name)

    def _loss_components(self) -> dict[str, float]:
        """``train/loss/<name>`` (and learned weights) of the last step, for losses made of several."""
        return self.loss.log_values()

    def _learning_rates(self) -> dict[str, float]:
        """``train/lr`` (the first param group's) and, with named groups, ``train/lr/<group>`` for each."""
        groups = self.optimizer.param_groups
        rates = {"train/lr": groups[0]["lr"]}
        rates.update({f"train/lr/{g['group']}": g["lr"] for g in groups if "group" in g})
        return rates

    @property
    def rows_in_epoch(self) -> int:
        """Rows of the current epoch already trained on, by all workers (the data's position counts them)."""
        return int((self.position or {}).get("rows_in_epoch", 0))

    @property
    def stop_reason(self) -> str | None:
        """Why the early-stopping rule ended training (None: it did not)."""
        return self.stops.reason

    # ------------------------------------------------------------------ evaluation

    def metric_names(self) -> list[str]:
        """The keys :meth:`evaluate` returns; with ``ema``, the raw weights' too (``eval/raw/auc``, ...)."""
        names = self.metrics.names(self.heads, self.data, self.loss)
        return names + [raw_name(name) for name in names] if self.ema else names

    @torch.no_grad()  # not inference_mode: a sharded model's lookups need autograd keys (see evaluate_model)
    def evaluate(self) -> dict[str, float]:
        """Eval metrics over the whole eval split, chosen by each head's task (see
        :class:`~easyrec.metrics.EvalMetrics`): ``eval/loss`` (the training loss), ``eval/auc``, ``eval/logloss``,
        ``eval/gauc``, ... for one loss, ``eval/<task>/...`` for each task of a multi-task loss. Each worker predicts
        its share of the eval batches; the predictions are gathered, and every worker computes the same metrics."""
        workers = self.distributed
        evaluation = self.metrics.evaluation(self.heads, self.data, self.loss)
        batches = self.data.eval_batches(workers, max_rows=self.eval_max_rows)
        return evaluate_model(self.model, batches, evaluation, self.device, workers)

    def _evaluate_and_track(self) -> None:
        """Evaluate, log, ask the early-stopping rule (:meth:`StopRequests.after_evaluation`), track the best."""
        start = time.perf_counter()
        metrics = self.eval_metrics = self.ema.evaluated(self.evaluate) if self.ema else self.evaluate()
        self.eval_seconds += time.perf_counter() - start
        self._last_eval = time.monotonic()
        self.last_eval_step = self.step
        self.history[self.step] = dict(metrics)
        self.logger.log_metrics(metrics, self.step)
        log.info(
            "step %d: %s",
            self.step,
            ", ".join(f"{k} {v:.5f}" for k, v in metrics.items() if math.isfinite(v)),
        )
        self.stops.after_evaluation(metrics, self.step)
        self._track_best(metrics)

    def _track_best(self, metrics: dict[str, float]) -> None:
        """Keep ``checkpoints/best.pt`` at the best evaluation so far by ``monitor``."""
        if self.monitor is None:
            return
        value = metrics[self.monitor]
        if math.isnan(value):
            return
        better = self.best is None or (
            value > self.best["value"] if self.monitor_mode == "max" else value < self.best["value"]
        )
        if better:
            self.best = {"value": value, "step": self.step, "metrics": dict(metrics)}
        kept = best_steps(self.history, self.monitor, self.monitor_mode, self.checkpoints.keep_best_n)
        if (better or self.step in kept) and self.checkpoints.takes_part:
            # the weights evaluated (with ema: the averaged ones) and what describes them, not the optimizer
            # state: half the size, written often
            with self.ema.swapped_in() if self.ema else contextlib.nullcontext():
                state = {**self.state_dict(), "optimizer": None, "lr_schedulers": None, "kind": "weights"}
                state |= {"ema": None} if self.ema else {}
                if better:
                    self.checkpoints.save_best(state)
                if self.step in kept:
                    self.checkpoints.save_ranked(state, self.step, kept)

    def _restore_best(self) -> dict[str, float]:
        """With ``restore_best``, load the best weights, evaluate them and return their metrics; else the last."""
        if not self.restore_best or self.best is None or self.best["step"] == self.last_eval_step:
            return self.eval_metrics
        self.checkpoints.load_best(self.model)  # every worker evaluates its share with them
        # with ema, best.pt holds the averaged weights: the raw ones' metrics are those of the best evaluation
        metrics = {**self.best["metrics"], **self.evaluate()} if self.ema else self.evaluate()
        log.info(
            "restored the best weights (step %d, %s %.6g): %s",
            self.best["step"],
            self.monitor,
            self.best["value"],
            ", ".join(f"{k} {v:.5f}" for k, v in metrics.items() if math.isfinite(v)),
        )
        self.logger.log_metrics(
            {f"best/{k}": v for k, v in metrics.items()} | {"best/step": self.best["step"]}, self.step
        )
        self.logger.set_tags({"easyrec.best_step": str(self.best["step"])})
        return metrics

    # ------------------------------------------------------------------ checkpoint and reporting

    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs (plain types and tensors: safe to load with ``weights_only``): each of
        :attr:`parts` under its key, the trainer's own state (its position in the data, evaluations, stop reason
        and run id), and what describes the run to ``easyrec evaluate``, ``predict``, ``export`` and
        ``trainer.init_from`` (its data encoding, input sizes and config; a resume rebuilds those)."""
        return {
            "format": FORMAT,
            **{key: part.state_dict() for key, part in self.parts.items()},
            "step": self.step,
            "epoch": self.epoch,
            "rows_in_epoch": self.rows_in_epoch,
            "position": self.position,
            "rows": self.rows,
            "stop_reason": self.stops.reason,
            "metrics": dict(self.eval_metrics),
            "last_eval_step": self.last_eval_step,
            "history": {step: dict(metrics) for step, metrics in self.history.items()},
            "best": self.best,
            "run": {"id": self.run_id},
            "data": self.data.state_dict(),
            "input_spec": {"cardinalities": list(self.data.input_spec.table_rows)},  # rows per block
            "config": self.config,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (from a checkpoint of the same model, data and optimizer). A checkpoint of
        sharded tables (read with ``load_checkpoint(..., gather=False)``) is read by every worker: its own rows."""
        if "sharded" in state:
            state = read_shards(state, self.state_dict())
        for key, part in self.parts.items():
            part.load_state_dict(state[key])
        self.step, self.epoch = state["step"], state["epoch"]
        # a checkpoint from before streaming kept the epoch's position as its rows only, and not the run's rows
        rows_in_epoch = state["rows_in_epoch"]
        self.position = state.get("position", {"rows_in_epoch": rows_in_epoch} if rows_in_epoch else None)
        self.rows = state["rows"] if "rows" in state else self.epoch * len(self.data.train) + rows_in_epoch
        self.stops.reason = state["stop_reason"]
        self.eval_metrics, self.last_eval_step = dict(state["metrics"]), state["last_eval_step"]
        self.history = {int(step): dict(metrics) for step, metrics in state["history"].items()}
        self.best = state["best"]
        self.run_id = state["run"]["id"]

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-<step>.pt`` atomically (the main process; with sharded tables every worker writes
        its shards of them too); return its path (None in a process that writes nothing)."""
        if not self.checkpoints.takes_part:
            return None
        path = self.checkpoints.save(self.state_dict(), self.step)
        self._last_checkpoint, self._checkpointed_step = time.monotonic(), self.step
        log.info("checkpoint: %s", path)
        return path

    def _planned_steps(self) -> int:
        return planned_steps(self.data, self.distributed, self.max_epochs, self.max_steps)

    def _limits(self) -> str:
        limits = [f"max_epochs={self.max_epochs}"] if self.max_epochs > 0 else []
        limits += [f"max_steps={self.max_steps}"] if self.max_steps else []
        workers = self.distributed
        layout = [f"batch_size={self.data.batch_size}"]
        layout += [f"workers={workers.world_size}"] if workers.world_size > 1 else []
        layout += [f"accumulate_steps={workers.accumulate_steps}"] if workers.accumulate_steps > 1 else []
        return ", ".join(limits + layout + [f"device={self.device}"])

    def _report(self, metrics: dict[str, float]) -> None:
        """Print the final metrics as a table and write them to ``metrics.json`` in the run directory (for scripts
        and benchmarks, whatever the logger)."""
        if not self.distributed.is_main:
            return
        summary = {"step": self.step, "epoch": self.epoch, "precision": self.precision, **metrics}
        write_json(summary, self.output_dir / "metrics.json")
        title = f"easyrec: {plural(self.step, 'step')}, {plural(self.epoch, 'epoch')}"
        self.reporter.results(title, metrics, self.output_dir, self.logger.view_commands())


def configure_process(num_threads: int | None = None) -> None:
    """What a training process sets for itself, before building a :class:`Trainer` (the run does: it is
    process-wide): torch's intra-op threads (``trainer.num_threads``; None: torch's default), and no invariant
    checks of sparse tensors (the sparse embedding gradients are valid by construction)."""
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.sparse.check_sparse_tensor_invariants.disable()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 in hardware: a CUDA GPU from Ampere on, a CPU with AVX512-BF16 or AMX
    (x86) or the BF16 extension (ARM). Elsewhere torch emulates bf16 in software."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))


def used_precision(requested: str, device: torch.device) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"``: what ``trainer.precision=requested`` trains in on ``device``.

    fp16 on the CPU is a ConfigError, not bf16's warning and fp32 (as Lightning refuses ``16-mixed`` there): no CPU
    computes fp16 matrix products faster than fp32, and its reason to exist, a GPU without bf16, is not there."""
    if requested == "fp16":
        if device.type != "cuda":
            raise ConfigError(
                f"trainer.precision=fp16: needs a CUDA GPU, and the device is {device} (fp16 with loss scaling is "
                "for GPUs without bf16); use trainer.precision=bf16 or fp32"
            )
        return requested
    if requested in ("fp32", "bf16_force"):
        return requested.removesuffix("_force")
    if native_bf16(device):
        return "bf16"
    if requested == "bf16":
        missing = "a GPU before Ampere" if device.type == "cuda" else "no AVX512-BF16 or AMX"
        log.warning(
            "trainer.precision=bf16: %s has no native bf16 (%s): emulated bf16 runs many times slower than fp32 "
            "(18x on an AVX2 CPU); training in fp32 instead (trainer.precision=bf16_force: bf16 anyway)",
            device,
            missing,
        )
    return "fp32"


def planned_steps(data: TabularData, workers: SingleProcess, max_epochs: int, max_steps: int | None) -> int:
    """The optimizer steps a run on ``workers`` takes without an early stop: ``max_epochs`` epochs of ``data``'s
    training split, capped at ``max_steps``."""
    steps_per_epoch = data.num_train_steps(workers.world_size, workers.accumulate_steps)
    steps = steps_per_epoch * max_epochs if max_epochs > 0 else max_steps
    return min(steps, max_steps) if max_steps else steps


def _tables(model: nn.Module, workers: SingleProcess) -> dict[str, list[str]]:
    """The table manifest of ``model`` when ``workers`` shard its tables (torchrec is installed then), else none."""
    if not workers.sharded:
        return {}
    from easyrec.modules.embedding_collection import table_manifest

    return table_manifest(model)


def _fits_on(device: torch.device, split: EncodedSplit) -> bool:
    """Whether ``split`` takes under half of ``device``'s free memory (never for the CPU: nothing to gain)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return 2 * split.nbytes < free


class _Waiting:
    """Counts the seconds a loop waits for the next item of its input (:meth:`over`)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def over(self, items: Iterator[Any]) -> Iterator[Any]:
        """``items``, adding the time each took to arrive to :attr:`seconds`."""
        while True:
            start = time.perf_counter()
            item = next(items, _END)
            self.seconds += time.perf_counter() - start
            if item is _END:
                return
            yield item


_END = object()


def _mean(workers: SingleProcess, value: float) -> float:
    """``value`` averaged over ``workers``."""
    return float(workers.sum(torch.tensor(value))) / workers.world_size


class _LogWindow:
    """Loss, penalty, gradient norm, throughput, (for a streamed input, with ``waiting``) the share of time spent
    waiting for the data and (with ``train_metrics``) the running training metrics since the last logging interval
    (sums stay on the device)."""

    def __init__(
        self,
        device: torch.device,
        waiting: _Waiting | None = None,
        regularized: bool = False,
        train_metrics: TrainingMetrics | None = None,
    ) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.penalty_sum = torch.zeros((), device=device) if regularized else None
        self.waiting, self.train_metrics = waiting, train_metrics
        self.norm_sum, self.steps, self.samples, self.start = 0.0, 0, 0, time.perf_counter()
        self.waited_before = 0.0

    def add(self, loss: torch.Tensor, penalty: torch.Tensor, grad_norm: float, samples: int) -> None:
        """Add a step: this worker's part of its mean loss and of its penalty, its gradient norm, and its rows over
        all workers."""
        self.loss_sum += loss
        if self.penalty_sum is not None:
            self.penalty_sum += penalty
        self.norm_sum += grad_norm
        self.steps += 1
        self.samples += samples

    def close(self, workers: SingleProcess) -> dict[str, float]:
        """The window's ``train/loss`` (summed over ``workers``: each adds its part of every step's mean loss),
        ``train/regularization`` (the model's penalties, not in ``train/loss``; only when it has some),
        ``train/grad_norm``, ``train/samples_per_s``, with ``waiting`` ``data/wait_fraction`` (averaged over
        ``workers``) and with ``train_metrics`` ``train/<metric>`` (over the rows of all workers); starts the next
        one."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        metrics = {
            "train/loss": float(workers.sum(self.loss_sum)) / self.steps,
            "train/grad_norm": self.norm_sum / self.steps,
            "train/samples_per_s": self.samples / elapsed,
        }
        self.loss_sum.zero_()
        if self.penalty_sum is not None:
            metrics["train/regularization"] = float(workers.sum(self.penalty_sum)) / self.steps
            self.penalty_sum.zero_()
        if self.waiting is not None:
            metrics["data/wait_fraction"] = _mean(workers, (self.waiting.seconds - self.waited_before) / elapsed)
            self.waited_before = self.waiting.seconds
        if self.train_metrics is not None:
            metrics.update(self.train_metrics.close(workers))
        self.norm_sum, self.steps, self.samples, self.start = 0.0, 0, 0, time.perf_counter()
        return metrics
