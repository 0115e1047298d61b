"""What the run asks of a model, written once: :class:`Model` (ranking) and :class:`MultiTaskModel` (one tower per
task), and :func:`build` / :func:`output_kind` / :func:`l2_regularization`, which read them with the defaults for a
model of the user's own."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol

from torch import Tensor, nn

from easyrec.data.features import InputSpec

#: What a model's ``forward`` gives: ``(B,)`` / ``(B, K)`` logits, or ``(B, 2, D)`` user and item embeddings.
OUTPUT_KINDS = ("logits", "pair_embeddings")


class Model(Protocol):
    """A model: built as ``Model(inputs, num_outputs=K, **options)`` (``num_outputs`` is passed only when the loss
    reads more than one output); ``forward(dense (B, D) float, sparse (B, F) int)`` -> ``(B,)`` when K = 1, else
    ``(B, K)``. ``output_kind`` is one of :data:`OUTPUT_KINDS` (``logits`` when a model does not say).

    Where the data has multi-value or sequence features (``inputs.lists``), the model is called
    ``forward(dense, sparse, lists (B, ΣL) int)`` (see :class:`~easyrec.data.features.InputSpec`); a model whose
    forward takes no third argument is refused for such data (:func:`build`)."""

    output_kind: str

    def __init__(self, inputs: InputSpec, num_outputs: int = 1) -> None: ...

    def __call__(self, dense: Tensor, sparse: Tensor, lists: Tensor | None = None) -> Tensor: ...


class MultiTaskModel(Protocol):
    """A multi-task model: built as ``MultiTaskModel(inputs, task_outputs=(k_1, ..., k_T), **options)``, one tower
    per task of the loss; ``forward(dense, sparse)`` -> ``(B, Σ k_t)`` (``(B,)`` when the sum is 1)."""

    output_kind: str

    def __init__(self, inputs: InputSpec, task_outputs: Sequence[int]) -> None: ...

    def __call__(self, dense: Tensor, sparse: Tensor) -> Tensor: ...


def build(factory: Callable[..., nn.Module], inputs: InputSpec, num_outputs: int, task_outputs: Sequence[int]):
    """``factory(inputs)`` with the outputs a loss reads: ``task_outputs`` for a :class:`MultiTaskModel` (one whose
    constructor takes them), else ``num_outputs`` (passed only when not 1). ValueError for a model that cannot take
    the data's multi-value or sequence features."""
    if "task_outputs" in inspect.signature(factory).parameters:
        model = factory(inputs, task_outputs=tuple(task_outputs))
    else:
        model = factory(inputs, **({"num_outputs": num_outputs} if num_outputs != 1 else {}))
    if inputs.lists and not takes_lists(model):
        first = inputs.lists[0]
        raise ValueError(
            f"{type(model).__name__} cannot take multi_value or sequence features (data.features.{first.kind}: "
            f"{first.name}): its forward(dense, sparse) has no third argument for them"
        )
    return model


def takes_lists(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes a third argument: ``lists``, the ids of the list features."""
    parameters = inspect.signature(model.forward).parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def output_kind(model: nn.Module) -> str:
    """``model.output_kind``; ``logits`` for a model of the user's own that does not say."""
    return getattr(model, "output_kind", "logits")


def l2_regularization(model: nn.Module) -> float:
    """``model.l2_regularization`` (EasyRec's L2 on the kernels of its dense layers: every built-in model has the
    option; :class:`~easyrec.modules.kernel_penalty.KernelPenalty`); 0 for a model of the user's own without it."""
    return float(getattr(model, "l2_regularization", 0.0))
