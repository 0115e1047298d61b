"""Data sources, feature encoding and batches.

The names load their module on first use (PEP 562), so that checking a data file (a file source's module reads
files with pyarrow) does not load torch, which the batches need: a missing file is reported in about a second.
"""

import importlib
from typing import Any

_MODULES = {
    "Batch": "batches",
    "EncodedSplit": "batches",
    "CSVData": "csv_data",
    "CategoricalFeatures": "features",
    "DenseFeatures": "features",
    "FeatureEncoder": "features",
    "FeatureSpec": "features",
    "InputSpec": "features",
    "FileData": "files",
    "ParquetData": "parquet_data",
    "SyntheticCTRData": "synthetic",
    "generate_clicks": "synthetic",
    "TabularData": "tabular",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
