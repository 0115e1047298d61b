"""Feature specs and the encoder that turns table columns into model inputs.

The encoder is fitted on the training split only (vocabularies, standardisation statistics) and then
encodes any split into contiguous tensors, vectorised with pyarrow and numpy. A fit computes mergeable statistics
(:class:`FitStatistics`) of a table, or of each piece of a table too large for memory, read in parallel and merged
(:meth:`FeatureEncoder.fit_pieces`): both give the same encoding.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from annotated_types import Ge, Gt, MinLen

from easyrec.config.arguments import PositiveInt, checked
from easyrec.console import PiecesProgress, plural
from easyrec.data.hashing import hash_buckets
from easyrec.data.pieces import Piece, PieceReader
from easyrec.errors import DataError

if TYPE_CHECKING:
    from easyrec.data.batches import EncodedSplit

log = logging.getLogger(__name__)

#: the ``keep`` of a fit that keeps nothing (the form of :meth:`FeatureEncoder.state_dict`)
NOTHING_KEPT: Mapping[str, Mapping[str, Any]] = {"vocabularies": {}, "mean": {}, "std": {}}
#: a column's partial id counts are merged into one table when this many have gathered
COMPACT_EVERY = 8

NUMBER_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(nan|inf|infinity)\s*$"


Names = Annotated[list[str], MinLen(1)]


@checked
@dataclass
class DenseFeatures:
    """Float columns that share a transform.

    ``transform="log1p"`` maps x to sign(x)·log(1+|x|); ``standardize`` then subtracts the training
    mean and divides by the training std. Empty cells (and NaN, as pandas writes them) take ``fill_value`` before
    the transform; infinite values, and those beyond float32's range, are the encoder's ``non_finite`` business.
    """

    names: Names
    transform: Literal["none", "log1p"] = "none"
    standardize: bool = False
    fill_value: float = 0.0


@checked
@dataclass
class CategoricalFeatures:
    """Id columns that share an encoding.

    ``encoding="vocab"``: ids seen at least ``min_count`` times in the training split (the
    ``max_vocab_size`` most frequent) get rows 1..V; row 0 is for every other id and for empty cells. A run that
    starts from another's (``trainer.init_from``) keeps that run's ids in their rows and appends the new ids of its
    own training split, most frequent first, while the vocabulary has fewer than ``max_vocab_size`` ids.
    ``encoding="hash"``: id -> hash(id) mod ``num_buckets`` (the same rows in every run).
    ``embedding_dim``: the width of these fields' embeddings, for the models that allow a width per field (those
    that concatenate embeddings: Wide&Deep, MMoE, ESMM, PLE, DSSM, DIN); None: the model's ``embedding_dim``.
    """

    names: Names
    encoding: Literal["vocab", "hash"] = "vocab"
    num_buckets: Annotated[int, Gt(1)] | None = None
    min_count: Annotated[int, Ge(1)] = 1
    max_vocab_size: PositiveInt | None = None
    embedding_dim: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.encoding == "hash" and not self.num_buckets:
            raise ValueError(f"num_buckets: required with encoding=hash (features {_shown(self.names)})")


@checked
@dataclass
class ListFeatures:
    """Columns that hold several ids per row: ``data.features.multi_value`` (EasyRec's TagFeature: a bag of ids,
    pooled) and ``data.features.sequence`` (EasyRec's SequenceFeature: an ordered history, such as the items a user
    clicked, which attention models read id by id).

    A cell is a string of ids joined by ``separator`` (``"Action|Comedy"``, as CSV files hold them) or a list
    (a Parquet list column); an empty cell or an empty list has no id. The first ``max_length`` ids of a cell are
    kept (write histories most recent first). Ids are encoded as a categorical feature's are (``encoding``,
    ``num_buckets``, ``min_count``, ``max_vocab_size``: row 0 is an unknown id), and the models that want one
    vector per field pool each row's embeddings by ``combiner`` (``sum`` or ``mean``; a row with no id gives
    zeros).

    ``embedding_name``: the categorical feature whose embedding table, and encoding, these features share (a
    history of items and the target item: ``embedding_name: item``); its ids are then counted into that feature's
    vocabulary, and ``encoding``, ``num_buckets``, ``min_count``, ``max_vocab_size`` and ``embedding_dim`` are
    that feature's (setting them here is an error). ``embedding_dim``: as for :class:`CategoricalFeatures`.
    """

    names: Names
    separator: Annotated[str, MinLen(1)] = "|"
    max_length: PositiveInt = 20
    combiner: Literal["sum", "mean"] = "mean"
    encoding: Literal["vocab", "hash"] = "vocab"
    num_buckets: Annotated[int, Gt(1)] | None = None
    min_count: Annotated[int, Ge(1)] = 1
    max_vocab_size: PositiveInt | None = None
    embedding_name: str | None = None
    embedding_dim: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.embedding_name is not None:
            own = [key for key in ("num_buckets", "max_vocab_size", "embedding_dim") if getattr(self, key) is not None]
            own += [key for key, default in (("encoding", "vocab"), ("min_count", 1)) if getattr(self, key) != default]
            if own:
                raise ValueError(
                    f"{own[0]}: features {_shown(self.names)} share the table of {self.embedding_name!r} "
                    "(embedding_name), whose encoding and width they take: set it there"
                )
        elif self.encoding == "hash" and not self.num_buckets:
            raise ValueError(f"num_buckets: required with encoding=hash (features {_shown(self.names)})")

    def as_categorical(self) -> CategoricalFeatures:
        """The encoding of these features' own ids (without ``embedding_name``), as a categorical group."""
        return CategoricalFeatures(
            self.names, self.encoding, self.num_buckets, self.min_count, self.max_vocab_size, self.embedding_dim
        )


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) < 4 else f"{names[0]}, ..., {names[-1]}"


@checked
@dataclass
class FeatureSpec:
    """Which columns are dense features, categorical features, the label(s), the sample weight and the session.

    ``label`` names one label column, or a list of them for multi-task losses (click, conversion, value, ...);
    with several, batches carry ``labels (B, L)`` in this order. The session column (a request, a user visit:
    any id) groups rows into the lists that listwise losses and grouped AUC work on. ``oracle`` maps a binary
    label column to a column of its true probabilities (as ``easyrec generate`` writes them): the eval metrics
    then include the Bayes-optimal ``oracle_auc`` and ``oracle_logloss``. ``multi_value`` and ``sequence``: the
    columns of several ids per row (:class:`ListFeatures`).
    """

    dense: list[DenseFeatures] = field(default_factory=list)
    categorical: list[CategoricalFeatures] = field(default_factory=list)
    multi_value: list[ListFeatures] = field(default_factory=list)
    sequence: list[ListFeatures] = field(default_factory=list)
    label: str | list[str] = "label"
    weight: str | None = None
    session: str | None = None
    oracle: dict[str, str] | None = None

    def __post_init__(self) -> None:
        self.label = _label_config(self.label)
        self.oracle = dict(self.oracle or {})
        strangers = [name for name in self.oracle if name not in self.label_names]
        if strangers:
            raise ValueError(
                f"oracle: {strangers[0]!r} is not a label column (the labels: {', '.join(self.label_names)}); "
                "map each label column to the column of its true probabilities"
            )
        seen: dict[str, str] = {}
        for key, names in self._feature_groups():
            for name in names:
                if name in seen:
                    raise ValueError(f"{key}.names: {name!r} is also in {seen[name]}.names: a column is one feature")
                seen[name] = key
        for kind, groups in (("multi_value", self.multi_value), ("sequence", self.sequence)):
            for index, group in enumerate(groups):
                shared = group.embedding_name
                if shared is not None and shared not in self.categorical_names:
                    known = ", ".join(self.categorical_names) or "none"
                    raise ValueError(
                        f"{kind}.{index}.embedding_name: {shared!r} is not a categorical feature (the categorical "
                        f"features: {known})"
                    )

    @classmethod
    def from_config(cls, spec: FeatureSpec | Mapping[str, Any]) -> FeatureSpec:
        """Accept a spec or its plain-dict form (as Hydra passes it)."""
        if isinstance(spec, FeatureSpec):
            return spec
        return cls(
            dense=[DenseFeatures(**group) for group in spec.get("dense") or []],
            categorical=[CategoricalFeatures(**group) for group in spec.get("categorical") or []],
            multi_value=[ListFeatures(**group) for group in spec.get("multi_value") or []],
            sequence=[ListFeatures(**group) for group in spec.get("sequence") or []],
            label=spec.get("label", "label"),
            weight=spec.get("weight"),
            session=spec.get("session"),
            oracle=dict(spec.get("oracle") or {}),
        )

    def _feature_groups(self) -> list[tuple[str, list[str]]]:
        """``(key, names)`` of every group of feature columns, by its key under ``data.features``."""
        kinds = ("dense", "categorical", "multi_value", "sequence")
        return [(f"{kind}.{i}", group.names) for kind in kinds for i, group in enumerate(getattr(self, kind))]

    @property
    def dense_names(self) -> list[str]:
        return [name for group in self.dense for name in group.names]

    @property
    def categorical_names(self) -> list[str]:
        return [name for group in self.categorical for name in group.names]

    @property
    def list_groups(self) -> list[tuple[str, ListFeatures]]:
        """``(kind, group)`` of every list group: the multi-value groups, then the sequence groups."""
        return [("multi_value", g) for g in self.multi_value] + [("sequence", g) for g in self.sequence]

    @property
    def list_columns(self) -> list[tuple[str, ListFeatures, str]]:
        """``(key, group, name)`` of every list column in the order of :attr:`list_names`; ``key`` is its group's
        under ``data.features`` (``sequence.0``)."""
        kinds = ("multi_value", "sequence")
        return [(f"{k}.{i}", g, name) for k in kinds for i, g in enumerate(getattr(self, k)) for name in g.names]

    @property
    def id_groups(self) -> list[CategoricalFeatures]:
        """The encodings of the columns with a table of their own: the categorical groups, then the list groups
        without ``embedding_name`` (as categorical groups)."""
        return self.categorical + [g.as_categorical() for _, g in self.list_groups if g.embedding_name is None]

    @property
    def vocabulary_names(self) -> list[str]:
        """The columns with a vocabulary of their own (``encoding: vocab``): an encoder's ``vocabularies``."""
        return [name for group in self.id_groups if group.encoding == "vocab" for name in group.names]

    def categorical_group(self, name: str) -> CategoricalFeatures:
        """The categorical group of column ``name``."""
        return next(group for group in self.categorical if name in group.names)

    @property
    def list_names(self) -> list[str]:
        """The multi-value and sequence columns, in the order of ``lists``' column blocks (see :class:`InputSpec`)."""
        return [name for _, group in self.list_groups for name in group.names]

    @property
    def list_width(self) -> int:
        """ΣL: the columns of a batch's ``lists`` (see :class:`InputSpec`)."""
        return sum(group.max_length * len(group.names) for _, group in self.list_groups)

    @property
    def label_names(self) -> list[str]:
        """The label columns, in the order of ``labels (B, L)``."""
        return [self.label] if isinstance(self.label, str) else list(self.label)

    @property
    def feature_columns(self) -> list[str]:
        """The model's input columns: dense, categorical, then multi-value and sequence."""
        return self.dense_names + self.categorical_names + self.list_names

    @property
    def columns(self) -> list[str]:
        """Every column the spec reads, in a fixed order."""
        extra = self.label_names + [name for name in (self.weight, self.session) if name]
        return self.feature_columns + extra + [self.oracle[name] for name in self.label_names if name in self.oracle]


@dataclass(frozen=True)
class ListField:
    """A multi-value or sequence feature as a model sees it: its ids are columns ``start : start + max_length`` of
    a batch's ``lists (B, ΣL) int32`` (see :class:`InputSpec`).

    Attributes:
        name: the column.
        kind: ``multi_value`` (a bag of ids) or ``sequence`` (an ordered history).
        max_length: L, its columns in ``lists``.
        combiner: how a model that wants one vector per field pools its embeddings: ``sum`` or ``mean``.
        start: its first column in ``lists``.
        cardinality: rows of its table: its own, or that of the categorical field it shares (``table``).
        table: the categorical field whose table (and rows) it shares (``embedding_name``); None: its own table.
        embedding_dim: its width where the model allows one per field; None: the model's ``embedding_dim``.
    """

    name: str
    kind: Literal["multi_value", "sequence"]
    max_length: int
    combiner: Literal["sum", "mean"]
    start: int
    cardinality: int
    table: str | None = None
    embedding_dim: int | None = None

    @property
    def columns(self) -> slice:
        """Its columns in ``lists``."""
        return slice(self.start, self.start + self.max_length)


@dataclass(frozen=True)
class InputSpec:
    """What a model needs to know about its inputs: field names, dense width and embedding rows.

    A batch gives a model ``dense (B, num_dense) float32``, ``sparse (B, num_fields) int32`` (one row per
    categorical field, 0 = unknown id) and, when the data has multi-value or sequence features (``lists`` is not
    empty), ``lists (B, list_width) int32``: each :class:`ListField` ``k``'s ids in its columns
    ``lists[k].columns``, padded after its last id with -1 (a row with no id is all -1).

    ``embedding_dims``: each categorical field's ``embedding_dim`` (None: the model's), aligned with
    ``categorical_names``; empty: none set.
    """

    dense_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    lists: tuple[ListField, ...] = ()
    embedding_dims: tuple[int | None, ...] = ()

    @property
    def num_dense(self) -> int:
        return len(self.dense_names)

    @property
    def num_fields(self) -> int:
        return len(self.categorical_names)

    @property
    def described(self) -> str:
        """The inputs in words, for the log: ``13 dense + 26 categorical features`` (``+ 2 list`` before
        ``features`` with multi-value or sequence features)."""
        lists = f" + {len(self.lists)} list" if self.lists else ""
        return f"{self.num_dense} dense + {self.num_fields} categorical{lists} features"

    @property
    def list_width(self) -> int:
        """ΣL: the columns of ``lists`` (0 without list features)."""
        return sum(field.max_length for field in self.lists)

    def field_dims(self, default: int) -> tuple[list[int], list[int]]:
        """The width of each categorical field's and each list field's embedding: its own ``embedding_dim``, that of
        the field whose table it shares, or ``default``: ``(categorical widths, list widths)``."""
        own = dict(zip(self.categorical_names, self.embedding_dims or [None] * self.num_fields, strict=True))
        categorical = [own[name] or default for name in self.categorical_names]
        lists = [(own[f.table] if f.table else f.embedding_dim) or default for f in self.lists]
        return categorical, lists


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations (M2) of some float64 values: mergeable (Chan et al.)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> Moments:
        """The moments of ``(N,) float64`` values."""
        if not len(values):
            return cls()
        mean = values.mean()
        return cls(len(values), float(mean), float(np.square(values - mean).sum()))

    def merge(self, other: Moments) -> Moments:
        """The moments of both sets of values together."""
        if not other.count or not self.count:
            return other if other.count else self
        count = self.count + other.count
        delta = other.mean - self.mean
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / count
        return Moments(count, self.mean + delta * other.count / count, m2)


@dataclass
class FitStatistics:
    """What a fit learns from part of a table, mergeable with what it learns from the other parts.

    Attributes:
        rows: the rows seen.
        counts: vocabulary column -> tables of ``value``, ``count`` (one per part until merged: :meth:`compact`); a
            categorical column's counts include the ids of the list columns that share its table.
        moments: standardized dense column -> the moments of its filled, transformed values.
        kinds: categorical or list column -> ``(kind of its ids, the source that showed it first)``.
        separated: the list columns of strings with a cell that holds their separator.
        unseparated: list column of strings -> ``(a cell of it with an id, its source)``: a separator that occurs in
            no cell of the training split is an error (:meth:`FeatureEncoder.fit`).
    """

    rows: int = 0
    counts: dict[str, list[pa.Table]] = field(default_factory=dict)
    moments: dict[str, Moments] = field(default_factory=dict)
    kinds: dict[str, tuple[str, str]] = field(default_factory=dict)
    separated: set[str] = field(default_factory=set)
    unseparated: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add_kinds(self, table: pa.Table, names: Sequence[str], source: str) -> None:
        """The kinds of the columns ``names`` of ``table`` (from ``source``) that it has; a column of type null (no
        id at all) shows none."""
        for name in names:
            if name in table.schema.names and not pa.types.is_null(table.schema.field(name).type):
                self.add_kind(name, raw_kind(table.schema.field(name).type), source)

    def add_kind(self, name: str, kind: str, source: str) -> None:
        first, first_source = self.kinds.setdefault(name, (kind, source))
        if kind != first:
            raise DataError(
                f"{source}: column '{name}' holds {kind} ids, {first_source} holds {first} ids: every file (piece) "
                "must give a categorical column the same type"
            )

    def merge(self, other: FitStatistics) -> None:
        """Add ``other``'s statistics (of other rows) to these."""
        self.rows += other.rows
        for name, (kind, source) in other.kinds.items():
            self.add_kind(name, kind, source)
        self.separated |= other.separated
        for name, example in other.unseparated.items():
            self.unseparated.setdefault(name, example)
        for name, moments in other.moments.items():
            self.moments[name] = self.moments.get(name, Moments()).merge(moments)
        for name, tables in other.counts.items():
            pending = self.counts.setdefault(name, [])
            pending.extend(tables)
            if len(pending) >= COMPACT_EVERY:  # memory stays bounded by the distinct ids, whatever the rows
                self.counts[name] = [merge_counts(pending)]

    def compact(self) -> None:
        """Merge each column's id counts into one table."""
        self.counts = {name: [merge_counts(tables)] for name, tables in self.counts.items()}

    def merged_counts(self, name: str) -> pa.Table:
        """Column ``name``'s id counts as one table (``value``, ``count``); empty if it had none."""
        tables = self.counts.get(name)
        if not tables:
            return pa.table({"value": pa.array([], pa.null()), "count": pa.array([], pa.int64())})
        return merge_counts(tables)


class FeatureEncoder:
    """Fits per-column encodings on the training table and encodes any table into an EncodedSplit.

    Example::

        spec = FeatureSpec(dense=[DenseFeatures(["age"], transform="log1p", standardize=True)],
                           categorical=[CategoricalFeatures(["city"])])
        encoder = FeatureEncoder(spec).fit(train_table, source="train.csv")
        split = encoder.encode(eval_table, source="eval.csv")  # split.dense: (N, 1), split.sparse: (N, 1)

    ``non_finite``: what a dense value that is infinite in float32 (``inf``, ``1e308``) gets: ``"error"`` (a
    DataError naming the source, column and row) or ``"fill"`` (its group's ``fill_value``; the count is logged).
    """

    @checked
    def __init__(self, spec: FeatureSpec, non_finite: Literal["error", "fill"] = "error") -> None:
        self.spec = spec
        self.non_finite = non_finite
        self.vocabularies: dict[str, pa.Array] = {}
        self.mean: dict[str, float] = {}
        self.std: dict[str, float] = {}
        self.kinds: dict[str, str] = {}  # categorical column -> "int" or "string": how its raw ids were encoded
        self.fitted = False

    # ------------------------------------------------------------------ fitting

    def fit(self, table: pa.Table, source: str, keep: Mapping[str, Any] | None = None) -> FeatureEncoder:
        """Learn vocabularies and standardisation statistics from the training split.

        ``keep``: the :meth:`state_dict` of an earlier encoder (fine-tuning, incremental training): the columns it
        has statistics for keep them; those it has a vocabulary for keep it, so an id keeps its embedding row, and
        grow it by the ids of ``table`` it lacks (:func:`grow_vocabulary`); the other columns are fitted on
        ``table``.
        """
        require_columns(table, self.spec.columns, source)
        keep = keep or NOTHING_KEPT
        self._finish(self.statistics(table, source, keep), keep)
        return self

    def fit_pieces(
        self,
        pieces: Sequence[Piece],
        reader: PieceReader,
        source: str,
        threads: int = 1,
        keep: Mapping[str, Any] | None = None,
        progress: bool = True,
    ) -> dict[Piece, int]:
        """Fit as :meth:`fit` does on the table made of ``pieces`` (read with ``reader``; ``source`` names the
        table in logs), in one pass that never holds the table: each piece's statistics are computed batch by batch
        on ``threads`` threads and merged as they arrive, so memory grows with the distinct ids, not the rows.
        Only the columns that need statistics are read; with none (``encoding: hash``, no standardized group or
        all its statistics kept, no multi-value or sequence column) there is no pass.
        ``progress``: a bar on stderr while it runs (where stderr is a terminal).

        Returns the rows of each piece, counted in the pass (without a pass: those the pieces know).
        """
        keep = keep or NOTHING_KEPT
        if not pieces:
            raise DataError(f"{source}: no data rows (no pieces)")
        columns = self.fit_columns(keep)
        statistics = FitStatistics()
        rows: dict[Piece, int] = {}
        if columns:
            start = time.monotonic()
            statistics, rows = self._pass(pieces, reader, columns, threads, keep, progress)
            if statistics.rows == 0:
                raise DataError(f"{source}: no data rows")
            seconds = time.monotonic() - start
            log.info(
                "data: fitted the encoding on %s of %s in %.1f s (%s rows/s)",
                plural(statistics.rows, "row"),
                plural(len(pieces), "piece"),
                seconds,
                f"{statistics.rows / max(seconds, 1e-9):,.0f}",
            )
        else:
            rows = {piece: piece.rows for piece in pieces if piece.rows is not None}
        unread = [name for name in self.spec.categorical_names if name not in columns]
        if unread:  # their kinds only: the first batch of the first piece tells (every piece has the same schema)
            first = next(iter(reader(pieces[0], unread)), None)
            if first is not None:
                statistics.add_kinds(pa.Table.from_batches([first]), unread, str(pieces[0]))
        self._finish(statistics, keep)
        return rows

    def fit_columns(self, keep: Mapping[str, Any]) -> list[str]:
        """The columns whose statistics a fit needs: the vocabulary columns (a kept vocabulary grows by the new
        ids) and the standardized dense columns that ``keep`` has nothing for."""
        dense = [n for g in self.spec.dense if g.standardize for n in g.names if n not in keep["mean"]]
        # the list columns always: their separator and the type of their ids are checked
        return (
            dense + [n for g in self.spec.categorical if g.encoding == "vocab" for n in g.names] + self.spec.list_names
        )

    def statistics(self, table: pa.Table, source: str, keep: Mapping[str, Any], first_row: int = 0) -> FitStatistics:
        """The statistics of ``table`` (whose first row is row ``first_row + 1`` of ``source``) for the columns
        of :meth:`fit_columns`, and the kinds of the categorical columns it has."""
        statistics = FitStatistics(rows=table.num_rows)
        columns = set(self.fit_columns(keep))
        for group in self.spec.dense:
            for name in (n for n in group.names if n in columns):
                values = self._transformed(table, name, group, source, report=False, first_row=first_row)
                statistics.moments[name] = Moments.of(values)
        for group in self.spec.categorical:
            for name in (n for n in group.names if n in columns and group.encoding == "vocab"):
                ids = table[name].drop_null()
                if pa.types.is_dictionary(ids.type):  # the pieces' dictionaries differ: count the ids themselves
                    ids = ids.cast(ids.type.value_type)
                statistics.counts[name] = [id_counts(ids)]
        statistics.add_kinds(table, self.spec.categorical_names, source)
        for key, group, name in self.spec.list_columns:
            self._list_statistics(statistics, table, key, group, name, source)
        return statistics

    def _list_statistics(
        self,
        statistics: FitStatistics,
        table: pa.Table,
        key: str,
        group: ListFeatures,
        name: str,
        source: str,
    ) -> None:
        """Add to ``statistics`` the kind of the ids of list column ``name`` (of group ``key``), whether its
        separator occurs, and the counts of the ids it encodes, into its own vocabulary or that of the categorical
        feature it shares (``embedding_name``)."""
        column = table[name]
        if is_text(column.type):
            cells = pc.drop_null(column)
            if pc.any(pc.match_substring(cells, group.separator)).as_py():
                statistics.separated.add(name)
            else:
                filled = pc.filter(cells, pc.greater(pc.utf8_length(cells), 0))
                if len(filled):
                    statistics.unseparated.setdefault(name, (filled[0].as_py(), source))
        ids, _, _ = list_ids(
            column, group.separator, group.max_length, f"{source}: column '{name}' (data.features.{key})"
        )
        if pa.types.is_null(ids.type):
            return
        statistics.add_kind(name, raw_kind(ids.type), source)
        target = group.embedding_name or name
        if target not in self.spec.vocabulary_names:
            return
        if group.embedding_name and target in table.column_names and not pa.types.is_null(table[target].type):
            ids = as_kind(ids, raw_kind(table[target].type), name, target, source)
        if len(ids):
            statistics.counts.setdefault(target, []).append(id_counts(ids))

    def _pass(
        self,
        pieces: Sequence[Piece],
        reader: PieceReader,
        columns: list[str],
        threads: int,
        keep: Mapping[str, Any],
        progress: bool,
    ) -> tuple[FitStatistics, dict[Piece, int]]:
        """The merged statistics of ``pieces`` and the rows of each: pieces are read on ``threads`` threads (Arrow's
        reading and counting and numpy's arithmetic release the GIL) and merged in order as they come, with
        ``2 * threads`` pieces read ahead."""

        def piece_statistics(piece: Piece) -> FitStatistics:
            statistics = FitStatistics()
            for batch in reader(piece, columns):
                if not batch.num_rows:
                    continue
                table = pa.Table.from_batches([batch])  # no copy; the encoder's column code works on tables
                require_columns(table, columns, str(piece))
                statistics.merge(self.statistics(table, str(piece), keep, first_row=statistics.rows))
            statistics.compact()
            return statistics

        total, rows = FitStatistics(), {}
        with ThreadPoolExecutor(threads) as pool, PiecesProgress.on_stderr(len(pieces), "fitting", progress) as bar:
            window: deque[tuple[Piece, Future[FitStatistics]]] = deque()
            try:
                for piece in [*pieces, None]:
                    if piece is not None:
                        window.append((piece, pool.submit(piece_statistics, piece)))
                    while window and (piece is None or len(window) > 2 * threads):
                        done, future = window.popleft()
                        statistics = future.result()
                        total.merge(statistics)
                        rows[done] = statistics.rows
                        bar.advance(statistics.rows)
            except BaseException:
                for _, future in window:
                    future.cancel()
                raise
        return total, rows

    def _finish(self, statistics: FitStatistics, keep: Mapping[str, Any]) -> None:
        """Set the fitted state from merged ``statistics``; the columns ``keep`` has take its values."""
        for group in self.spec.dense:
            for name in (n for n in group.names if group.standardize):
                if name in keep["mean"]:
                    self.mean[name], self.std[name] = keep["mean"][name], keep["std"][name]
                    continue
                moments = statistics.moments.get(name, Moments())
                self.mean[name] = moments.mean if moments.count else 0.0
                std = math.sqrt(moments.m2 / moments.count) if moments.count else 1.0
                self.std[name] = std if std > 1e-12 else 1.0
        for key, group, name in self.spec.list_columns:
            if name in statistics.unseparated and name not in statistics.separated:
                cell, source = statistics.unseparated[name]
                raise DataError(
                    f"data.features.{key}.separator: {group.separator!r} occurs in no cell of column '{name}' of "
                    f"{source} (such as {cell!r}): set the separator that joins its ids"
                )
        for name in self.spec.categorical_names + self.spec.list_names:
            # a column with no ids at all (type null) is taken as text, as raw_kind says
            self.kinds[name] = statistics.kinds[name][0] if name in statistics.kinds else raw_kind(pa.null())
        grown = {}
        for group in self.spec.id_groups:
            if group.encoding == "vocab":
                for name in group.names:
                    counts = statistics.merged_counts(name)
                    if name in keep["vocabularies"]:
                        kept = pa.array(keep["vocabularies"][name])
                        self.vocabularies[name] = grow_vocabulary(kept, counts, group, name)
                        grown[name] = len(self.vocabularies[name]) - len(kept)
                    else:
                        self.vocabularies[name] = build_vocabulary(counts, group.min_count, group.max_vocab_size)
        if grown:
            log.info(
                "data: the kept vocabularies of %s grew by %s (appended: every kept id keeps its row)",
                plural(len(grown), "feature"),
                plural(sum(grown.values()), "new id"),
            )
        self.fitted = True

    def _rows(self, name: str, group: CategoricalFeatures) -> int:
        """Rows of the table of column ``name`` of ``group``: its vocabulary and row 0, or its buckets."""
        return len(self.vocabularies[name]) + 1 if group.encoding == "vocab" else int(group.num_buckets)

    @property
    def input_spec(self) -> InputSpec:
        rows, dims = {}, {}
        for group in self.spec.categorical:
            for name in group.names:
                rows[name], dims[name] = self._rows(name, group), group.embedding_dim
        lists, start = [], 0
        for kind, group in self.spec.list_groups:
            for name in group.names:
                table = group.embedding_name
                cardinality = rows[table] if table else self._rows(name, group.as_categorical())
                lists.append(
                    ListField(
                        name, kind, group.max_length, group.combiner, start, cardinality, table, group.embedding_dim
                    )
                )
                start += group.max_length
        names = tuple(self.spec.categorical_names)
        embedding_dims = tuple(dims[n] for n in names) if any(dims.values()) else ()
        return InputSpec(
            tuple(self.spec.dense_names), names, tuple(rows[n] for n in names), tuple(lists), embedding_dims
        )

    # ------------------------------------------------------------------ encoding

    def encode(self, table: pa.Table, source: str, labels: bool = True, first_row: int = 0) -> EncodedSplit:
        """Encode ``table`` into ``dense (N, D) float32``, ``sparse (N, F) int32``, ``labels (N,)`` (``(N, L)``
        with several label columns), the weights and sessions the spec names, and the true probabilities of the
        labels the spec's ``oracle`` names (``oracle (N, L)``, NaN for the other labels).

        ``labels=False`` (prediction): only the feature columns are read and required; the split has no labels,
        weights or sessions. ``first_row``: the number of rows of ``source`` before ``table`` (a batch of a piece),
        so that an error names the row of the file.
        """
        import torch  # loaded here, so files are checked before torch loads (a data error comes in ~1 s)

        from easyrec.data.batches import EncodedSplit

        if not self.fitted:
            raise RuntimeError("FeatureEncoder.encode called before fit")
        require_columns(table, self.spec.columns if labels else self.spec.feature_columns, source)
        n = table.num_rows
        dense = np.empty((n, len(self.spec.dense_names)), dtype=np.float32)
        column = 0
        for group in self.spec.dense:
            for name in group.names:
                values = self._transformed(table, name, group, source, first_row=first_row)
                if group.standardize:
                    values = (values - self.mean[name]) / self.std[name]
                dense[:, column] = values
                column += 1
        sparse = np.empty((n, len(self.spec.categorical_names)), dtype=np.int32)
        column = 0
        for group in self.spec.categorical:
            for name in group.names:
                if group.encoding == "vocab":
                    sparse[:, column] = lookup(table[name], self.vocabularies[name], source, name)
                else:
                    sparse[:, column] = hash_buckets(table[name], int(group.num_buckets))
                column += 1
        lists = torch.from_numpy(self._lists(table, source)) if self.spec.list_groups else None
        if not labels:
            return EncodedSplit(torch.from_numpy(dense), torch.from_numpy(sparse), None, None, source, lists=lists)
        values = np.stack(
            [numeric_column(table, name, source, None, first_row) for name in self.spec.label_names], axis=1
        )
        if values.shape[1] == 1:
            values = values[:, 0]
        weights = None
        if self.spec.weight:
            weights = torch.from_numpy(numeric_column(table, self.spec.weight, source, None, first_row))
        sessions = torch.from_numpy(session_ids(table[self.spec.session])) if self.spec.session else None
        oracle = torch.from_numpy(true_probabilities(table, self.spec, source, first_row)) if self.spec.oracle else None
        return EncodedSplit(
            dense=torch.from_numpy(dense),
            sparse=torch.from_numpy(sparse),
            labels=torch.from_numpy(values),
            weights=weights,
            source=source,
            sessions=sessions,
            oracle=oracle,
            lists=lists,
        )

    def _lists(self, table: pa.Table, source: str) -> np.ndarray:
        """``(N, ΣL) int32``: the rows of the first ``max_length`` ids of each list column of ``table`` in its block
        of columns, -1 after its last id (see :class:`InputSpec`)."""
        lists = np.full((table.num_rows, self.spec.list_width), -1, dtype=np.int32)
        start = 0
        for key, group, name in self.spec.list_columns:
            where = f"{source}: column '{name}' (data.features.{key})"
            ids, rows, positions = list_ids(table[name], group.separator, group.max_length, where)
            if group.embedding_name:
                target, encoding = group.embedding_name, self.spec.categorical_group(group.embedding_name)
            else:
                target, encoding = name, group.as_categorical()
            ids = as_kind(ids, self.kinds[target], name, target, source)  # Parquet lists, CSV text: one encoding
            if encoding.encoding == "vocab":
                encoded = lookup(ids, self.vocabularies[target], source, name)
            else:
                encoded = hash_buckets(ids, int(encoding.num_buckets))
            lists[rows, start + positions] = encoded
            start += group.max_length
        return lists

    def _transformed(
        self,
        table: pa.Table,
        name: str,
        group: DenseFeatures,
        source: str,
        report: bool = True,
        first_row: int = 0,
    ) -> np.ndarray:
        """Column ``name`` as ``(N,) float64``, filled, checked for infinite values and transformed; ``report``:
        log how many infinite values were filled (once per split: fitting reads the training split too);
        ``first_row``: the rows of ``source`` before ``table``, for errors."""
        values = numeric_column(table, name, source, group.fill_value, first_row)
        infinite = np.isinf(values)  # float32: 1e308 is inf there; NaN was an empty cell and is filled already
        if infinite.any():
            if self.non_finite == "error":
                first = int(np.flatnonzero(infinite)[0])
                value = table[name][first].as_py()
                raise DataError(
                    f"{source}: column '{name}', row {first_row + first + 1}: {value!r} is not a finite "
                    "float32 (data.non_finite=fill replaces such values with the feature's fill_value)"
                )
            values[infinite] = group.fill_value
            if report:
                log.warning(
                    "%s: column '%s': %d infinite values replaced by fill_value %g (data.non_finite=fill)",
                    source,
                    name,
                    int(infinite.sum()),
                    group.fill_value,
                )
        values = values.astype(np.float64)
        if group.transform == "log1p":
            values = np.sign(values) * np.log1p(np.abs(values))
        return values

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to encode new data the same way (plain types, safe to load)."""
        return {
            "spec": asdict(self.spec),
            "vocabularies": {name: vocab.to_pylist() for name, vocab in self.vocabularies.items()},
            "mean": dict(self.mean),
            "std": dict(self.std),
            "kinds": dict(self.kinds),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.vocabularies = {name: pa.array(values) for name, values in state["vocabularies"].items()}
        self.mean, self.std = dict(state["mean"]), dict(state["std"])
        # checkpoints written before kinds were recorded: a vocabulary's ids tell; hashed ids were most likely text
        kinds = dict(state.get("kinds") or {})
        for name in self.spec.categorical_names + self.spec.list_names:
            if name not in kinds:
                vocabulary = self.vocabularies.get(name)
                integer = vocabulary is not None and pa.types.is_integer(vocabulary.type)
                kinds[name] = "int" if integer else "string"
        self.kinds = kinds
        self.fitted = True


def _label_config(label: str | list[str]) -> str | list[str]:
    if isinstance(label, str):
        return label
    names = list(label)
    if not names:
        raise ValueError("label=[]: must be a column name or a non-empty list of column names")
    if len(set(names)) != len(names):
        raise ValueError(f"label: a column appears twice in {names}")
    return names[0] if len(names) == 1 else names


def raw_kind(data_type: pa.DataType) -> str:
    """How ids of an arrow type are encoded: ``"int"`` (splitmix64, integer vocabularies) or ``"string"``."""
    return "int" if pa.types.is_integer(data_type) else "string"


def is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type)


def list_ids(
    column: pa.ChunkedArray | pa.Array, separator: str, max_length: int, where: str
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The first ``max_length`` ids of each cell of a list column (lists of ids, or strings of ids joined by
    ``separator``; empty cells, null and empty ids have none): ``(ids (K,), rows (K,) int64, positions (K,) int64)``,
    each id with its row and its place in the row's list, rows ascending. ``where`` names the column in errors."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return pa.array([], pa.null()), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if is_text(column.type):
        column = pc.split_pattern(column, separator)
    elif not (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or pa.types.is_fixed_size_list(column.type)
    ):
        raise DataError(
            f"{where}: holds {column.type} values, not lists of ids nor strings of ids joined by {separator!r}"
        )
    if pa.types.is_fixed_size_list(column.type):
        column = column.cast(pa.list_(column.type.value_type))
    ids, rows = pc.list_flatten(column), pc.list_parent_indices(column).to_numpy().astype(np.int64)
    element = ids.type
    if not (pa.types.is_integer(element) or is_text(element) or pa.types.is_null(element)):
        raise DataError(f"{where}: holds lists of {element}, not of ids (integers or strings)")
    absent = pc.is_null(ids)
    if is_text(element):
        absent = pc.or_(absent, pc.equal(pc.utf8_length(ids), 0))
    if pc.any(absent).as_py() or column.null_count:  # each row's first id is not where the offsets say: count
        present = pc.invert(absent)
        ids, rows = ids.filter(present), rows[present.to_numpy(zero_copy_only=False)]
        counts = np.bincount(rows, minlength=len(column))
        starts = np.cumsum(counts) - counts
    else:
        offsets = column.offsets.to_numpy()
        starts = offsets[:-1] - offsets[0]
    positions = np.arange(len(rows)) - starts[rows]
    if len(positions) and positions.max() >= max_length:
        kept = positions < max_length
        ids, rows, positions = ids.filter(pa.array(kept)), rows[kept], positions[kept]
    return ids, rows, positions


def as_kind(ids: pa.Array, kind: str, name: str, target: str, source: str) -> pa.Array:
    """The ids of list column ``name`` as ids of ``kind`` (``int`` or ``string``): that of the ids ``target`` was
    fitted on (``name`` itself, or the categorical column whose table it shares), so that an id encodes the same
    whether it comes as text or as an integer."""
    if pa.types.is_null(ids.type) or raw_kind(ids.type) == kind:
        return ids
    try:
        return ids.cast(pa.int64() if kind == "int" else pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"{source}: column '{name}' holds {ids.type} ids that are not {kind} ids, as those of '{target}' are"
        ) from None


def id_counts(ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The distinct ``value`` of ``ids`` (no nulls) and the ``count`` of each."""
    counts = pc.value_counts(ids)
    return pa.table({"value": counts.field("values"), "count": counts.field("counts")})


def require_columns(table: pa.Table, columns: list[str], source: str) -> None:
    if table.num_rows == 0:
        raise DataError(f"{source}: no data rows")
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(
            f"{source}: column {', '.join(repr(c) for c in missing)} not found; "
            f"the columns are: {', '.join(table.column_names)}"
        )


def numeric_column(table: pa.Table, name: str, source: str, fill_value: float | None, first_row: int = 0) -> np.ndarray:
    """Column ``name`` as ``(N,) float32``; empty cells take ``fill_value`` or, if None, are an error (naming the
    row of ``source``: ``table``'s first is row ``first_row + 1``)."""
    column = table[name]
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_null(column.type)):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            bad = pc.invert(pc.match_substring_regex(column, NUMBER_PATTERN, ignore_case=True))
            first = first_true(bad)
            if first is not None:
                value = column[first].as_py()
                raise DataError(f"{source}: column '{name}', row {first_row + first + 1}: {value!r} is not a number")
        try:
            column = column.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise DataError(f"{source}: column '{name}' of type {column.type} is not numeric ({error})") from None
    if column.null_count:
        if fill_value is None:
            first = first_true(pc.is_null(column))
            raise DataError(f"{source}: column '{name}', row {first_row + first + 1}: empty value")
        column = pc.fill_null(column.cast(pa.float64()), fill_value)
    with np.errstate(over="ignore"):  # beyond float32's range is inf: the dense features' non_finite rule
        values = column.to_numpy().astype(np.float32)
    if fill_value is not None:
        values[np.isnan(values)] = fill_value
    return values


def true_probabilities(table: pa.Table, spec: FeatureSpec, source: str, first_row: int = 0) -> np.ndarray:
    """``(N, L) float32``: the column ``spec.oracle`` names for each label column (NaN for a label without one),
    each value a probability in [0, 1]: anything else is a :class:`DataError` naming the column and row (of
    ``source``: ``table``'s first is row ``first_row + 1``)."""
    oracle = np.full((table.num_rows, len(spec.label_names)), np.nan, dtype=np.float32)
    for index, label in enumerate(spec.label_names):
        if label in spec.oracle:
            name = spec.oracle[label]
            values = numeric_column(table, name, source, None, first_row)
            outside = ~((values >= 0) & (values <= 1))  # NaN too
            if outside.any():
                row = int(np.flatnonzero(outside)[0])
                raise DataError(
                    f"{source}: column '{name}', row {first_row + row + 1}: {values[row]:g} is not a probability "
                    f"in [0, 1] (data.features.oracle.{label})"
                )
            oracle[:, index] = values
    return oracle


def first_true(mask: pa.ChunkedArray | pa.Array) -> int | None:
    """Index of the first true value of a boolean column, or None."""
    flags = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(flags)
    return int(hits[0]) if len(hits) else None


def build_vocabulary(counts: pa.Table, min_count: int, max_size: int | None) -> pa.Array:
    """The ids of ``counts`` (columns ``value``, ``count``: :func:`merge_counts`) seen ``min_count`` times or more,
    most frequent first (ties by value), at most ``max_size`` of them."""
    table = counts.filter(pc.greater_equal(counts["count"], min_count))
    table = table.sort_by([("count", "descending"), ("value", "ascending")])
    if max_size is not None:
        table = table.slice(0, max_size)
    return table["value"].combine_chunks()


def grow_vocabulary(
    vocabulary: pa.Array, counts: pa.Table, group: CategoricalFeatures, name: str = "the column"
) -> pa.Array:
    """``vocabulary`` (an earlier fit's, in its order: every id keeps its row) followed by the ids of ``counts``
    (:func:`merge_counts`) it lacks that were seen ``group.min_count`` times or more, most frequent first, while
    the whole has at most ``group.max_vocab_size`` ids. Ids are never dropped: an id absent from ``counts`` keeps
    its row, and a vocabulary already at the bound stays as it is."""
    if len(vocabulary) == 0:  # none kept (no id met min_count): also reloaded with type null
        return build_vocabulary(counts, group.min_count, group.max_vocab_size)
    room = None if group.max_vocab_size is None else group.max_vocab_size - len(vocabulary)
    if counts.num_rows == 0 or (room is not None and room <= 0):
        return vocabulary
    try:
        values = counts["value"].cast(vocabulary.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(
            f"column '{name}' holds {counts['value'].type} ids, the vocabulary kept from trainer.init_from holds "
            f"{vocabulary.type} ids"
        ) from None
    new = pa.table({"value": values, "count": counts["count"]}).filter(pc.invert(pc.is_in(values, vocabulary)))
    return pa.concat_arrays([vocabulary, build_vocabulary(new, group.min_count, room)])


def merge_counts(tables: Sequence[pa.Table]) -> pa.Table:
    """One table of ``value``, ``count`` (summed) from tables of id counts; an id type that differs between them
    (int32 and int64, string and large_string) is widened."""
    if len(tables) == 1:
        return tables[0]
    merged = pa.concat_tables(tables, promote_options="permissive").group_by("value").aggregate([("count", "sum")])
    return pa.table({"value": merged["value"], "count": merged["count_sum"]})


def lookup(column: pa.ChunkedArray, vocabulary: pa.Array, source: str, name: str) -> np.ndarray:
    """Row of every id: 1 + its position in ``vocabulary``, 0 when absent or empty. ``(N,) -> (N,)``."""
    if len(vocabulary) == 0:  # no id met min_count; such a vocabulary also reloads with type null
        return np.zeros(len(column), dtype=np.int32)
    if column.type != vocabulary.type:
        try:
            column = column.cast(vocabulary.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(
                f"{source}: column '{name}' has type {column.type}, the training split had {vocabulary.type}"
            ) from None
    positions = pc.index_in(column, value_set=vocabulary)
    return pc.fill_null(positions, -1).to_numpy().astype(np.int32) + 1


def session_ids(column: pa.ChunkedArray) -> np.ndarray:
    """``(N,) int64`` session ids: integers as they are, other types by distinct value; empty cells share -1."""
    if pa.types.is_integer(column.type):
        return pc.fill_null(column, -1).to_numpy().astype(np.int64)
    encoded = pc.dictionary_encode(column.cast(pa.string())).combine_chunks()
    return pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
