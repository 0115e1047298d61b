"""Building blocks of models, one job each."""

from easyrec.modules.embedding import FieldEmbedding
from easyrec.modules.fm import FactorizationMachine
from easyrec.modules.linear import LinearTerms
from easyrec.modules.mlp import MLP

__all__ = ["MLP", "FactorizationMachine", "FieldEmbedding", "LinearTerms"]
