"""Small helpers shared by the loss tests' plain-Python references."""

from __future__ import annotations

import math

import numpy as np
import torch

LN2, LN3 = math.log(2), math.log(3)


def t(values):
    """A float64 tensor (the references compare in double precision)."""
    return torch.tensor(values, dtype=torch.float64)


def sid(values):
    """Session ids as an int64 tensor."""
    return torch.tensor(values, dtype=torch.long)


def np_log_softmax(x):
    """Numerically stable log-softmax of a 1-D array, in float64."""
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())
