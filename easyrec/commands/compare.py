"""``easyrec compare``: runs side by side: the children of a sweep's parent run, or an experiment's runs, in a table
of the params that differ and the chosen metrics, best first; ``--plot`` draws their eval curves."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easyrec.commands import CommandParser
from easyrec.errors import EasyrecError

DESCRIPTION = """\
Compare MLflow runs: TARGET is a sweep's parent run id (its children: `easyrec train -m` prints it) or an
experiment's name or id (its runs, without sweep parents). The table has one row per run, the params whose values
differ between the runs and the chosen metrics (their final values: those of the restored best weights when
there are), sorted by the monitored metric, best first."""

EXAMPLES = """examples:
  easyrec compare easyrec
  easyrec compare 3f2c9a0e5b1d4c7e8f6a2b1c0d9e8f7a --metrics eval/auc eval/logloss --plot curves.png
  easyrec compare deepfm-study --tracking-uri http://mlflow.internal:5000 --sort eval/logloss"""

#: Params that differ between any two runs of a sweep without saying anything about them.
UNINFORMATIVE = {"logger.run_name", "logger.parent_run_id", "early_stopping.trial_id"}


def parser() -> CommandParser:
    parser = CommandParser(
        prog="easyrec compare",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="TARGET", help="a sweep's parent run id, or an experiment's name or id")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="the MLflow store (default: %(default)s)")
    parser.add_argument(
        "--metrics", nargs="+", metavar="METRIC", help="the metric columns (default: the eval/ metrics the runs have)"
    )
    parser.add_argument(
        "--sort", metavar="METRIC", help="sort by this metric (default: the runs' optimized_metric, best first)"
    )
    parser.add_argument("--plot", metavar="PNG", type=Path, help="write the eval curves of the runs to this PNG")
    return parser


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The ``easyrec compare`` command (arguments from ``sys.argv`` when ``argv`` is None); returns the rows."""
    args = parser().parse_args(argv)
    return compare(args.target, args.tracking_uri, args.metrics, args.sort, args.plot)


def compare(
    target: str,
    tracking_uri: str = "sqlite:///mlflow.db",
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    plot: Path | None = None,
) -> list[dict[str, Any]]:
    """Print the table of ``target``'s runs and return its rows (``{"run": ..., "params": ..., "metrics": ...}``)."""
    from easyrec.loggers.mlflow import local_store, open_client

    store = local_store(tracking_uri)
    if store is not None and not store.exists():
        raise EasyrecError(f"--tracking-uri {tracking_uri}: no MLflow store there (in {Path.cwd()})")
    client = open_client(tracking_uri)
    title, runs = find_runs(client, target)
    sort, larger = sort_metric(runs, sort)
    metrics = list(metrics or eval_metrics(runs, sort))
    rows = [
        {
            "run_id": run.info.run_id,
            "run": run.info.run_name,
            "status": run.info.status,
            "params": run.data.params,
            "metrics": {m: final_value(run, m) for m in {*metrics, sort}},
        }
        for run in runs
    ]
    missing = float("-inf") if larger else float("inf")
    rows.sort(key=lambda row: row["metrics"][sort] if row["metrics"][sort] is not None else missing, reverse=larger)
    differing = differing_params(rows)
    print_table(title, rows, differing, metrics)
    if plot is not None:
        plot_curves(client, rows, metrics, plot)
        print(f"eval curves of {len(rows)} runs: {plot}")
    return [{**row, "params": {key: row["params"].get(key) for key in differing}} for row in rows]


def find_runs(client: Any, target: str) -> tuple[str, list[Any]]:
    """The runs ``target`` names: a parent run's children, or an experiment's runs (sweep parents left out)."""
    from mlflow.exceptions import MlflowException

    try:
        parent = client.get_run(target)
    except MlflowException:
        parent = None
    if parent is not None:
        runs = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{target}'", max_results=10000
        )
        if not runs:
            raise EasyrecError(f"run {target} ({parent.info.run_name}) has no child runs: give a sweep's parent run")
        return f"children of {parent.info.run_name} ({target})", runs
    experiment = client.get_experiment_by_name(target)
    if experiment is None and target.isdigit():
        try:
            experiment = client.get_experiment(target)
        except MlflowException:
            experiment = None
    if experiment is None:
        names = ", ".join(e.name for e in client.search_experiments())
        raise EasyrecError(f"{target}: neither a run nor an experiment in this store; the experiments are: {names}")
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    runs = [run for run in runs if "easyrec.sweep.dir" not in run.data.tags]
    if not runs:
        raise EasyrecError(f"experiment {experiment.name} has no runs")
    return f"experiment {experiment.name}", runs


def sort_metric(runs: list[Any], sort: str | None) -> tuple[str, bool]:
    """The metric to sort by (given, or the runs' most common ``optimized_metric``) and whether more is better
    (their ``trainer.monitor_mode``; for a given metric, ``loss`` in its name means less is better)."""
    if sort is None:
        sort = common(runs, "optimized_metric") or "eval/auc"
        return sort, (common(runs, "trainer.monitor_mode") or "max") == "max"
    return sort, "loss" not in sort and "rmse" not in sort and "mae" not in sort


def common(runs: list[Any], param: str) -> str | None:
    values = Counter(run.data.params[param] for run in runs if param in run.data.params)
    return values.most_common(1)[0][0] if values else None


def eval_metrics(runs: list[Any], sort: str) -> list[str]:
    """``sort`` first, then every other ``eval/`` metric any run has."""
    names = {key for run in runs for key in run.data.metrics if key.startswith("eval/")}
    return [sort, *sorted(names - {sort})]


def final_value(run: Any, metric: str) -> float | None:
    """The run's final ``metric``: that of the restored best weights (``best/<metric>``) when logged, else the last."""
    metrics = run.data.metrics
    return metrics.get(f"best/{metric}", metrics.get(metric))


def differing_params(rows: list[dict[str, Any]]) -> list[str]:
    """The params whose values are not the same in every row (a missing param counts as a value)."""
    keys = sorted({key for row in rows for key in row["params"]} - UNINFORMATIVE)
    return [key for key in keys if len({row["params"].get(key) for row in rows}) > 1]


def print_table(title: str, rows: list[dict[str, Any]], params: list[str], metrics: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{title}: {len(rows)} runs, best first")
    table.add_column("run")
    table.add_column("status")
    for key in params:
        table.add_column(key)
    for metric in metrics:
        table.add_column(metric, justify="right")
    for row in rows:
        values = [row["metrics"].get(m) for m in metrics]
        table.add_row(
            row["run"],
            row["status"],
            *(str(row["params"].get(key, "")) for key in params),
            *("" if value is None else f"{value:.5f}" for value in values),
        )
    Console().print(table)


def plot_curves(client: Any, rows: list[dict[str, Any]], metrics: list[str], path: Path) -> None:
    """One panel per metric: each run's values against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(metrics), 1, figsize=(9, 3.2 * len(metrics)), squeeze=False)
    for axis, metric in zip(axes[:, 0], metrics, strict=True):
        for row in rows:
            history = sorted((m.step, m.value) for m in client.get_metric_history(row["run_id"], metric))
            if history:
                steps, values = zip(*history, strict=True)
                axis.plot(steps, values, marker=".", label=row["run"])
        axis.set_title(metric)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small", loc="best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
