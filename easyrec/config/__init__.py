"""Config schemas and their validation."""

from easyrec.config.checks import validate
from easyrec.config.schema import register_configs

__all__ = ["register_configs", "validate"]
