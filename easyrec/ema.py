"""``trainer.ema``: an exponential moving average of the dense weights, as TorchEasyRec's ``DenseEMA``.

After every applied optimizer step, ``a ← decay·a + (1 − decay)·w`` for each dense parameter ``w`` (the first step
copies ``w``): :class:`torch.optim.swa_utils.AveragedModel` with :func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`.
Evaluation, ``best.pt`` and export use the averaged weights; the raw ones keep training.

Embedding tables are not averaged (they stay raw in the averaged model), as in TorchEasyRec: a step updates only
the rows its batch looked up, and averaging a table touches all of its rows every step (a table of 16M rows of 16
floats is 1 GB, against a few thousand rows that the step itself updates) and doubles its memory. Buffers
(batch-norm running statistics) are averages already and stay as they are.

No torch.distributed here: under ``distributed=ddp`` every worker holds the same weights after each step, so
every worker's average is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import torch
from annotated_types import Interval
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from easyrec.config.arguments import checked
from easyrec.errors import ConfigError
from easyrec.optim.grouped import embedding_parameter_names, fused_parameter_names

#: The prefix of the raw weights' eval metrics when the averaged ones are evaluated: ``eval/raw/auc``.
RAW = "raw/"


@checked
@dataclass
class EMASettings:
    """``trainer.ema``: ``decay`` in (0, 1) turns the average on (None: off, the default)."""

    decay: Annotated[float, Interval(gt=0, lt=1)] | None = None


class WeightAverage:
    """The exponential moving average of ``model``'s dense parameters (those that are not embedding tables).

    Args:
        model: the model being trained (its parameters are read after each step, never changed but by
            :meth:`swapped_in`).
        decay: in (0, 1); the average covers about ``1 / (1 − decay)`` steps (0.999: the last thousand or so).

    Example::

        average = WeightAverage(model, decay=0.99)
        optimizer.step(); average.update()
        with average.swapped_in():
            evaluate(model)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        tables = embedding_parameter_names(model) | fused_parameter_names(model)
        named = {n: p for n, p in model.named_parameters() if n not in tables and p.requires_grad}
        self.decay, self.names = decay, list(named)
        self._live = nn.ParameterList(named.values())
        self._average = AveragedModel(self._live, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
        self._average.requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the average (the first call copies them)."""
        self._average.update_parameters(self._live)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The averaged weights in the model's parameters for the ``with`` block (the raw ones restored after)."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        averaged = list(self._average.module.parameters())
        for live, average in zip(self._live, averaged, strict=True):
            held = live.detach().clone()
            live.copy_(average)
            average.copy_(held)

    def evaluated(self, evaluate: Callable[[], dict[str, float]]) -> dict[str, float]:
        """``evaluate()`` of the averaged weights (``eval/auc``, ...) and of the raw ones (``eval/raw/auc``, ...)."""
        raw = evaluate()
        with self.swapped_in():
            averaged = evaluate()
        return {**averaged, **{raw_name(name): value for name, value in raw.items()}}

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights by parameter name, and how many steps were averaged (0: none yet)."""
        averaged = self._average.module.parameters()
        return {
            "weights": {name: value.detach().clone() for name, value in zip(self.names, averaged, strict=True)},
            "n_averaged": self._average.n_averaged.detach().clone(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        weights = state["weights"]
        if list(weights) != self.names:
            raise ValueError("trainer.ema: the checkpoint's averaged weights are not this model's dense parameters")
        for average, value in zip(self._average.module.parameters(), weights.values(), strict=True):
            average.copy_(value)
        self._average.n_averaged.copy_(state["n_averaged"])


def average_of(
    model: nn.Module, settings: EMASettings | Mapping[str, Any] | None, workers: Any
) -> WeightAverage | None:
    """The :class:`WeightAverage` that ``trainer.ema`` asks for (None: off); a ConfigError under
    ``distributed=model_parallel`` (``workers.sharded``)."""
    settings = check_layout(settings, workers)
    return None if settings is None else WeightAverage(model, settings.decay)


def check_layout(settings: EMASettings | Mapping[str, Any] | None, workers: Any) -> EMASettings | None:
    """``trainer.ema``'s settings when the average is on (None when off); a ConfigError under
    ``distributed=model_parallel`` (``workers.sharded``), which the launcher asks before starting any worker."""
    if isinstance(settings, Mapping):  # as the config gives it
        settings = EMASettings(**settings)
    if settings is None or settings.decay is None:
        return None
    if workers.sharded:
        raise ConfigError(
            f"trainer.ema.decay={settings.decay}: not with distributed=model_parallel (its sharded tables are updated "
            "by fbgemm inside the backward, and the averaged weights are not swapped into the sharded model yet); "
            "use distributed=ddp or trainer.ema.decay=null"
        )
    return settings


def raw_name(name: str) -> str:
    """``eval/auc`` -> ``eval/raw/auc``, ``eval/ctr/auc`` -> ``eval/raw/ctr/auc``."""
    head, _, rest = name.partition("/")
    return f"{head}/{RAW}{rest}"


def averaged_weights(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights to evaluate, predict or export: its ``model`` with the averaged dense weights
    of ``trainer.ema`` in place of the raw ones (a step checkpoint keeps both; ``best.pt`` the averaged ones only)."""
    model = dict(state["model"])
    average = state.get("ema") or {}
    if average and int(average["n_averaged"]) > 0:
        model.update(average["weights"])
    return model
