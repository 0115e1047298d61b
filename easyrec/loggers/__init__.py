"""Experiment trackers."""

from easyrec.loggers.base import Logger, NullLogger
from easyrec.loggers.mlflow import MLflowLogger

__all__ = ["Logger", "MLflowLogger", "NullLogger"]
