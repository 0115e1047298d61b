"""Seeded Criteo-like CTR data drawn from a hidden click model whose true probabilities are kept.

Layout: 13 non-negative heavy-tailed count features ``I1..I13``, 26 categorical features ``C1..C26``
whose ids follow Zipf laws over vocabularies from 10 to 100,000, a 0/1 ``label`` (click), and a ``session`` id
that groups consecutive rows into lists of mean length 10 (for listwise losses and grouped AUC; the click model
does not depend on it). For multi-task, value and distillation losses, each row also has:

* ``conversion``: 0/1, 1 only after a click (``P(conversion) = p·q``, q the conversion rate given a click, whose
  logit shares part of the click logit and has effects of its own);
* ``value``: ``exp(N(m, 0.8))`` for a converter (m depends on the features), 0 otherwise: a zero-inflated
  lognormal lifetime value;
* ``action``: 0 (no click), 1 (click) or 2 (conversion), for multi-class losses;
* ``teacher``: a teacher model's click probability, ``sigmoid(logit(p) + N(0, 0.3))``, for distillation;
* ``weight``: a per-sample weight (1 for 80% of the rows, 2 or 0.5 for the rest, independent of the labels), to
  exercise weighted losses (``data.features.weight=weight``).

Hidden model (logit), each block rescaled to a fixed standard deviation:
    bias + dense part (linear in standardised log1p(I) + one dense x dense term)
         + first-order categorical effects e_f[id]
         + 10 low-rank (k=4) field-pair interactions <U_f[id_f], V_g[id_g]>
         + 2 dense x categorical interactions z_j * a_f[id_f]
The bias is solved so that the mean click probability is ``positive_rate``; ``label ~ Bernoulli(p)``.
Since p is known, the Bayes-optimal ("oracle") AUC and logloss of the eval split are exact.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import torch
from annotated_types import Ge
from torch import Tensor

from easyrec.config.arguments import Probability, checked
from easyrec.data.features import FeatureSpec
from easyrec.data.tabular import TabularData

log = logging.getLogger(__name__)

NUM_DENSE, NUM_CATEGORICAL = 13, 26
FIELD_PAIRS = [(0, 5), (1, 9), (2, 14), (4, 20), (6, 11), (7, 23), (10, 17), (12, 25), (15, 19), (3, 22)]
DENSE_BY_CATEGORICAL = [(2, 8), (5, 16)]
CONVERSION_FIELDS = (1, 4, 8, 13, 21)  # fields with effects of their own on the conversion rate
CONVERSION_RATE = 0.2  # mean P(conversion | click)
BLOCK_STD = {"dense": 0.55, "first_order": 0.95, "field_pairs": 0.75, "dense_by_categorical": 0.35}


def _rescale(x: np.ndarray, target_std: float) -> np.ndarray:
    std = x.std()
    return x * (target_std / std) if std > 0 else x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _zipf_ids(rng: np.random.Generator, vocab: int, exponent: float, n: int) -> np.ndarray:
    probs = np.arange(1, vocab + 1, dtype=np.float64) ** (-exponent)
    ids = rng.choice(vocab, size=n, p=probs / probs.sum())
    return rng.permutation(vocab)[ids].astype(np.int32)  # an id's value says nothing about its frequency


@functools.lru_cache(maxsize=1)
def generate_clicks(num_rows: int, seed: int, positive_rate: float = 0.25) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Draw ``num_rows`` rows; return the table (``I1..I13, C1..C26, label, session, conversion, value, action,
    teacher, weight``) and the true ``(N,)`` probabilities of the binary labels: ``{"label": p, "conversion": p·q}``.

    The last result is kept (a pure function of its arguments): the jobs of a sweep, which Hydra runs one after
    another in one process, draw the data once. Treat the returned arrays as read-only.
    """
    rng = np.random.default_rng(seed)
    vocab = np.round(np.geomspace(10, 100_000, NUM_CATEGORICAL)).astype(np.int64)
    exponents = rng.uniform(1.05, 1.35, size=NUM_CATEGORICAL)
    cat = np.empty((num_rows, NUM_CATEGORICAL), dtype=np.int32)
    for f in range(NUM_CATEGORICAL):
        cat[:, f] = _zipf_ids(rng, int(vocab[f]), exponents[f], num_rows)

    mu = rng.uniform(0.5, 4.0, size=NUM_DENSE)
    sigma = rng.uniform(0.5, 1.5, size=NUM_DENSE)
    shift = rng.normal(0, 0.5, size=int(vocab[3]))  # a few counts depend on a categorical field, as in Criteo
    raw = rng.normal(mu, sigma, size=(num_rows, NUM_DENSE))
    raw[:, :4] += shift[cat[:, 3]][:, None]
    dense = np.floor(np.expm1(np.clip(raw, 0, None))).astype(np.float32)
    z = np.log1p(dense.astype(np.float64))
    z = (z - z.mean(0)) / (z.std(0) + 1e-9)

    dense_part = _rescale(z @ rng.normal(0, 1, size=NUM_DENSE) + 0.8 * z[:, 0] * z[:, 1], BLOCK_STD["dense"])
    first = np.zeros(num_rows)
    for f in range(NUM_CATEGORICAL):
        first += rng.normal(0, rng.uniform(0.2, 1.0), size=int(vocab[f]))[cat[:, f]]
    first = _rescale(first, BLOCK_STD["first_order"])
    pairs = np.zeros(num_rows)
    for a, b in FIELD_PAIRS:
        u = rng.normal(0, 1, size=(int(vocab[a]), 4))
        v = rng.normal(0, 1, size=(int(vocab[b]), 4))
        pairs += np.einsum("nk,nk->n", u[cat[:, a]], v[cat[:, b]])
    pairs = _rescale(pairs, BLOCK_STD["field_pairs"])
    crossed = np.zeros(num_rows)
    for j, f in DENSE_BY_CATEGORICAL:
        crossed += z[:, j] * rng.normal(0, 1, size=int(vocab[f]))[cat[:, f]]
    crossed = _rescale(crossed, BLOCK_STD["dense_by_categorical"])

    logit = dense_part + first + pairs + crossed
    logit = logit + _bias_for_rate(logit, positive_rate)
    p = _sigmoid(logit)
    label = (rng.random(num_rows) < p).astype(np.float32)

    columns: dict[str, np.ndarray] = {f"I{j + 1}": dense[:, j] for j in range(NUM_DENSE)}
    columns.update({f"C{f + 1}": cat[:, f] for f in range(NUM_CATEGORICAL)})
    columns["label"] = label
    columns["session"] = _sessions(np.random.default_rng([seed, 1]), num_rows)
    # drawn from their own generator, so the click data stays the same as without them
    after_click, q = _conversions(np.random.default_rng([seed, 2]), logit, z, cat, label)
    columns.update(after_click)
    return pa.table(columns), {"label": p.astype(np.float32), "conversion": (p * q).astype(np.float32)}


def _bias_for_rate(logit: np.ndarray, rate: float, weights: np.ndarray | None = None) -> float:
    """The bias b with ``mean(sigmoid(logit + b)) = rate``, the mean weighted by ``weights`` (bisection)."""
    low, high = -10.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if np.average(_sigmoid(logit + mid), weights=weights) < rate else (low, mid)
    return (low + high) / 2


def _conversions(
    rng: np.random.Generator, click_logit: np.ndarray, z: np.ndarray, cat: np.ndarray, label: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``conversion``, ``value``, ``action``, ``teacher`` and ``weight`` columns, and q = P(conversion | click)
    ``(N,)``; ``click_logit`` is logit(p)."""
    num_rows = len(label)
    own = np.zeros(num_rows)
    for f in CONVERSION_FIELDS:
        vocab = int(cat[:, f].max()) + 1
        own += rng.normal(0, 1, size=vocab)[cat[:, f]]
    own = _rescale(own, 0.8) + _rescale(z[:, 2] - z[:, 7], 0.3)
    cvr_logit = 0.5 * click_logit / (click_logit.std() + 1e-9) + own
    q = _sigmoid(cvr_logit + _bias_for_rate(cvr_logit, CONVERSION_RATE, weights=_sigmoid(click_logit)))
    conversion = (label > 0) & (rng.random(num_rows) < q)
    log_value_mean = 3.0 + _rescale(own + 0.5 * z[:, 0], 0.6)
    value = np.where(conversion, np.exp(rng.normal(log_value_mean, 0.8)), 0.0)
    teacher = _sigmoid(click_logit + rng.normal(0, 0.3, size=num_rows))
    weight = rng.choice(np.array([1.0, 2.0, 0.5], dtype=np.float32), size=num_rows, p=[0.8, 0.1, 0.1])
    columns = {
        "conversion": conversion.astype(np.float32),
        "value": value.astype(np.float32),
        "action": (label + conversion).astype(np.float32),
        "teacher": teacher.astype(np.float32),
        "weight": weight,
    }
    return columns, q


def _sessions(rng: np.random.Generator, num_rows: int) -> np.ndarray:
    """``(N,) int64`` ids of consecutive runs of rows, geometric lengths of mean 10 (drawn apart from the clicks)."""
    lengths = rng.geometric(0.1, size=num_rows // 5 + 10)
    while lengths.sum() < num_rows:
        lengths = np.concatenate([lengths, rng.geometric(0.1, size=num_rows // 5 + 10)])
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)[:num_rows]


class SyntheticCTRData(TabularData):
    """Criteo-like data generated in memory (see the module docstring); the last rows are the eval split.

    Args:
        num_rows: train + eval rows.
        eval_fraction: share of the rows in the eval split.
        positive_rate: mean click probability.
        **kwargs: see :class:`TabularData` (``seed`` also seeds the generator).
    """

    @checked
    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        num_rows: Annotated[int, Ge(100)] = 500_000,
        eval_fraction: Probability = 0.1,
        positive_rate: Probability = 0.25,
        **kwargs: Any,
    ) -> None:
        super().__init__(features, **kwargs)
        self.num_rows, self.eval_fraction, self.positive_rate = num_rows, eval_fraction, positive_rate
        self._eval_p: dict[str, Tensor] = {}

    def read_splits(self) -> tuple[tuple[pa.Table, str], tuple[pa.Table, str]]:
        table, p = generate_clicks(self.num_rows, self.seed, self.positive_rate)
        num_eval = max(1, int(round(self.num_rows * self.eval_fraction)))
        num_train = self.num_rows - num_eval
        self._eval_p = {column: torch.from_numpy(probs[num_train:]) for column, probs in p.items()}
        return (
            (table.slice(0, num_train), f"synthetic train split (seed {self.seed})"),
            (table.slice(num_train), f"synthetic eval split (seed {self.seed})"),
        )

    def eval_oracle_probs(self, column: str) -> Tensor | None:
        return self._eval_p.get(column)
