"""Data sources, feature encoding and batches."""

from easyrec.data.batches import Batch, EncodedSplit
from easyrec.data.csv_data import CSVData
from easyrec.data.features import CategoricalFeatures, DenseFeatures, FeatureEncoder, FeatureSpec, InputSpec
from easyrec.data.files import FileData
from easyrec.data.parquet_data import ParquetData
from easyrec.data.synthetic import SyntheticCTRData, generate_clicks
from easyrec.data.tabular import TabularData

__all__ = [
    "Batch",
    "CSVData",
    "CategoricalFeatures",
    "DenseFeatures",
    "EncodedSplit",
    "FeatureEncoder",
    "FeatureSpec",
    "FileData",
    "InputSpec",
    "ParquetData",
    "SyntheticCTRData",
    "TabularData",
    "generate_clicks",
]
