"""Encoded splits held as contiguous tensors, and the batches sliced from them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from easyrec.data.features import InputSpec


@dataclass
class Batch:
    """One batch of model inputs.

    Attributes:
        dense: ``(B, D) float32`` dense features.
        sparse: ``(B, F) int32`` row of each categorical field in its own table (0 = out of vocabulary).
        labels: ``(B,) float32``, or ``(B, L)`` with L label columns (multi-task); None when predicting.
        weights: ``(B,) float32`` sample weights, or None.
        sessions: ``(B,) int64`` session ids, or None.
        oracle: ``(B, L) float32`` true probabilities of the label columns, in label order (NaN for a label that
            has none), where the data knows them (``data.features.oracle``, synthetic data); else None.
        lists: ``(B, ΣL) int32`` the ids of the multi-value and sequence features, each in its block of columns,
            padded with -1 (see :class:`~easyrec.data.features.InputSpec`); None when the data has none.
    """

    dense: Tensor
    sparse: Tensor
    labels: Tensor | None
    weights: Tensor | None = None
    sessions: Tensor | None = None
    oracle: Tensor | None = None
    lists: Tensor | None = None

    def __len__(self) -> int:
        return self.dense.shape[0]

    @classmethod
    def of_zeros(cls, spec: InputSpec, rows: int, device: torch.device | str | None = None) -> Batch:
        """``rows`` rows of model inputs and no labels: dense 0.0, every categorical field its row 0 (an unknown id,
        or bucket 0), every list feature one id of row 0 (then padding). A probe of a model's output shape, and
        what a worker with no rows runs a sharded model on (``rows=0``)."""
        dense = torch.zeros(rows, spec.num_dense, device=device)
        sparse = torch.zeros(rows, spec.num_fields, dtype=torch.int32, device=device)
        lists = None
        if spec.lists:
            lists = torch.full((rows, spec.list_width), -1, dtype=torch.int32, device=device)
            for field in spec.lists:
                lists[:, field.start] = 0
        return cls(dense, sparse, None, lists=lists)

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        """What the model is called with: ``(dense, sparse)``, and ``lists`` when the data has list features."""
        return (self.dense, self.sparse) if self.lists is None else (self.dense, self.sparse, self.lists)

    def to(self, device: torch.device) -> Batch:
        tensors = (self.dense, self.sparse, self.labels, self.weights, self.sessions, self.oracle, self.lists)
        return Batch(*_moved(tensors, device))

    def head(self, rows: int) -> Batch:
        """The first ``rows`` rows."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{name: None if t is None else t[:rows] for name, t in tensors.items()})

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (a DataLoader's ``pin_memory`` calls this), copied to a GPU
        asynchronously."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{name: None if t is None else t.pin_memory() for name, t in tensors.items()})


def _moved(tensors: tuple[Tensor | None, ...], device: torch.device) -> list[Tensor | None]:
    """``tensors`` on ``device``, None left as None."""
    return [None if t is None else t.to(device, non_blocking=True) for t in tensors]


@dataclass
class TrainStep:
    """One worker's part of one optimizer step.

    Attributes:
        batches: the worker's micro-batches (one, or ``accumulate_steps``), in order.
        shares: each micro-batch's rows as a fraction of the step's rows (over all workers): the weight of its
            mean loss in the step's mean loss.
        rows: the step's rows over all workers.
    """

    batches: list[Batch]
    shares: list[float]
    rows: int


@dataclass
class EncodedSplit:
    """A whole split as tensors with a shared first dimension N; ``source`` names it in errors. A split encoded
    for prediction has no labels (None)."""

    dense: Tensor
    sparse: Tensor
    labels: Tensor | None
    weights: Tensor | None
    source: str
    sessions: Tensor | None = None
    oracle: Tensor | None = None  # (N, L) float32, see Batch
    lists: Tensor | None = None  # (N, ΣL) int32, see Batch

    def __len__(self) -> int:
        return self.dense.shape[0]

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    @property
    def device(self) -> torch.device:
        return self.dense.device

    @property
    def columns(self) -> tuple[Tensor | None, ...]:
        """The split's tensors in :class:`Batch`'s order: dense, sparse, labels, weights, sessions, oracle, lists."""
        return (self.dense, self.sparse, self.labels, self.weights, self.sessions, self.oracle, self.lists)

    @property
    def nbytes(self) -> int:
        """Bytes of all the split's tensors."""
        return sum(t.numel() * t.element_size() for t in self.columns if t is not None)

    def to(self, device: torch.device) -> EncodedSplit:
        """The split with its tensors on ``device`` (batches are then sliced there: no copy per step)."""
        dense, sparse, labels, weights, sessions, oracle, lists = _moved(self.columns, device)
        return EncodedSplit(dense, sparse, labels, weights, self.source, sessions, oracle, lists)

    def batches(self, batch_size: int, order: Tensor | None = None, first: int = 0) -> Iterator[Batch]:
        """Yield batches of ``batch_size`` rows from batch ``first`` on: contiguous slices, or ``order``'s rows."""
        for start in range(first * batch_size, len(self), batch_size):
            yield self.rows(start, min(start + batch_size, len(self)), order)

    def rows(self, start: int, stop: int, order: Tensor | None = None) -> Batch:
        """Rows ``start:stop`` as a batch: a contiguous slice, or those rows of ``order`` (``(N,) int64``, on the
        split's device)."""
        if order is None:
            return Batch(*(None if t is None else t[start:stop] for t in self.columns))
        index = order[start:stop]
        return Batch(*(None if t is None else t.index_select(0, index) for t in self.columns))

    def session_order(self, generator: torch.Generator) -> Tensor:
        """A random order of the rows that keeps each session's rows together: ``(N,) int64``.

        Sessions are shuffled, rows within a session keep their order; a session that does not fit in what is
        left of a batch continues in the next one.
        """
        sessions = self.sessions.cpu()  # the generator is a CPU one
        by_session = torch.sort(sessions, stable=True).indices
        _, counts = torch.unique_consecutive(sessions[by_session], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        shuffled = torch.randperm(len(counts), generator=generator)
        lengths = counts[shuffled]
        # row k of the new order is row (start of its session + its offset within the session) of by_session
        offsets = torch.arange(len(self)) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        return by_session[torch.repeat_interleave(starts[shuffled], lengths) + offsets]

    def first_bad_label(
        self, column: int | None, allowed: tuple[float, ...] | None, value_range: tuple[float, float] | None
    ) -> int | None:
        """Index of the first row whose label (``column`` of ``(N, L)`` labels) is not one of ``allowed`` or lies
        outside the closed ``value_range``; None when every label fits."""
        labels = self.labels if column is None else self.labels[:, column]
        ok = torch.ones_like(labels, dtype=torch.bool)
        if allowed is not None:
            ok = torch.isin(labels, torch.tensor(allowed, dtype=labels.dtype))
        if value_range is not None:
            ok &= (labels >= value_range[0]) & (labels <= value_range[1])
        bad = torch.nonzero(~ok)
        return int(bad[0]) if len(bad) else None
