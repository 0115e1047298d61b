"""A trained run as one TorchScript module that takes raw feature values and returns its predictions: the feature
encoding (fill, log1p, standardisation, vocabulary lookup, hashing) and the heads' scores are inside it, so a
server needs only ``torch``.

Example::

    serving = build_serving_module(SavedRun.load("outputs/ctr-1"))
    torch.jit.save(serving, "model.pt")
    # anywhere: torch.jit.load("model.pt")(dense, int_ids, str_ids, list_cells) -> (B, K) predictions
"""

# No `from __future__ import annotations`: TorchScript reads the annotations of ServingModule as types.
from typing import Any

import torch
from torch import Tensor, nn

#: The raw integer id that stands for an empty cell (it encodes as out of vocabulary, or bucket 0).
INT_NULL = -(2**63)

_MASK64 = (1 << 64) - 1


def signed(value: int) -> int:
    """The int64 with the bits of the unsigned 64-bit ``value``."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def shift_right(x: Tensor, bits: int) -> Tensor:
    """Logical (unsigned) right shift of int64 bits: the arithmetic shift with the sign's copies masked off."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: Tensor) -> Tensor:
    """The splitmix64 finaliser on int64 tensors (wrapping arithmetic): the bits of
    :func:`easyrec.data.hashing.splitmix64`, as int64. ``(N,) -> (N,)``."""
    # The constants are those of hashing.py as int64 bits (literals: TorchScript reads no globals).
    x = x + -7046029254386353131  # 0x9E3779B97F4A7C15
    x = (x ^ shift_right(x, 30)) * -4658895280553007687  # 0xBF58476D1CE4E5B9
    x = (x ^ shift_right(x, 27)) * -7723592293110705685  # 0x94D049BB133111EB
    return x ^ shift_right(x, 31)


def unsigned_mod(x: Tensor, n: int, two64_mod_n: int) -> Tensor:
    """``x``'s bits read as uint64, modulo ``n``: a negative int64 is ``x + 2**64``. ``(N,) -> (N,)`` in [0, n)."""
    rest = torch.remainder(x, n)  # in [0, n) for n > 0
    return torch.remainder(rest + torch.where(x < 0, two64_mod_n, 0), n)


def utf8_bytes(text: str) -> list[int]:
    """The UTF-8 encoding of ``text``, by hand (``str.encode`` is not TorchScript)."""
    if torch.jit.is_scripting():  # a TorchScript string is its UTF-8 bytes, and iterates over them
        return [ord(byte) & 0xFF for byte in text]
    out: list[int] = []
    for char in text:
        code = ord(char)
        if code < 0x80:
            out.append(code)
        elif code < 0x800:
            out.extend([0xC0 | (code >> 6), 0x80 | (code & 0x3F)])
        elif code < 0x10000:
            out.extend([0xE0 | (code >> 12), 0x80 | ((code >> 6) & 0x3F), 0x80 | (code & 0x3F)])
        else:
            out.extend(
                [0xF0 | (code >> 18), 0x80 | ((code >> 12) & 0x3F), 0x80 | ((code >> 6) & 0x3F), 0x80 | (code & 0x3F)]
            )
    return out


def fnv1a64(strings: list[str]) -> Tensor:
    """FNV-1a 64 of each string's UTF-8 bytes, as int64 bits: ``N strings -> (N,)``; vectorised over the strings,
    one step per byte position of a padded ``(N, L)`` byte matrix."""
    encoded = [utf8_bytes(text) for text in strings]
    lengths = torch.tensor([len(b) for b in encoded], dtype=torch.int64)
    width = int(lengths.max()) if len(encoded) > 0 else 0
    matrix = torch.zeros(len(encoded), width, dtype=torch.int64)
    for row, values in enumerate(encoded):
        if len(values) > 0:
            matrix[row, : len(values)] = torch.tensor(values, dtype=torch.int64)
    hashes = torch.full((len(encoded),), -3750763034362895579, dtype=torch.int64)  # 0xCBF29CE484222325
    for position in range(width):
        stepped = (hashes ^ matrix[:, position]) * 1099511628211  # 0x100000001B3
        hashes = torch.where(lengths > position, stepped, hashes)
    return hashes


class Predictions(nn.Module):
    """The model and its heads' scores: ``dense (B, D) float32, sparse (B, F) int32, lists (B, ΣL) int32 -> (B, K)
    float32``, one column per prediction (as ``easyrec predict`` writes them); without list features
    (``with_lists=False``) ``lists`` is ``(B, 0)`` and the model is called without it."""

    def __init__(self, model: nn.Module, heads: list[Any], with_lists: bool = False) -> None:
        super().__init__()
        self.model, self.heads, self.with_lists = model, heads, with_lists

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor) -> Tensor:
        outputs = (self.model(dense, sparse, lists) if self.with_lists else self.model(dense, sparse)).float()
        columns = [head.scores(head.outputs(outputs)).float() for head in self.heads]
        return torch.cat([c.unsqueeze(1) if c.dim() == 1 else c for c in columns], dim=1)


class ServingModule(nn.Module):
    """Raw feature values -> predictions; scriptable with :func:`torch.jit.script`, and its ``forward`` uses only
    torch.

    The ids of every table (a categorical field's, or a list feature's own) are encoded by one of the ``int_*``
    entries (raw ids read as integers) or ``str_*`` entries (as text): the first ones those of the categorical
    fields, in ``int_fields`` and ``str_fields``' order, then those of the list features' own tables. A list feature
    ``k`` reads the entry ``list_tables[k]`` (``list_int[k]``: of the ``int_*`` ones), that of the field whose table
    it shares.

    Args:
        predictions: ``(dense (B, D) float32, sparse (B, F) int32[, lists (B, ΣL) int32]) -> (B, K)``, a
            TorchScript module (traced :class:`Predictions`).
        encoder: the run's :meth:`~easyrec.data.features.FeatureEncoder.state_dict`.
        spec: the run's :class:`~easyrec.data.features.FeatureSpec`.
    """

    str_vocabularies: list[dict[str, int]]
    str_fields: list[int]
    int_fields: list[int]
    int_hashed: list[bool]
    str_hashed: list[bool]
    int_buckets: list[int]
    str_buckets: list[int]
    int_two64: list[int]
    str_two64: list[int]
    int_vocab_keys: list[Tensor]
    int_vocab_rows: list[Tensor]
    num_fields: int
    int_null: int
    int_names: list[str]
    str_names: list[str]
    list_names: list[str]
    list_int: list[bool]
    list_tables: list[int]
    list_separators: list[str]
    list_lengths: list[int]
    list_width: int

    def __init__(self, predictions: nn.Module, encoder: dict[str, Any], spec: Any) -> None:
        super().__init__()
        self.predictions = predictions
        fill, log1p, standardize, mean, std = [], [], [], [], []
        for group in spec.dense:
            for name in group.names:
                fill.append(float(group.fill_value))
                log1p.append(group.transform == "log1p")
                standardize.append(bool(group.standardize))
                mean.append(float(encoder["mean"].get(name, 0.0)) if group.standardize else 0.0)
                std.append(float(encoder["std"].get(name, 1.0)) if group.standardize else 1.0)
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32))
        self.register_buffer("log1p", torch.tensor(log1p, dtype=torch.bool))
        self.register_buffer("standardize", torch.tensor(standardize, dtype=torch.bool))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64))
        self.int_fields, self.int_hashed, self.int_buckets, self.int_two64 = [], [], [], []
        self.int_vocab_keys, self.int_vocab_rows = [], []
        self.str_fields, self.str_hashed, self.str_buckets, self.str_two64, self.str_vocabularies = [], [], [], [], []
        self.int_names, self.str_names = [], []
        tables: dict[str, tuple[bool, int]] = {}  # column -> (an int_* entry?, which)
        field = 0
        for group in spec.categorical:
            for name in group.names:
                tables[name] = self._add_table(group, encoder, name)
                (self.int_fields if tables[name][0] else self.str_fields).append(field)
                (self.int_names if tables[name][0] else self.str_names).append(name)
                field += 1
        self.num_fields = field
        self.int_null = INT_NULL
        self.list_names, self.list_int, self.list_tables, self.list_separators, self.list_lengths = [], [], [], [], []
        for _, group, name in spec.list_columns:
            shared = group.embedding_name
            is_int, table = tables[shared] if shared else self._add_table(group.as_categorical(), encoder, name)
            self.list_names.append(name)
            self.list_int.append(is_int)
            self.list_tables.append(table)
            self.list_separators.append(group.separator)
            self.list_lengths.append(group.max_length)
        self.list_width = sum(self.list_lengths)

    def _add_table(self, group: Any, encoder: dict[str, Any], name: str) -> tuple[bool, int]:
        """Add the encoding of column ``name`` of the categorical ``group``: ``(an int_* entry?, its index)``."""
        hashed = group.encoding == "hash"
        buckets = int(group.num_buckets) if hashed else 0
        two64 = (1 << 64) % buckets if hashed else 0
        vocabulary = [] if hashed else list(encoder["vocabularies"][name])
        if encoder["kinds"][name] == "int":
            self.int_hashed.append(hashed)
            self.int_buckets.append(buckets)
            self.int_two64.append(two64)
            keys = torch.tensor([int(v) for v in vocabulary], dtype=torch.int64)
            order = torch.argsort(keys)
            self.int_vocab_keys.append(keys[order])
            self.int_vocab_rows.append((order + 1).to(torch.int32))  # row = 1 + position in the vocabulary
            return True, len(self.int_hashed) - 1
        self.str_hashed.append(hashed)
        self.str_buckets.append(buckets)
        self.str_two64.append(two64)
        self.str_vocabularies.append({str(v): row + 1 for row, v in enumerate(vocabulary)})
        return False, len(self.str_hashed) - 1

    def int_rows(self, j: int, ids: Tensor) -> Tensor:
        """The rows of raw integer ids ``(N,) int64`` in the table of entry ``j``: ``(N,) int64``."""
        if self.int_hashed[j]:
            return unsigned_mod(splitmix64(ids), self.int_buckets[j], self.int_two64[j])
        keys = self.int_vocab_keys[j]
        if keys.numel() == 0:
            return torch.zeros_like(ids)
        at = torch.searchsorted(keys, ids).clamp_max(keys.numel() - 1)
        return torch.where(keys[at] == ids, self.int_vocab_rows[j][at].to(torch.int64), 0)

    def str_rows(self, j: int, ids: list[str]) -> Tensor:
        """The rows of ``N`` raw text ids (``""``: empty, row 0) in the table of entry ``j``: ``(N,) int64``."""
        if self.str_hashed[j]:
            rows = unsigned_mod(fnv1a64(ids), self.str_buckets[j], self.str_two64[j])
            empty = torch.tensor([len(text) == 0 for text in ids], dtype=torch.bool)
            return torch.where(empty, 0, rows)
        vocabulary = self.str_vocabularies[j]
        return torch.tensor([vocabulary.get(text, 0) for text in ids], dtype=torch.int64)

    def encode_lists(self, cells: list[list[str]]) -> Tensor:
        """``cells``: for each list feature, its ``B`` cells as text (ids joined by its separator) -> ``lists (B,
        ΣL) int32``: the rows of each cell's first ``max_length`` ids, -1 after them (as the encoder's)."""
        batch = len(cells[0]) if len(cells) > 0 else 0
        lists = torch.full((batch, self.list_width), -1, dtype=torch.int32)
        start = 0
        for k, column in enumerate(cells):
            length = self.list_lengths[k]
            tokens: list[str] = []
            rows: list[int] = []
            positions: list[int] = []
            for row, cell in enumerate(column):
                kept = 0
                for token in cell.split(self.list_separators[k]):
                    if len(token) > 0 and kept < length:  # empty ids are none, as the encoder's
                        tokens.append(token)
                        rows.append(row)
                        positions.append(start + kept)
                        kept += 1
            if self.list_int[k]:
                encoded = self.int_rows(self.list_tables[k], torch.tensor([int(t) for t in tokens], dtype=torch.int64))
            else:
                encoded = self.str_rows(self.list_tables[k], tokens)
            lists[torch.tensor(rows, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64)] = encoded.to(
                torch.int32
            )
            start += length
        return lists

    def forward(
        self, dense: Tensor, int_ids: Tensor, str_ids: list[list[str]], list_cells: list[list[str]] | None = None
    ) -> Tensor:
        """``dense (B, D)`` raw values (NaN: empty), ``int_ids (B, F_int) int64`` raw ids (:data:`INT_NULL`: empty),
        ``str_ids``: ``F_str`` lists of ``B`` raw ids (``""``: empty), ``list_cells``: for each list feature (in
        ``list_names``' order), ``B`` cells of ids joined by its separator (required when it has some) -> ``(B, K)``
        predictions."""
        batch = dense.shape[0]
        values = dense.to(torch.float32)  # the encoder reads numbers as float32, then transforms in float64
        values = torch.where(torch.isnan(values), self.fill.expand_as(values), values).to(torch.float64)
        values = torch.where(self.log1p, torch.sign(values) * torch.log1p(torch.abs(values)), values)
        values = torch.where(self.standardize, (values - self.mean) / self.std, values).to(torch.float32)
        sparse = torch.zeros(batch, self.num_fields, dtype=torch.int32)
        for j, field in enumerate(self.int_fields):
            ids = int_ids[:, j].to(torch.int64).contiguous()
            sparse[:, field] = torch.where(ids == self.int_null, 0, self.int_rows(j, ids)).to(torch.int32)
        for j, field in enumerate(self.str_fields):
            sparse[:, field] = self.str_rows(j, str_ids[j]).to(torch.int32)
        if len(self.list_names) == 0:
            return self.predictions(values, sparse, torch.zeros(batch, 0, dtype=torch.int32))
        if list_cells is None:
            raise ValueError(f"the model reads list features: pass the cells of {', '.join(self.list_names)}")
        return self.predictions(values, sparse, self.encode_lists(list_cells))


def build_serving_module(saved: Any, example_rows: int = 8) -> torch.jit.ScriptModule:
    """The scripted :class:`ServingModule` of a :class:`~easyrec.saved_run.SavedRun` (on the CPU, eval mode): its
    model and heads traced on ``example_rows`` rows of zeros, its encoding from the checkpoint."""
    import copy
    import warnings

    model = copy.deepcopy(saved.model).cpu().eval().requires_grad_(False)
    probe = saved.probe(example_rows)
    predictions = Predictions(model, saved.heads, with_lists=probe.lists is not None).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # the models branch on the number of dense columns and outputs, fixed for a run: constants are right
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(predictions, traced_inputs(probe), check_trace=False)
    return torch.jit.script(ServingModule(traced, saved.encoder.state_dict(), saved.source.spec).eval())


def traced_inputs(batch: Any) -> tuple[Tensor, Tensor, Tensor]:
    """What :class:`Predictions` takes for ``batch``: ``(dense, sparse, lists)``, ``lists`` ``(B, 0)`` without list
    features."""
    lists = batch.lists if batch.lists is not None else torch.zeros(len(batch), 0, dtype=torch.int32)
    return batch.dense, batch.sparse, lists
