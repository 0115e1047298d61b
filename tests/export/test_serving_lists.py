"""The exported TorchScript module and the MLflow pyfunc model with multi-value and sequence features: they encode
cells of ids (text joined by the separator, or lists in a DataFrame) exactly as the encoder does."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch
from torch import Tensor, nn

from easyrec.data import FeatureEncoder, FeatureSpec
from easyrec.export.pyfunc_model import ExportedModel
from easyrec.export.serving import Predictions, ServingModule

SPEC = FeatureSpec.from_config(
    {
        "categorical": [{"names": ["item"]}, {"names": ["c"], "encoding": "hash", "num_buckets": 7}],
        "multi_value": [
            {"names": ["tags"], "max_length": 3},
            {"names": ["marks"], "max_length": 2, "separator": ";", "encoding": "hash", "num_buckets": 5},
        ],
        "sequence": [{"names": ["history"], "max_length": 4, "embedding_name": "item"}],
    }
)
TEXT = pa.table(
    {
        "item": ["a", "b", "c", "a"],
        "c": ["q", "r", "s", "t"],
        "tags": ["x|y", "y", None, "x|y|z|w"],
        "marks": ["1;2", "3", "", "4;5;6"],
        "history": ["b|c|a|d|e", "", "a", "zz|a"],
        "label": [1.0, 0.0, 1.0, 0.0],
    }
)
INTEGERS = pa.table(
    {
        "item": [1, 2, 3, 1],
        "c": [5, 6, 7, 8],
        "tags": [[1, 2], [2], None, [1, 2, 3, 4]],
        "marks": ["1;2", "3", "", "4;5;6"],
        "history": [[2, 3, 1, 4, 5], [], [1], [None, 1]],
        "label": [1.0, 0.0, 1.0, 0.0],
    }
)


class EncodedInputs(nn.Module):
    """A model that returns its encoded inputs: ``(B, F + ΣL)``."""

    def forward(self, dense: Tensor, sparse: Tensor, lists: Tensor) -> Tensor:
        return torch.cat([sparse, lists], 1).float()


class Identity:
    """A head whose scores are the model's outputs."""

    def outputs(self, outputs: Tensor) -> Tensor:
        return outputs

    def scores(self, outputs: Tensor) -> Tensor:
        return outputs


def serving(table: pa.Table) -> tuple[torch.jit.ScriptModule, Tensor]:
    """The scripted serving module of an encoder fitted on ``table``, and what the encoder makes of ``table``."""
    encoder = FeatureEncoder(SPEC).fit(table, "train")
    split = encoder.encode(table, "train")
    traced = torch.jit.trace(
        Predictions(EncodedInputs(), [Identity()], with_lists=True), (split.dense, split.sparse, split.lists)
    )
    return torch.jit.script(ServingModule(traced, encoder.state_dict(), SPEC)), torch.cat(
        [split.sparse, split.lists], 1
    )


def text_cells(values: list) -> list[str]:
    return [
        "" if v is None else "|".join("" if i is None else str(i) for i in v) if isinstance(v, list) else v
        for v in values
    ]


@pytest.mark.parametrize("table", [TEXT, INTEGERS], ids=["text", "integers"])
def test_the_serving_module_encodes_list_cells_as_the_encoder_does(table):
    module, expected = serving(table)
    assert module.list_names == ["tags", "marks", "history"]
    ints = torch.tensor([table[n].to_pylist() for n in module.int_names], dtype=torch.int64).reshape(-1, 4).T
    strs = [table[n].to_pylist() for n in module.str_names]
    cells = [text_cells(table[n].to_pylist()) for n in module.list_names]
    got = module(torch.zeros(4, 0, dtype=torch.float64), ints, strs, cells)
    assert torch.equal(got, expected.float())
    with pytest.raises(torch.jit.Error, match="pass the cells of tags, marks, history"):
        module(torch.zeros(4, 0, dtype=torch.float64), ints, strs)


def test_the_pyfunc_model_takes_lists_or_separated_strings(tmp_path):
    module, expected = serving(TEXT)
    torch.jit.save(module, str(tmp_path / "model.pt"))
    signature = {"dense": [], "int_ids": [], "string_ids": ["item", "c"], "outputs": [f"o{k}" for k in range(11)]}
    signature["lists"] = dict(zip(module.list_names, module.list_separators, strict=True))
    (tmp_path / "signature.json").write_text(json.dumps(signature))
    model = ExportedModel()
    artifacts = {"model": str(tmp_path / "model.pt"), "signature": str(tmp_path / "signature.json")}
    model.load_context(SimpleNamespace(artifacts=artifacts))
    frame = TEXT.to_pandas()
    frame["tags"] = [["x", "y"], ["y"], None, ["x", "y", "z", "w"]]  # python lists; the others as text
    frame["marks"] = [("1", "2"), "3", float("nan"), "4;5;6"]
    got = model.predict(None, frame)
    assert list(got.columns) == signature["outputs"]
    assert torch.equal(torch.tensor(got.to_numpy()), expected.float())
    with pytest.raises(ValueError, match="the input has no column 'history'"):
        model.predict(None, frame.drop(columns="history"))
