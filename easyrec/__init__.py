"""easyrec: train CTR and ranking models from the command line, configured by Hydra, tracked in MLflow."""

__version__ = "0.1.0"
