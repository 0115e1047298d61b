"""``easyrec compare``: runs side by side: the children of a sweep's parent run, or an experiment's runs, in a table
of the params that differ and the chosen metrics, best first; ``--plot`` draws their eval curves."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from easyrec.commands import CommandParser
from easyrec.console import plural
from easyrec.errors import EasyrecError
from easyrec.loggers.mlflow import DEFAULT_TRACKING_URI, local_store, open_client

DESCRIPTION = """\
Compare MLflow runs: TARGET is a sweep's parent run id (its children: `easyrec train -m` prints it) or an
experiment's name or id (its runs, without sweep parents). One row per run, best first by the monitored metric:
the config groups whose option differs between the runs (optimizer=adam; the params that follow from a group's
option are folded into it), the other params that differ, and the chosen metrics at their final values (those
of the restored best weights when there are). Columns equal in every run are listed once below the table. A
table wider than the terminal numbers its runs (their names listed above it) and is split into narrower ones."""

EXAMPLES = """examples:
  easyrec compare easyrec
  easyrec compare 3f2c9a0e5b1d4c7e8f6a2b1c0d9e8f7a --metrics eval/auc eval/logloss --plot curves.png
  easyrec compare deepfm-study --tracking-uri http://mlflow.internal:5000 --sort eval/logloss"""

#: Params that differ between any two runs of a sweep without saying anything about them.
UNINFORMATIVE = {"logger.run_name", "logger.parent_run_id", "early_stopping.trial_id"}
#: The tags where a run records each config group's option (JSON) and its command-line overrides.
CHOICES_TAG, OVERRIDES_TAG = "easyrec.choices", "easyrec.overrides"
#: The key of a ``key=value`` override (``+``/``~`` prefixes left out).
OVERRIDE_KEY = re.compile(r"[+~]*([\w./-]+)=")
#: A column of the table: its header, its cells (one per run), its justification.
Field = tuple[str, list[str], str]
#: How a sweep's child's name starts (``easyrec.sweeps.jobs.sweep_run_name``).
JOB_NUMBER = re.compile(r"#\d+")
#: A width no table reaches: measure one as wide as its cells make it.
UNBOUNDED = 1_000_000
#: Folded params named, per group, below the table.
FOLDED_SHOWN = 6


def parser() -> CommandParser:
    parser = CommandParser("easyrec compare", DESCRIPTION, EXAMPLES)
    parser.add_argument("target", metavar="TARGET", help="a sweep's parent run id, or an experiment's name or id")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="the MLflow store (default: %(default)s)")
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
    tracking_uri: str = DEFAULT_TRACKING_URI,
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    plot: Path | None = None,
    console: Any = None,
) -> list[dict[str, Any]]:
    """Print the table of ``target``'s runs on ``console`` (a ``rich`` Console; default: stdout's) and return its
    rows, best first: ``{"run_id", "run", "status", "choices": {group: option}, "params": {key: value},
    "metrics": {metric: value}}`` with the groups and params of the table's columns."""
    from rich.console import Console

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
            "choices": run_choices(run),
            "params": run.data.params,
            "overridden": override_keys(run),
            "metrics": {m: final_value(run, m) for m in {*metrics, sort}},
        }
        for run in runs
    ]
    missing = float("-inf") if larger else float("inf")
    rows.sort(key=lambda row: row["metrics"][sort] if row["metrics"][sort] is not None else missing, reverse=larger)
    columns = Columns.of(rows, metrics)
    print_table(console or Console(), f"{title}: {plural(len(rows), 'run')}, best first by {sort}", rows, columns)
    if plot is not None:
        plot_curves(client, rows, metrics, plot)
        print(f"eval curves of {len(rows)} runs: {plot}")
    return [
        {
            **{key: row[key] for key in ("run_id", "run", "status", "metrics")},
            "choices": {group: row["choices"].get(group) for group in columns.groups},
            "params": {key: row["params"].get(key) for key in columns.params},
        }
        for row in rows
    ]


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


def run_choices(run: Any) -> dict[str, str]:
    """The option of each config group of the run: as it recorded them (tag ``easyrec.choices``) or, for a run
    from before that tag, the class of each node with a ``_target_`` (param ``optimizer=torch.optim.Adam``, a key
    with keys below it: ``{"optimizer": "Adam"}``)."""
    try:
        choices = json.loads(run.data.tags.get(CHOICES_TAG, ""))
    except json.JSONDecodeError:
        choices = None
    if isinstance(choices, dict):
        return {str(group): str(option) for group, option in choices.items()}
    params = run.data.params
    nodes = {key[:i] for key in params for i, char in enumerate(key) if char == "."}
    return {key: value.rsplit(".", 1)[-1] for key, value in params.items() if key in nodes}


def override_keys(run: Any) -> list[str]:
    """The keys the run's command line set (tag ``easyrec.overrides``), in their order."""
    tokens = run.data.tags.get(OVERRIDES_TAG, "").split()
    return [match.group(1) for match in map(OVERRIDE_KEY.match, tokens) if match]


def package(group: str) -> str:
    """The config node a group's option fills: ``data/features`` -> ``data.features``."""
    return group.replace("/", ".")


@dataclass
class Columns:
    """What the table shows of the runs, in order: the config groups whose option differs, the params that differ
    and neither follow from a group's option nor are its class (``folded``, per group) unless the command line
    set them, and the metrics that differ (every one for a single run); ``same`` holds the status and the metrics
    that every run has alike."""

    groups: list[str]
    params: list[str]
    folded: dict[str, list[str]]
    metrics: list[str]
    same: dict[str, str]

    @classmethod
    def of(cls, rows: list[dict[str, Any]], metrics: list[str]) -> Columns:
        """``rows``: best first, each with the run's ``choices``, ``params``, ``overridden`` keys and ``metrics``."""
        order: dict[str, int] = {}  # groups and params in the order the command lines give them, the best run's first
        for row in rows:
            for key in row["overridden"]:
                order.setdefault(key, len(order))

        def ranked(keys: set[str]) -> list[str]:
            return sorted(keys, key=lambda key: (order.get(key, len(order)), key))

        groups = ranked(differing(rows, "choices"))
        overridden = set(order) - {package(group) for group in groups}
        folded: dict[str, list[str]] = {group: [] for group in groups}
        params = []
        for key in ranked(differing(rows, "params") - UNINFORMATIVE):
            group = None if key in overridden else follows_from(rows, key, groups)
            if group is None:
                params.append(key)
            elif key != package(group):  # the group's class says nothing its option does not
                folded[group].append(key)
        alike = {}
        if len(rows) > 1:
            cells = {"status": [row["status"] for row in rows]}
            cells |= {metric: [format_value(row["metrics"].get(metric)) for row in rows] for metric in metrics}
            alike = {name: values[0] for name, values in cells.items() if len(set(values)) == 1}
        return cls(groups, params, folded, [m for m in metrics if m not in alike], alike)

    def fields(self, rows: list[dict[str, Any]]) -> tuple[list[Field], list[Field]]:
        """The columns after the runs' names: what the runs were given (status, groups, params), and the metrics."""
        given = [] if "status" in self.same else [("status", [row["status"] for row in rows], "left")]
        given += [(group, [row["choices"].get(group, "") for row in rows], "left") for group in self.groups]
        given += [(key, [row["params"].get(key, "") for row in rows], "left") for key in self.params]
        metrics = [(m, [format_value(row["metrics"].get(m)) for row in rows], "right") for m in self.metrics]
        return given, metrics

    def notes(self) -> list[str]:
        """The lines below the table: the columns every run has alike, the params folded into each group."""
        notes = [f"same in every run: {', '.join(f'{k} {v}' for k, v in self.same.items())}"] if self.same else []
        for group, keys in self.folded.items():
            if keys:
                more = f" and {len(keys) - FOLDED_SHOWN} more" if len(keys) > FOLDED_SHOWN else ""
                notes.append(f"set by the option of {group}: {', '.join(keys[:FOLDED_SHOWN])}{more}")
        return notes


def differing(rows: list[dict[str, Any]], field: str) -> set[str]:
    """The keys of ``row[field]`` whose values are not the same in every row (a missing key counts as a value)."""
    keys = {key for row in rows for key in row[field]}
    return {key for key in keys if len({row[field].get(key) for row in rows}) > 1}


def follows_from(rows: list[dict[str, Any]], key: str, groups: list[str]) -> str | None:
    """The group whose option sets param ``key`` (every run with the same option has the same value), that whose
    node holds ``key`` first; None if no group's does."""
    node_first = sorted(groups, key=lambda g: not (key == package(g) or key.startswith(package(g) + ".")))
    for group in node_first:
        values: dict[str | None, str | None] = {}  # the group's option -> the key's value
        for row in rows:
            value = row["params"].get(key)
            if values.setdefault(row["choices"].get(group), value) != value:
                break
        else:
            return group
    return None


def format_value(value: float | None) -> str:
    return "" if value is None else f"{value:.5f}"


def print_table(console: Any, title: str, rows: list[dict[str, Any]], columns: Columns) -> None:
    """The title, the table and its notes on ``console``, at its width: one table with the runs' names when it
    fits, else numbered runs (names listed, never cut) and the columns split over as many tables as it takes."""
    from rich.text import Text

    def line(text: str) -> None:
        console.print(Text(text), soft_wrap=True)  # a name or a note is never cut: the terminal wraps it

    given, metrics = columns.fields(rows)
    names = [row["run"] for row in rows]
    line(title)
    table = make_table("run", names, given + metrics)
    if table_width(console, table) <= console.width:
        console.print(table)
    else:
        keys = run_keys(names)
        for key, name in zip(keys, names, strict=True):
            line(name if name.startswith(f"{key} ") else f"{key:>{len(keys[-1])}}  {name}")
        chunks = split(console, keys, given + metrics)
        if len(chunks) > 1:  # the metrics go in the first table
            chunks = split(console, keys, metrics + given)
        for chunk in chunks:
            console.print(make_table("run", keys, chunk))
    for note in columns.notes():
        line(note)


def run_keys(names: list[str]) -> list[str]:
    """Short names of the runs for a narrow table: a sweep's job numbers (``#2`` of ``#2 optimizer=adam``) when
    they tell the runs apart, else their ranks, 1 the best."""
    jobs = [name.split(" ", 1)[0] for name in names]
    if len(set(jobs)) == len(jobs) and all(JOB_NUMBER.fullmatch(job) for job in jobs):
        return jobs
    return [str(rank) for rank in range(1, len(names) + 1)]


def make_table(key: str, keys: list[str], fields: list[Field]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column(key, overflow="fold")
    for header, _, justify in fields:
        table.add_column(header, justify=justify, overflow="fold")
    for i, name in enumerate(keys):
        table.add_row(Text(name), *(Text(str(cells[i])) for _, cells, _ in fields))
    return table


def table_width(console: Any, table: Any) -> int:
    """The width ``table`` takes with no cell wrapped."""
    return console.measure(table, options=console.options.update(max_width=UNBOUNDED)).maximum


def split(console: Any, keys: list[str], fields: list[Field]) -> list[list[Field]]:
    """``fields`` in order, as few to a table as fit the console's width (one at least: it then wraps)."""
    chunks: list[list[Field]] = [[]]
    for field in fields:
        if chunks[-1] and table_width(console, make_table("run", keys, [*chunks[-1], field])) > console.width:
            chunks.append([])
        chunks[-1].append(field)
    return chunks


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
