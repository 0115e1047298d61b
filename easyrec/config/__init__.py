"""Config schemas and their validation."""

from easyrec.config.checks import validate

__all__ = ["validate"]
