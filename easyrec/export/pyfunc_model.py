"""The MLflow pyfunc model of an ``easyrec export``: a DataFrame of raw feature columns -> a DataFrame of predictions.

This file is standalone (MLflow copies it next to the model, "models from code"): it imports torch, numpy, pandas,
json and the standard library, and mlflow only to register itself, never easyrec. Its artifacts are the export's
``model.pt`` (TorchScript: the encoding, the model and its heads) and ``signature.json`` (the columns).

Example::

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict(pandas.DataFrame({"I1": [3.0], ..., "C1": ["68fd1e64"], ...}))  # columns "prediction", ...
    # multi-value and sequence columns: lists of ids, or strings of ids joined by the feature's separator
    model.predict(pandas.DataFrame({..., "genres": [["Action", "Comedy"]], "history": ["12|7|9"]}))
"""

import json
import math

import numpy as np
import pandas as pd
import torch

INT_NULL = -(2**63)  # a raw integer id that stands for an empty cell, as in easyrec/export/serving.py


class MissingColumnsError(ValueError):
    """The input lacks feature columns the model needs."""


def text_of(value: object) -> str:
    """A raw id as the text a CSV file would hold: ``""`` for an empty cell, ``7`` for 7.0."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def cell_text(value: object, separator: str) -> str:
    """A cell of a multi-value or sequence column as the text a CSV file would hold: a list (or array) of ids
    joined by ``separator``, a string as it is, ``""`` for an empty cell."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return separator.join(text_of(item) for item in value)
    return text_of(value)


class ExportedModel:
    """Loads ``model.pt`` and ``signature.json``; :meth:`predict` takes the raw columns by name."""

    def load_context(self, context: object) -> None:
        artifacts = context.artifacts
        with open(artifacts["signature"], encoding="utf-8") as handle:
            self.signature = json.load(handle)
        self.module = torch.jit.load(artifacts["model"], map_location="cpu")
        self.module.eval()

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a signature
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        signature = self.signature
        dense_names, int_names, str_names = signature["dense"], signature["int_ids"], signature["string_ids"]
        lists = signature.get("lists") or {}  # list column -> its separator (exports before lists have none)
        needed = [*dense_names, *int_names, *str_names, *lists]
        missing = [name for name in needed if name not in model_input.columns]
        if missing:
            raise MissingColumnsError(
                f"the input has no column {', '.join(repr(n) for n in missing)}; the model reads: {', '.join(needed)}"
            )
        rows = len(model_input)
        dense = np.empty((rows, len(dense_names)), dtype=np.float64)
        for j, name in enumerate(dense_names):
            dense[:, j] = pd.to_numeric(model_input[name], errors="raise").astype("float64").to_numpy()
        int_ids = np.empty((rows, len(int_names)), dtype=np.int64)
        for j, name in enumerate(int_names):
            column = pd.to_numeric(model_input[name], errors="raise")
            empty = column.isna().to_numpy()
            int_ids[:, j] = np.where(empty, INT_NULL, column.fillna(0).astype("int64").to_numpy())
        str_ids = [[text_of(value) for value in model_input[name].tolist()] for name in str_names]
        cells = [
            [cell_text(value, separator) for value in model_input[name].tolist()] for name, separator in lists.items()
        ]
        with torch.no_grad():
            scores = self.module(torch.from_numpy(dense), torch.from_numpy(int_ids), str_ids, cells if lists else None)
        return pd.DataFrame(scores.numpy(), columns=signature["outputs"], index=model_input.index)


try:  # MLflow loads this file as the model's code ("models from code")
    import mlflow.pyfunc
    from mlflow.models import set_model

    class ExportedPythonModel(ExportedModel, mlflow.pyfunc.PythonModel):
        """:class:`ExportedModel` as an MLflow ``PythonModel``."""

    set_model(ExportedPythonModel())
except ImportError:  # torch alone can still use ExportedModel
    pass
