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
With the optional behaviour columns (:class:`Behaviour`: a target ``item``, the user's ``history`` of items and
``tags``, off by default), also
         + a first-order effect of the item + the item's strongest match in the history + the tags' mean effect
The bias is solved so that the mean click probability is ``positive_rate``; ``label ~ Bernoulli(p)``.
Since p is known, the Bayes-optimal ("oracle") AUC and logloss of the eval split are exact.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
from annotated_types import Ge

from easyrec.config.arguments import PositiveInt, Probability, checked
from easyrec.data.features import FeatureSpec
from easyrec.data.tabular import TabularData

log = logging.getLogger(__name__)

NUM_DENSE, NUM_CATEGORICAL = 13, 26
FIELD_PAIRS = [(0, 5), (1, 9), (2, 14), (4, 20), (6, 11), (7, 23), (10, 17), (12, 25), (15, 19), (3, 22)]
DENSE_BY_CATEGORICAL = [(2, 8), (5, 16)]
CONVERSION_FIELDS = (1, 4, 8, 13, 21)  # fields with effects of their own on the conversion rate
CONVERSION_RATE = 0.2  # mean P(conversion | click)
BLOCK_STD = {"dense": 0.55, "first_order": 0.95, "field_pairs": 0.75, "dense_by_categorical": 0.35}
BEHAVIOUR_STD = {"item": 0.4, "history": 1.5, "tags": 0.4}  # the blocks of the optional columns (Behaviour)
ITEMS_PER_INTEREST = 10  # items of one hidden interest (items alike: a user who wants one wants the others)
MAX_INTERESTS = 6  # a user's hidden interests: 2 to this many
STRONG_MATCH = 0.5  # the history's effect: how far the cosine similarity of the strongest match is above this
LATENT_DIM, ITEM_SPREAD = 8, 0.5  # items' hidden vectors: their interest's plus N(0, spread²) noise, normalised


#: the column of the true probability of each binary label, in the tables of SyntheticCTRData and easyrec generate
PROBABILITY_COLUMNS = {"label": "label_probability", "conversion": "conversion_probability"}


def _fitted(stats: dict[str, Any], key: str, fit: Callable[[], Any]) -> Any:
    """``stats[key]``, set to ``fit()`` by the first call: the statistics of the first rows drawn (all of them for
    generate_clicks, the calibration sample for a ClickModel)."""
    if key not in stats:
        stats[key] = fit()
    return stats[key]


def _rescale(x: np.ndarray, target_std: float, stats: dict[str, Any], key: str) -> np.ndarray:
    """``x`` scaled to standard deviation ``target_std`` (by the first rows' standard deviation, see _fitted)."""
    std = _fitted(stats, key, x.std)
    return x * (target_std / std) if std > 0 else x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _vocabularies() -> np.ndarray:
    """``(26,) int64`` vocabulary sizes, from 10 to 100,000."""
    return np.round(np.geomspace(10, 100_000, NUM_CATEGORICAL)).astype(np.int64)


def _zipf_probabilities(vocab: int, exponent: float) -> np.ndarray:
    probs = np.arange(1, vocab + 1, dtype=np.float64) ** (-exponent)
    return probs / probs.sum()


def _zipf_ids(rng: np.random.Generator, vocab: int, exponent: float, n: int) -> np.ndarray:
    ids = rng.choice(vocab, size=n, p=_zipf_probabilities(vocab, exponent))
    return rng.permutation(vocab)[ids].astype(np.int32)  # an id's value says nothing about its frequency


def _counts(raw: np.ndarray) -> np.ndarray:
    """``(N, 13) float32`` non-negative heavy-tailed counts from normal draws ``raw``."""
    return np.floor(np.expm1(np.clip(raw, 0, None))).astype(np.float32)


def _standardized(dense: np.ndarray, stats: dict[str, Any]) -> np.ndarray:
    """``(N, 13) float64`` standardised log1p of the counts (by the calibration sample's statistics once set)."""
    z = np.log1p(dense.astype(np.float64))
    mean, std = _fitted(stats, "z_mean", lambda: z.mean(0)), _fitted(stats, "z_std", lambda: z.std(0))
    return (z - mean) / (std + 1e-9)


@dataclass
class Effects:
    """The hidden click model's effects (see the module docstring): dense weights, and per-id tables."""

    dense: np.ndarray  # (13,)
    first_order: list[np.ndarray]  # (vocab_f,) per categorical field
    pairs: list[tuple[np.ndarray, np.ndarray]]  # (vocab_a, 4), (vocab_b, 4) per FIELD_PAIRS
    crossed: list[np.ndarray]  # (vocab_f,) per DENSE_BY_CATEGORICAL

    @classmethod
    def draw(cls, rng: np.random.Generator, vocab: np.ndarray) -> Effects:
        dense = rng.normal(0, 1, size=NUM_DENSE)
        first_order = [rng.normal(0, rng.uniform(0.2, 1.0), size=int(vocab[f])) for f in range(NUM_CATEGORICAL)]
        pairs = [
            (rng.normal(0, 1, size=(int(vocab[a]), 4)), rng.normal(0, 1, size=(int(vocab[b]), 4)))
            for a, b in FIELD_PAIRS
        ]
        crossed = [rng.normal(0, 1, size=int(vocab[f])) for _, f in DENSE_BY_CATEGORICAL]
        return cls(dense, first_order, pairs, crossed)

    def logit(
        self,
        z: np.ndarray,
        cat: np.ndarray,
        positive_rate: float,
        stats: dict[str, Any],
        extra: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(N,)`` click logit of rows with standardised counts ``z (N, 13)`` and ids ``cat (N, 26)``: each block
        rescaled, plus ``extra (N,)`` (the behaviour columns' blocks) and the bias that makes the mean click
        probability ``positive_rate`` (fitted by the first call with these ``stats``)."""
        num_rows = len(z)
        dense_part = _rescale(z @ self.dense + 0.8 * z[:, 0] * z[:, 1], BLOCK_STD["dense"], stats, "dense")
        first = np.zeros(num_rows)
        for f, table in enumerate(self.first_order):
            first += table[cat[:, f]]
        first = _rescale(first, BLOCK_STD["first_order"], stats, "first_order")
        pairs = np.zeros(num_rows)
        for (a, b), (u, v) in zip(FIELD_PAIRS, self.pairs, strict=True):
            pairs += np.einsum("nk,nk->n", u[cat[:, a]], v[cat[:, b]])
        pairs = _rescale(pairs, BLOCK_STD["field_pairs"], stats, "field_pairs")
        crossed = np.zeros(num_rows)
        for (j, f), table in zip(DENSE_BY_CATEGORICAL, self.crossed, strict=True):
            crossed += z[:, j] * table[cat[:, f]]
        crossed = _rescale(crossed, BLOCK_STD["dense_by_categorical"], stats, "dense_by_categorical")
        logit = dense_part + first + pairs + crossed
        if extra is not None:
            logit = logit + extra
        return logit + _fitted(stats, "bias", lambda: _bias_for_rate(logit, positive_rate))


@dataclass(frozen=True)
class Behaviour:
    """The optional columns of :func:`generate_clicks` for sequence models (``data=synthetic`` options; 0 = off).

    ``num_items > 0`` adds ``item`` (the target item's id, ``int32``) and ``history`` (the items the user acted on
    before, ids of the same space: a list of 1 to ``max_history`` ``int32`` ids). Each item has a hidden unit
    vector of :data:`LATENT_DIM` dimensions: that of its interest (a group of :data:`ITEMS_PER_INTEREST` items)
    plus noise. Each user has 2 to :data:`MAX_INTERESTS` interests (popular ones more often) of uneven weights
    (Dirichlet(0.5)), from which the history is drawn; the target item is any item (popular interests more often).
    The click logit gains the target's strongest match in the history: how far the largest cosine similarity
    between its vector and a history item's is above :data:`STRONG_MATCH` (0 if not). A maximum of thresholded
    per-item similarities is what attention over the history (a weight per item from the pair, then a sum) can
    compute, and what no function of a mean- or sum-pooled history can: the pool of several interests keeps their
    average, not how close the nearest item is. The target item also
    has a first-order effect. ``num_tags > 0`` adds ``tags``: 0 to ``max_tags`` ids of ``num_tags`` (Zipf) whose
    mean effect enters the logit: a pooled effect. These columns are drawn from generators of their own: the other
    columns are those drawn without them; labels and probabilities change by these effects.
    """

    num_items: int = 0
    max_history: int = 30
    num_tags: int = 0
    max_tags: int = 5


def _listed(ids: np.ndarray) -> pa.ListArray:
    """``(N, L)`` ids padded with -1 after each row's last id -> a list<int32> column."""
    lengths = (ids >= 0).sum(1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids[ids >= 0].astype(np.int32)))


def _interest_items(rng: np.random.Generator, interests: np.ndarray, num_items: int) -> np.ndarray:
    """A uniform item of each hidden interest in ``interests`` (any shape): item index ``interest + k·clusters``."""
    clusters = num_items // ITEMS_PER_INTEREST
    size = (num_items - interests + clusters - 1) // clusters  # items of each interest (the last ones have more)
    return interests + clusters * np.floor(rng.random(interests.shape) * size).astype(np.int64)


def _history(rng: np.random.Generator, num_rows: int, num_items: int, max_history: int) -> tuple[np.ndarray, ...]:
    """``(item (N,) int32, history (N, max_history) int32 padded with -1, match (N,) float64)``: the target item,
    the history, and the target's strongest match in the history, max over its items of the cosine similarity of
    their hidden vectors (see :class:`Behaviour`)."""
    clusters = num_items // ITEMS_PER_INTEREST
    centers = rng.normal(size=(clusters, LATENT_DIM))
    vectors = centers[np.arange(num_items) % clusters] + ITEM_SPREAD * rng.normal(size=(num_items, LATENT_DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    popular = np.cumsum(_zipf_probabilities(clusters, 1.1))

    def interest(shape: Any) -> np.ndarray:  # interests drawn by popularity
        return np.minimum(np.searchsorted(popular, rng.random(shape) * popular[-1]), clusters - 1)

    interests = interest((num_rows, MAX_INTERESTS))
    count = rng.integers(2, MAX_INTERESTS + 1, size=num_rows)
    weights = rng.gamma(0.5, size=(num_rows, MAX_INTERESTS)) * (np.arange(MAX_INTERESTS) < count[:, None])
    cumulative = np.cumsum(weights, 1) / weights.sum(1, keepdims=True)
    item = _interest_items(rng, interest(num_rows), num_items)
    length = rng.integers(1, max_history + 1, size=num_rows)
    history = np.full((num_rows, max_history), -1, dtype=np.int64)
    match = np.full(num_rows, -1.0)
    rows, target = np.arange(num_rows), vectors[item]
    for position in range(max_history):  # every row's item at this position: memory O(N·LATENT_DIM)
        slot = np.minimum((rng.random((num_rows, 1)) > cumulative).sum(1), count - 1)  # rounding at the top
        drawn = _interest_items(rng, interests[rows, slot], num_items)
        valid = position < length
        history[:, position] = np.where(valid, drawn, -1)
        similarity = np.einsum("nk,nk->n", vectors[drawn], target)
        match = np.where(valid, np.maximum(match, similarity), match)
    permutation = rng.permutation(num_items).astype(np.int32)  # an id says nothing of its interest
    return permutation[item], np.where(history >= 0, permutation[history], -1), match


def _behaviour(
    seed: int, num_rows: int, options: Behaviour, stats: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray | None]:
    """The columns of ``options`` (see :class:`Behaviour`) and their ``(N,)`` part of the click logit, each block
    rescaled to :data:`BEHAVIOUR_STD`; drawn from the streams ``[seed, 7]`` (items) and ``[seed, 8]`` (tags)."""
    columns: dict[str, Any] = {}
    logit = np.zeros(num_rows)
    if options.num_items:
        rng = np.random.default_rng([seed, 7])
        item, history, match = _history(rng, num_rows, options.num_items, options.max_history)
        effect = rng.normal(0, 1, size=options.num_items)
        columns["item"], columns["history"] = item, _listed(history)
        logit += _rescale(effect[item], BEHAVIOUR_STD["item"], stats, "item")
        strong = np.maximum(match - STRONG_MATCH, 0.0)
        strong -= _fitted(stats, "history_mean", strong.mean)  # centred: the bias's bisection stays within ±10
        logit += _rescale(strong, BEHAVIOUR_STD["history"], stats, "history")
    if options.num_tags:
        rng = np.random.default_rng([seed, 8])
        ids = _zipf_ids(rng, options.num_tags, 1.1, num_rows * options.max_tags).reshape(num_rows, -1)
        tags = np.where(
            np.arange(options.max_tags) < rng.integers(0, options.max_tags + 1, size=(num_rows, 1)), ids, -1
        )
        effect = rng.normal(0, 1, size=options.num_tags)
        pooled = (effect[tags] * (tags >= 0)).sum(1) / np.maximum((tags >= 0).sum(1), 1)
        columns["tags"] = _listed(tags)
        logit += _rescale(pooled, BEHAVIOUR_STD["tags"], stats, "tags")
    return columns, (logit if columns else None)


@functools.lru_cache(maxsize=1)
def generate_clicks(
    num_rows: int, seed: int, positive_rate: float = 0.25, behaviour: Behaviour = Behaviour()
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Draw ``num_rows`` rows; return the table (``I1..I13, C1..C26``, the columns of ``behaviour`` if any: ``item,
    history, tags``, then ``label, session, conversion, value, action, teacher, weight``) and the true ``(N,)``
    probabilities of the binary labels: ``{"label": p, "conversion": p·q}``.

    Every statistic (block scales, bias) is that of these rows; :class:`ClickModel` draws rows in chunks instead.
    The last result is kept (a pure function of its arguments): the jobs of a sweep, which Hydra runs one after
    another in one process, draw the data once. Treat the returned arrays as read-only.
    """
    rng = np.random.default_rng(seed)
    vocab = _vocabularies()
    exponents = rng.uniform(1.05, 1.35, size=NUM_CATEGORICAL)
    cat = np.empty((num_rows, NUM_CATEGORICAL), dtype=np.int32)
    for f in range(NUM_CATEGORICAL):
        cat[:, f] = _zipf_ids(rng, int(vocab[f]), exponents[f], num_rows)

    mu = rng.uniform(0.5, 4.0, size=NUM_DENSE)
    sigma = rng.uniform(0.5, 1.5, size=NUM_DENSE)
    shift = rng.normal(0, 0.5, size=int(vocab[3]))  # a few counts depend on a categorical field, as in Criteo
    raw = rng.normal(mu, sigma, size=(num_rows, NUM_DENSE))
    raw[:, :4] += shift[cat[:, 3]][:, None]
    dense = _counts(raw)
    stats: dict[str, Any] = {}  # every statistic from these rows
    z = _standardized(dense, stats)
    behaviour_columns, behaviour_logit = _behaviour(seed, num_rows, behaviour, stats)
    logit = Effects.draw(rng, vocab).logit(z, cat, positive_rate, stats, behaviour_logit)
    p = _sigmoid(logit)
    label = (rng.random(num_rows) < p).astype(np.float32)

    columns: dict[str, Any] = {f"I{j + 1}": dense[:, j] for j in range(NUM_DENSE)}
    columns.update({f"C{f + 1}": cat[:, f] for f in range(NUM_CATEGORICAL)})
    columns.update(behaviour_columns)
    columns["label"] = label
    columns["session"] = _sessions(np.random.default_rng([seed, 1]), num_rows)
    # drawn from their own generator, so the click data stays the same as without them
    rng = np.random.default_rng([seed, 2])
    tables = [rng.normal(0, 1, size=int(cat[:, f].max()) + 1) for f in CONVERSION_FIELDS]
    after_click, q = _conversions(rng, logit, z, cat, label, tables, stats)
    columns.update(after_click)
    return pa.table(columns), {"label": p.astype(np.float32), "conversion": (p * q).astype(np.float32)}


class ClickModel:
    """The hidden click model of :func:`generate_clicks`, drawn once from ``seed``, whose rows are then drawn in
    chunks of any size: memory is bounded whatever the number of rows (``easyrec generate``).

    The block scales and biases are fitted on a calibration sample of ``calibration_rows`` rows. The model's
    draws are not those of :func:`generate_clicks` (which draws its parameters between its rows, and fits its
    scales on all of them); the two share the model's form and its helpers.

    Example::

        model = ClickModel(seed=0)
        table = model.rows(np.random.default_rng([0, 5, 0]), 250_000)  # the columns of generate_clicks
        # and label_probability, conversion_probability
    """

    def __init__(self, seed: int, positive_rate: float = 0.25, calibration_rows: int = 200_000) -> None:
        rng = np.random.default_rng([seed, 3])  # apart from the streams of generate_clicks
        self.vocab = _vocabularies()
        exponents = rng.uniform(1.05, 1.35, size=NUM_CATEGORICAL)
        # cumulative Zipf probabilities: an id is where a uniform draw falls (rng.choice would sum them per call)
        self.zipf = [np.cumsum(_zipf_probabilities(int(v), e)) for v, e in zip(self.vocab, exponents, strict=True)]
        self.permutations = [rng.permutation(int(v)).astype(np.int32) for v in self.vocab]
        self.mu = rng.uniform(0.5, 4.0, size=NUM_DENSE)
        self.sigma = rng.uniform(0.5, 1.5, size=NUM_DENSE)
        self.shift = rng.normal(0, 0.5, size=int(self.vocab[3]))
        self.effects = Effects.draw(rng, self.vocab)
        self.conversion_tables = [rng.normal(0, 1, size=int(self.vocab[f])) for f in CONVERSION_FIELDS]
        self.positive_rate = positive_rate
        self.stats: dict[str, Any] = {}
        self.rows(np.random.default_rng([seed, 4]), calibration_rows)  # fits the scales and biases

    def rows(self, rng: np.random.Generator, num_rows: int, first_session: int = 0) -> pa.Table:
        """``num_rows`` rows drawn with ``rng``: the columns of :func:`generate_clicks` and the true probabilities
        (:data:`PROBABILITY_COLUMNS`); session ids start at ``first_session``."""
        cat = np.empty((num_rows, NUM_CATEGORICAL), dtype=np.int32)
        for f, (cumulative, permutation) in enumerate(zip(self.zipf, self.permutations, strict=True)):
            ids = np.searchsorted(cumulative, rng.random(num_rows) * cumulative[-1], side="right")
            cat[:, f] = permutation[np.minimum(ids, len(permutation) - 1)]
        raw = rng.normal(self.mu, self.sigma, size=(num_rows, NUM_DENSE))
        raw[:, :4] += self.shift[cat[:, 3]][:, None]
        dense = _counts(raw)
        z = _standardized(dense, self.stats)
        logit = self.effects.logit(z, cat, self.positive_rate, self.stats)
        p = _sigmoid(logit)
        label = (rng.random(num_rows) < p).astype(np.float32)
        columns: dict[str, np.ndarray] = {f"I{j + 1}": dense[:, j] for j in range(NUM_DENSE)}
        columns.update({f"C{f + 1}": cat[:, f] for f in range(NUM_CATEGORICAL)})
        columns["label"] = label
        columns["session"] = _sessions(rng, num_rows) + first_session
        after_click, q = _conversions(rng, logit, z, cat, label, self.conversion_tables, self.stats)
        columns.update(after_click)
        columns[PROBABILITY_COLUMNS["label"]] = p.astype(np.float32)
        columns[PROBABILITY_COLUMNS["conversion"]] = (p * q).astype(np.float32)
        return pa.table(columns)


def _bias_for_rate(logit: np.ndarray, rate: float, weights: np.ndarray | None = None) -> float:
    """The bias b with ``mean(sigmoid(logit + b)) = rate``, the mean weighted by ``weights`` (bisection)."""
    low, high = -10.0, 10.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if np.average(_sigmoid(logit + mid), weights=weights) < rate else (low, mid)
    return (low + high) / 2


def _conversions(
    rng: np.random.Generator,
    click_logit: np.ndarray,
    z: np.ndarray,
    cat: np.ndarray,
    label: np.ndarray,
    tables: list[np.ndarray],
    stats: dict[str, Any],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``conversion``, ``value``, ``action``, ``teacher`` and ``weight`` columns, and q = P(conversion | click)
    ``(N,)``; ``click_logit`` is logit(p), ``tables`` the conversion effect of each id of CONVERSION_FIELDS."""
    num_rows = len(label)
    own = np.zeros(num_rows)
    for f, table in zip(CONVERSION_FIELDS, tables, strict=True):
        own += table[cat[:, f]]
    own = _rescale(own, 0.8, stats, "conversion_own") + _rescale(z[:, 2] - z[:, 7], 0.3, stats, "conversion_dense")
    cvr_logit = 0.5 * click_logit / (_fitted(stats, "click_std", click_logit.std) + 1e-9) + own
    bias = _fitted(
        stats, "conversion_bias", lambda: _bias_for_rate(cvr_logit, CONVERSION_RATE, weights=_sigmoid(click_logit))
    )
    q = _sigmoid(cvr_logit + bias)
    conversion = (label > 0) & (rng.random(num_rows) < q)
    log_value_mean = 3.0 + _rescale(own + 0.5 * z[:, 0], 0.6, stats, "value")
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
        num_items: > 0: the columns ``item`` (a target item of ``num_items`` ids) and ``history`` (a list of up to
            ``max_history`` items the user acted on), whose match enters the click probability (:class:`Behaviour`).
        max_history: the most items of a ``history``.
        num_tags: > 0: the column ``tags`` (a list of up to ``max_tags`` ids of ``num_tags``, a pooled effect).
        max_tags: the most ids of a ``tags`` cell.
        **kwargs: see :class:`TabularData` (``seed`` also seeds the generator).
    """

    @checked
    def __init__(
        self,
        features: FeatureSpec | Mapping[str, Any],
        num_rows: Annotated[int, Ge(100)] = 500_000,
        eval_fraction: Probability = 0.1,
        positive_rate: Probability = 0.25,
        num_items: Annotated[int, Ge(0)] = 0,
        max_history: PositiveInt = 30,
        num_tags: Annotated[int, Ge(0)] = 0,
        max_tags: PositiveInt = 5,
        **kwargs: Any,
    ) -> None:
        spec = FeatureSpec.from_config(features)
        if not spec.oracle:  # the true probabilities of the labels that have them, for eval/oracle_auc
            known = {name: PROBABILITY_COLUMNS[name] for name in spec.label_names if name in PROBABILITY_COLUMNS}
            spec = dataclasses.replace(spec, oracle=known)
        super().__init__(spec, **kwargs)
        self.num_rows, self.eval_fraction, self.positive_rate = num_rows, eval_fraction, positive_rate
        if 0 < num_items < ITEMS_PER_INTEREST:
            raise ValueError(f"num_items={num_items}: 0 (no item columns) or at least {ITEMS_PER_INTEREST}")
        self.behaviour = Behaviour(num_items, max_history, num_tags, max_tags)

    def read_splits(self) -> tuple[tuple[pa.Table, str], tuple[pa.Table, str]]:
        table, p = generate_clicks(self.num_rows, self.seed, self.positive_rate, self.behaviour)
        for label, probs in p.items():
            table = table.append_column(PROBABILITY_COLUMNS[label], pa.array(probs))
        num_eval = max(1, int(round(self.num_rows * self.eval_fraction)))
        num_train = self.num_rows - num_eval
        return (
            (table.slice(0, num_train), f"synthetic train split (seed {self.seed})"),
            (table.slice(num_train), f"synthetic eval split (seed {self.seed})"),
        )
