"""A user's own component, as a --config-dir option would name it: a signature with annotations, nothing else."""

from typing import Annotated, Literal

from annotated_types import Ge

from easyrec.early_stopping import NeverStop


class StopAfterEvaluations(NeverStop):
    """Never stops either; it only declares its options, for the config check to bind them."""

    def __init__(self, evaluations: Annotated[int, Ge(1)] = 3, mode: Literal["max", "min"] = "max") -> None:
        self.evaluations, self.mode = evaluations, mode
