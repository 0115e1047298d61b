"""A model of a user's own, for the tests of what a checkpoint's config may build (tests/test_trust.py)."""

from easyrec.models import DeepFM


class OwnDeepFM(DeepFM):
    """DeepFM under another name: a component easyrec does not ship."""
