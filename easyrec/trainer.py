"""The training loop: one class that reads top to bottom."""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from easyrec.data.tabular import TabularData
from easyrec.distributed import SingleProcess
from easyrec.early_stopping import EarlyStopping, NeverStop
from easyrec.errors import ConfigError
from easyrec.loggers import Logger, NullLogger
from easyrec.losses.heads import heads_of
from easyrec.metrics import EvalMetrics
from easyrec.optim.gradients import GradientTreatment
from easyrec.optim.grouped import GroupedOptimizer

log = logging.getLogger(__name__)


class Trainer:
    """Trains ``model`` on ``data`` with ``optimizer`` and ``loss``, evaluates, logs and checkpoints.

    Args:
        model: ``forward(dense (B, D), sparse (B, F)) -> logits (B,)``, ``(B, K)`` for a loss that asks for
            ``num_outputs = K`` (or several tasks), or ``(B, 2, D)`` user and item embeddings (two-tower).
        data: a set-up :class:`~easyrec.data.TabularData`.
        optimizer: a torch optimizer over the model's parameters, or a GroupedOptimizer.
        loss: ``forward(logits, labels (B,) or (B, L), weights (B,) | None) -> scalar``; a loss whose forward
            also takes ``sessions`` gets the batch's session ids. Its heads (:func:`~easyrec.losses.heads.heads_of`:
            task, label column, ``scores``) decide what is evaluated and how.
        output_dir: the run directory; the checkpoint goes to ``output_dir/checkpoints/last.pt``.
        logger: where metrics go (MLflow, or nowhere).
        early_stopping: asked after each evaluation whether to stop.
        distributed: rank and world size; only the main process writes files and prints.
        lr_schedulers: step-based schedulers, stepped after every optimizer step.
        gradients: clipping, multipliers, noise and the non-finite check, prepared on ``model``
            (default: only the check, skipping non-finite steps).
        metrics: which metrics each task gets (default: :class:`~easyrec.metrics.EvalMetrics`'s).
        max_epochs: passes over the training split (0: no epoch limit, ``max_steps`` must be set).
        max_steps: optimizer steps, whichever limit comes first (None: no step limit).
        eval_every_n_steps: evaluate every N steps (None: at the end of each epoch); always at the end.
        log_every_n_steps: interval of ``train/loss``, ``train/lr`` (and ``train/lr/<group>``),
            ``train/grad_norm``, ``train/skipped_steps`` and ``train/samples_per_s``.
        progress_bar: show a rich progress bar when the terminal is interactive.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        num_threads: torch intra-op threads (None: torch's default).
    """

    def __init__(
        self,
        model: nn.Module,
        data: TabularData,
        optimizer: torch.optim.Optimizer | GroupedOptimizer,
        loss: nn.Module,
        output_dir: str | Path,
        logger: Logger | None = None,
        early_stopping: EarlyStopping | None = None,
        distributed: SingleProcess | None = None,
        lr_schedulers: Sequence[LRScheduler] = (),
        gradients: GradientTreatment | None = None,
        metrics: EvalMetrics | None = None,
        max_epochs: int = 1,
        max_steps: int | None = None,
        eval_every_n_steps: int | None = None,
        log_every_n_steps: int = 50,
        progress_bar: bool = True,
        device: str = "auto",
        num_threads: int | None = None,
    ) -> None:
        if max_epochs <= 0 and not max_steps:
            raise ConfigError("trainer.max_epochs=0 and trainer.max_steps unset: set at least one limit")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("trainer.device=cuda: torch finds no CUDA device here (use cpu or auto)")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.model = model.to(self.device)
        is_module = isinstance(loss, nn.Module)  # a plain callable works too
        self.data, self.optimizer, self.loss = data, optimizer, loss.to(self.device) if is_module else loss
        self._loss_takes_sessions = "sessions" in inspect.signature(loss.forward if is_module else loss).parameters
        self.metrics = metrics or EvalMetrics()
        self.heads = heads_of(loss, data.spec.label_names)
        self.output_dir = Path(output_dir)
        self.logger = logger or NullLogger()
        self.early_stopping = early_stopping or NeverStop()
        self.distributed = distributed or SingleProcess()
        self.lr_schedulers = list(lr_schedulers)
        torch.sparse.check_sparse_tensor_invariants.disable()  # sparse embedding gradients are valid by construction
        if gradients is None:
            gradients = GradientTreatment()
            gradients.prepare(model)
        self.gradients = gradients
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.eval_every_n_steps, self.log_every_n_steps = eval_every_n_steps, log_every_n_steps
        self.console = Console(stderr=True)
        self.show_progress = progress_bar and self.distributed.is_main and self.console.is_terminal
        self.step = 0
        self.epoch = 0
        self.stop_reason: str | None = None
        self.eval_metrics: dict[str, float] = {}
        self.last_eval_step: int | None = None
        self.early_stopping.check_metrics(self.metric_names())

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, float]:
        """Train to the epoch/step limit or an early stop; return the final eval metrics."""
        total_steps = self._planned_steps()
        log.info("training for %d steps (%s)", total_steps, self._limits())
        window = _LogWindow(self.device)
        train_start = time.perf_counter()
        with self._progress_bar(total_steps) as advance:
            while not self._done():
                for batch in self.data.train_batches(self.epoch):
                    window.add(*self._train_step(batch.to(self.device)), len(batch))
                    self.step += 1
                    if self.step % self.log_every_n_steps == 0 or self.step == total_steps:
                        train = {**window.close(), **self._learning_rates(), **self._loss_components()}
                        train["train/skipped_steps"] = float(self.gradients.skipped_steps)
                        self.logger.log_metrics(train, self.step)
                        advance(train)
                    if self.eval_every_n_steps and self.step % self.eval_every_n_steps == 0:
                        self._evaluate_and_decide()
                    if self._done():
                        break
                else:  # the epoch ran out
                    self.epoch += 1
                    if not self.eval_every_n_steps and not self._done():
                        self._evaluate_and_decide()
        summary = {"train/seconds": time.perf_counter() - train_start, "train/steps": float(self.step)}
        if self.last_eval_step != self.step:
            self._evaluate_and_decide()
        self.logger.log_metrics(summary, self.step)
        if self.stop_reason:
            self.logger.set_tags({"easyrec.stop_reason": self.stop_reason})
        self.save_checkpoint(self.eval_metrics)
        self._print_summary({**self.eval_metrics, **summary})
        return self.eval_metrics

    def _train_step(self, batch) -> tuple[torch.Tensor, float]:
        """One optimizer step; returns the loss and the gradient norm before clipping."""
        self.model.train()
        logits = self.model(batch.dense, batch.sparse)
        if self._loss_takes_sessions:
            loss = self.loss(logits, batch.labels, batch.weights, sessions=batch.sessions)
        else:
            loss = self.loss(logits, batch.labels, batch.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        report = self.gradients.apply(self.step + 1)
        if report.apply:
            self.optimizer.step()
        else:
            log.warning("step %d: non-finite gradient norm, step skipped", self.step + 1)
        for scheduler in self.lr_schedulers:
            scheduler.step()
        return loss.detach(), report.norm

    def _loss_components(self) -> dict[str, float]:
        """``train/loss/<name>`` (and learned weights) of the last step, for losses made of several."""
        return self.loss.log_values() if hasattr(self.loss, "log_values") else {}

    def _learning_rates(self) -> dict[str, float]:
        """``train/lr`` (the first param group's) and, with named groups, ``train/lr/<group>`` for each."""
        groups = self.optimizer.param_groups
        rates = {"train/lr": groups[0]["lr"]}
        rates.update({f"train/lr/{g['group']}": g["lr"] for g in groups if "group" in g})
        return rates

    def _done(self) -> bool:
        if self.stop_reason is not None:
            return True
        if self.max_steps and self.step >= self.max_steps:
            return True
        return self.max_epochs > 0 and self.epoch >= self.max_epochs

    # ------------------------------------------------------------------ evaluation

    def metric_names(self) -> list[str]:
        """The keys :meth:`evaluate` returns."""
        return self.metrics.names(self.heads, self.data)

    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """Eval metrics over the whole eval split, chosen by each head's task (see
        :class:`~easyrec.metrics.EvalMetrics`): ``eval/auc``, ``eval/logloss``, ``eval/gauc``, ... for one loss,
        ``eval/<task>/...`` for each task of a multi-task loss."""
        self.model.eval()
        evaluation = self.metrics.evaluation(self.heads, self.data)
        for batch in self.data.eval_batches():
            batch = batch.to(self.device)
            evaluation.update(self.model(batch.dense, batch.sparse), batch)
        return evaluation.compute()

    def _evaluate_and_decide(self) -> None:
        """Evaluate, log, and ask the early-stopping rule whether to stop."""
        metrics = self.eval_metrics = self.evaluate()
        self.last_eval_step = self.step
        self.logger.log_metrics(metrics, self.step)
        log.info(
            "step %d: %s",
            self.step,
            ", ".join(f"{k} {v:.5f}" for k, v in metrics.items() if math.isfinite(v)),
        )
        if self.early_stopping.should_stop(metrics, self.step):
            self.stop_reason = self.early_stopping.reason or "early stopping"
            log.info("stopping early: %s", self.stop_reason)

    # ------------------------------------------------------------------ checkpoint and reporting

    def save_checkpoint(self, metrics: dict[str, float]) -> Path | None:
        """Write ``checkpoints/last.pt`` atomically (main process only); return its path."""
        if not self.distributed.is_main:
            return None
        path = self.output_dir / "checkpoints" / "last.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "loss": self.loss.state_dict() if isinstance(self.loss, nn.Module) else {},
            "lr_schedulers": [scheduler.state_dict() for scheduler in self.lr_schedulers],
            "step": self.step,
            "epoch": self.epoch,
            "data": self.data.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "metrics": metrics,
        }
        partial = path.with_suffix(".pt.partial")
        torch.save(state, partial)
        os.replace(partial, path)
        log.info("checkpoint: %s", path)
        return path

    def _planned_steps(self) -> int:
        per_epoch = self.data.num_train_batches()
        steps = per_epoch * self.max_epochs if self.max_epochs > 0 else self.max_steps
        return min(steps, self.max_steps) if self.max_steps else steps

    def _limits(self) -> str:
        limits = [f"max_epochs={self.max_epochs}"] if self.max_epochs > 0 else []
        limits += [f"max_steps={self.max_steps}"] if self.max_steps else []
        return ", ".join(limits + [f"batch_size={self.data.batch_size}", f"device={self.device}"])

    @contextmanager
    def _progress_bar(self, total: int) -> Iterator:
        """Yield ``advance(train_metrics)``, called at each logging interval: it moves the bar, or logs a line."""
        if not self.show_progress:

            def advance_log(train: dict[str, float]) -> None:
                log.info(
                    "step %d/%d: loss %.5f, lr %.3g, %.0f samples/s",
                    self.step,
                    total,
                    train["train/loss"],
                    train["train/lr"],
                    train["train/samples_per_s"],
                )

            yield advance_log
            return
        progress = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.fields[speed]:>8.0f} samples/s  loss {task.fields[loss]:.5f}  lr {task.fields[lr]:.3g}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        task = progress.add_task("train", total=total, speed=0.0, loss=float("nan"), lr=0.0)

        def advance(train: dict[str, float]) -> None:
            progress.update(
                task,
                completed=self.step,
                speed=train["train/samples_per_s"],
                loss=train["train/loss"],
                lr=train["train/lr"],
            )

        with progress:
            yield advance

    def _print_summary(self, metrics: dict[str, float]) -> None:
        if not self.distributed.is_main:
            return
        table = Table(title=f"easyrec: {self.step} steps, {self.epoch} epochs")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in metrics.items():
            table.add_row(key, f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 1e4 else f"{value:.5f}")
        Console().print(table)


class _LogWindow:
    """Loss, gradient norm and throughput since the last logging interval (the loss stays on the device)."""

    def __init__(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), device=device)
        self.norm_sum, self.steps, self.samples, self.start = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: torch.Tensor, grad_norm: float, samples: int) -> None:
        self.loss_sum += loss
        self.norm_sum += grad_norm
        self.steps += 1
        self.samples += samples

    def close(self) -> dict[str, float]:
        """The window's ``train/loss``, ``train/grad_norm`` and ``train/samples_per_s``; starts the next one."""
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        metrics = {
            "train/loss": float(self.loss_sum) / self.steps,
            "train/grad_norm": self.norm_sum / self.steps,
            "train/samples_per_s": self.samples / elapsed,
        }
        self.loss_sum.zero_()
        self.norm_sum, self.steps, self.samples, self.start = 0.0, 0, 0, time.perf_counter()
        return metrics
