"""What EasyRec's ``optimize_loss`` does to the gradients between backward and the optimizer step."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from easyrec.config.arguments import NonNegative, Positive, checked
from easyrec.errors import ConfigError, EasyrecError
from easyrec.optim.grouped import EMBEDDINGS, embedding_parameter_names, fused_parameter_names
from easyrec.optim.sparse_rows import coalesced

log = logging.getLogger(__name__)


class NonFiniteGradientError(EasyrecError):
    """A gradient held NaN or infinity and ``non_finite="error"`` was asked for."""


@dataclass
class GradientReport:
    """The global gradient norm of one step (before clipping) and whether the step may be applied."""

    norm: float
    apply: bool


class GradientTreatment:
    """Freezing, multipliers, noise, a finiteness check and clipping, in EasyRec's order.

    After backward, :meth:`apply` does: ``g ← g·m`` for each parameter matched by a multiplier regex;
    ``g ← g + noise_scale·N(0, 1)``; the global norm ``‖g‖₂`` over every gradient (the values of sparse
    gradients, coalesced); a non-finite norm skips the step (``non_finite="skip"``, counted) or raises
    (``"error"``); ``g ← g·clip_norm / max(‖g‖, clip_norm)``; ``g ← clamp(g, −clip_value, clip_value)``.

    Args:
        clip_norm: clip by global norm (None: no clipping).
        clip_value: clip each element to ``[−clip_value, clip_value]`` (None: no clipping).
        multipliers: ``{regex: factor}`` on parameter names; the key ``embeddings`` means every embedding
            table (EasyRec's ``embedding_learning_rate_multiplier``, which is a gradient multiplier).
        noise_scale: standard deviation of Gaussian noise added to every gradient (0: none).
        freeze: regexes of parameter names that are not trained (``requires_grad=False``).
        non_finite: ``"skip"`` or ``"error"``.

    Sharded embedding tables (``distributed=model_parallel``) get none of this: fbgemm updates them inside the
    backward, before :meth:`apply`, and they have no ``.grad``. Multipliers, noise and clipping act on the other
    parameters only, the global norm (``train/grad_norm``) and the non-finite check leave the tables out, and a
    skipped step has already updated them; :meth:`prepare` says so in a warning. A multiplier that matches only
    sharded tables, and a ``freeze`` that matches one, are ConfigErrors.
    """

    @checked
    def __init__(
        self,
        clip_norm: Positive | None = None,
        clip_value: Positive | None = None,
        multipliers: Mapping[str, float] | None = None,
        noise_scale: NonNegative = 0.0,
        freeze: Sequence[str] = (),
        non_finite: Literal["skip", "error"] = "skip",
    ) -> None:
        self.clip_norm, self.clip_value, self.noise_scale = clip_norm, clip_value, noise_scale
        self.multipliers = dict(multipliers or {})
        self.freeze = list(freeze)
        self.non_finite = non_finite
        self.skipped_steps = 0
        self._scaled: list[tuple[nn.Parameter, float]] = []
        self._params: list[nn.Parameter] = []
        self._frozen = False

    def freeze_parameters(self, model: nn.Module) -> None:
        """Freeze the parameters that ``freeze`` matches (``requires_grad=False``). Call before a wrapper that reads
        them, DDP or a sharded model's DistributedModelParallel (which :meth:`prepare` follows); :meth:`prepare`
        calls it when it was not called."""
        names = dict(model.named_parameters())
        for pattern in self.freeze:
            matched = [n for n in names if re.search(pattern, n)]
            if not matched:
                raise ConfigError(f"gradients.freeze: '{pattern}' matches no parameter of {type(model).__name__}")
            for name in matched:
                names[name].requires_grad_(False)
        self._frozen = True

    def prepare(self, model: nn.Module) -> None:
        """Freeze the matched parameters (unless :meth:`freeze_parameters` did) and resolve the multipliers; call
        once, before building optimizers (on a sharded model: after sharding it)."""
        names = dict(model.named_parameters())
        tables = fused_parameter_names(model)
        for pattern in self.freeze:
            if fused := [n for n in names if n in tables and re.search(pattern, n)]:
                raise ConfigError(
                    f"gradients.freeze: '{pattern}' matches the sharded embedding table {fused[0]}, which fbgemm "
                    "updates inside the backward (distributed=model_parallel): it cannot be frozen"
                )
        if not self._frozen:
            self.freeze_parameters(model)
        embeddings = embedding_parameter_names(model) | tables
        for pattern, factor in self.multipliers.items():
            matched = [n for n in names if (n in embeddings if pattern == EMBEDDINGS else re.search(pattern, n))]
            if not matched:
                raise ConfigError(f"gradients.multipliers: '{pattern}' matches no parameter of {type(model).__name__}")
            if set(matched) <= tables:
                raise ConfigError(
                    f"gradients.multipliers: '{pattern}' matches only sharded embedding tables, which fbgemm updates "
                    "inside the backward (distributed=model_parallel): no gradient multiplier reaches them"
                )
            self._scaled += [(names[n], float(factor)) for n in matched if names[n].requires_grad and n not in tables]
        self._params = [p for n, p in names.items() if p.requires_grad and n not in tables]
        if tables:
            log.warning("%s", self._fused_warning(len(tables)))

    def _fused_warning(self, tables: int) -> str:
        configured = [f"{key}={value}" for key, value in vars(self).items() if key in CONFIGURED and value]
        treatments = f" (gradients.{', gradients.'.join(configured)})" if configured else ""
        return (
            f"distributed=model_parallel: fbgemm updates the {tables} sharded embedding tables inside the backward, "
            f"so gradient treatments{treatments} reach the other parameters only, train/grad_norm and the non-finite "
            "check leave the tables out, and a skipped step has already updated them"
        )

    def apply(self, step: int) -> GradientReport:
        """Treat the gradients of the prepared model's parameters in place; ``step`` names the step in errors."""
        last: dict[str, Tensor] = {}  # the ids of the last sparse gradient and their unique rows
        for param in self._params:
            if param.grad is not None and param.grad.is_sparse:
                param.grad = coalesced(param.grad, last)  # a row looked up twice is one gradient row, as torch does
        for param, factor in self._scaled:
            if param.grad is not None:
                param.grad.mul_(factor)
        grads = [p.grad for p in self._params if p.grad is not None]
        if self.noise_scale:
            for grad in grads:
                values = grad._values() if grad.is_sparse else grad
                values.add_(torch.randn_like(values), alpha=self.noise_scale)
        norm = global_norm(grads)
        if not math.isfinite(norm):
            if self.non_finite == "error":
                raise NonFiniteGradientError(
                    f"step {step}: the gradient norm is {norm}; set gradients.non_finite=skip to skip such steps"
                )
            self.skipped_steps += 1
            return GradientReport(norm, apply=False)
        if self.clip_norm is not None and norm > self.clip_norm:
            for grad in grads:
                grad.mul_(self.clip_norm / norm)
        if self.clip_value is not None:
            for grad in grads:
                values = grad._values() if grad.is_sparse else grad
                values.clamp_(-self.clip_value, self.clip_value)
        return GradientReport(norm, apply=True)

    def state_dict(self) -> dict[str, int]:
        """The count of skipped steps, so that ``train/skipped_steps`` goes on counting after a resume."""
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.skipped_steps = state["skipped_steps"]


#: The options that :meth:`GradientTreatment.prepare`'s warning names when they are set.
CONFIGURED = ("clip_norm", "clip_value", "multipliers", "noise_scale")


def global_norm(grads: Sequence[Tensor]) -> float:
    """``sqrt(Σ‖g‖²)`` over dense gradients and the (coalesced) values of sparse ones."""
    tensors = [g._values() if g.is_sparse else g for g in grads]
    return float(torch.nn.utils.get_total_norm(tensors)) if tensors else 0.0
