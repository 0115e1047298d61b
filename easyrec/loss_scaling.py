"""``trainer.precision=fp16``: the loss scaled before backward, so that small fp16 gradients do not flush to zero.

A thin layer over :class:`torch.amp.GradScaler` that fits the trainer's step: backward of the scaled objective,
then :meth:`LossScale.unscaled` (the gradients divided back, in place, before clipping and the other treatments
see them), then the optimizer step or, when they overflowed, a skipped step and a smaller scale. Off (any other
precision), every call is the plain one: the objective as it is, ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


class LossScale:
    """Dynamic loss scaling for fp16 training (``enabled``) on ``device`` (``"cuda"``; ``"cpu"`` for tests), or
    nothing.

    The scale starts at 2**16, halves on every step whose gradients overflow (the step is skipped) and doubles
    after 2000 steps without one (torch's defaults). Its state is checkpointed: a resume goes on with the same
    scale.

    Example::

        scale = LossScale(enabled=True)
        scale.backward(loss)
        if scale.unscaled(optimizer):
            clip(gradients); scale.step(optimizer)
        else:
            scale.skip()
    """

    def __init__(self, enabled: bool, device: str = "cuda", init_scale: float = 2.0**16) -> None:
        self.enabled = enabled
        self.scaler = torch.amp.GradScaler(device, init_scale=init_scale, enabled=enabled)
        self.overflows = 0  # steps skipped because the fp16 gradients overflowed

    def backward(self, objective: torch.Tensor) -> None:
        """Backward of ``objective`` (a scalar) times the scale."""
        self.scaler.scale(objective).backward()

    def unscaled(self, optimizer: Any) -> bool:
        """Divide the gradients of ``optimizer``'s parameters by the scale, in place; False when some overflowed
        (inf or NaN: the step must be skipped with :meth:`skip`)."""
        if not self.enabled:
            return True
        self.scaler.unscale_(optimizer)
        # GradScaler keeps what unscale_ found per optimizer only in this private map (torch 2.x)
        found = self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"]
        return not any(bool(inf.item()) for inf in found.values())

    def step(self, optimizer: Any) -> None:
        """``optimizer.step()``, then the scale's update."""
        self.scaler.step(optimizer)
        self.scaler.update()

    def skip(self) -> None:
        """No step (the gradients overflowed): the scale halves."""
        self.overflows += 1
        self.scaler.update()

    def log_values(self) -> dict[str, float]:
        """``train/loss_scale`` and ``train/overflow_steps`` (fp16 only; empty otherwise)."""
        if not self.enabled:
            return {}
        return {"train/loss_scale": float(self.scaler.get_scale()), "train/overflow_steps": float(self.overflows)}

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict(), "overflows": self.overflows}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scaler.load_state_dict(state["scaler"])
        self.overflows = state["overflows"]
