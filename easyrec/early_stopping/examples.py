"""Example functions for :class:`~easyrec.early_stopping.CustomStop`: ``fn(history, **params)``."""

from __future__ import annotations

from easyrec.errors import ConfigError


def metric_above(history: dict[int, dict[str, float]], metric: str, threshold: float) -> tuple[bool, str]:
    """Stop once the latest evaluation's ``metric`` exceeds ``threshold`` (EasyRec's ``custom_early_stop_func``).

    Example::

        metric_above({100: {"eval/auc": 0.7}, 200: {"eval/auc": 0.81}}, metric="eval/auc", threshold=0.8)
        # (True, "eval/auc 0.81 > 0.8 at step 200")
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ConfigError(f"early_stopping.params.threshold={threshold!r}: must be a number")
    step, metrics = next(reversed(history.items()))
    if metric not in metrics:
        raise ConfigError(
            f"early_stopping.params.metric={metric}: no such metric; the metrics are: {', '.join(sorted(metrics))}"
        )
    value = metrics[metric]
    return value > threshold, f"{metric} {value:.6g} > {threshold:g} at step {step}"
