"""A model that records the rows it trains on, for the exact-position tests of streamed input
(tests/runs/test_streaming_runs.py); the run's processes import it, so it lives in a module of its own."""

from __future__ import annotations

import os
import time

import torch
from torch import Tensor

from easyrec.models import DeepFM


class IdRecordingDeepFM(DeepFM):
    """DeepFM that appends the ids of each training forward's rows as one line to the file ``$TRAINED_IDS``
    (``{rank}`` in it: the worker's RANK). The id is dense column 0 (a column read with no transform or
    standardization: exact in float32 up to 2**24), which the model then sees as 0: it is no feature. With
    ``$STALL_AFTER=n``, its training forward n+1 records, then waits until the process is killed (the test kills it
    there: mid-epoch, at a known step)."""

    forwards = 0

    def forward(self, dense: Tensor, sparse: Tensor) -> Tensor:
        """``dense (B, D)``, ``sparse (B, F)`` -> logits ``(B,)``; a micro-batch of 0 rows records nothing."""
        if self.training and len(dense):
            path = os.environ["TRAINED_IDS"].format(rank=os.environ.get("RANK", "0"))
            with open(path, "a") as ids:
                ids.write(" ".join(str(int(v)) for v in dense[:, 0].tolist()) + "\n")
            self.forwards += 1
            if self.forwards > int(os.environ.get("STALL_AFTER", "-1")) >= 0:
                while True:
                    time.sleep(1)
        return super().forward(torch.cat([torch.zeros_like(dense[:, :1]), dense[:, 1:]], dim=1), sparse)
