"""``easyrec evaluate``: the eval metrics of a checkpoint on a data set, printed, written as JSON and logged to the
checkpoint's MLflow run.

On the run's own eval split (no overrides), the metrics are those training logged at the checkpoint's step:
the same weights, encoding, eval batches and eval loop (:func:`easyrec.metrics.evaluate_model`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easyrec.checkpoints import write_json
from easyrec.commands import CommandParser, checkpoint_parser, free_name, refuse_existing

DESCRIPTION = """\
Evaluate a checkpoint on its run's eval split, or on another data set given by overrides of the run's config
(e.g. data.eval_path=next_week.csv). PATH is a checkpoint file or a run directory (its best.pt, or its latest
step checkpoint: --checkpoint). The metrics are printed, written as JSON and logged to the run's MLflow run as
evaluate/<metric>."""

EXAMPLES = """examples:
  easyrec evaluate outputs/2026-11-26/10-00-00
  easyrec evaluate outputs/2026-11-26/10-00-00 data.eval_path=next_week.csv --output next_week.json
  easyrec evaluate outputs/ctr-1/checkpoints/step-000000400.pt trainer.device=cpu --no-mlflow"""


def parser() -> CommandParser:
    parser = checkpoint_parser(
        "easyrec evaluate",
        DESCRIPTION,
        EXAMPLES,
        "data.eval_path=other.csv data.eval_batch_size=4096 trainer.device=cpu",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        type=Path,
        help="the JSON file of the metrics (default: <run dir>/evaluate-<checkpoint>.json, numbered if it exists)",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the metrics to the run's MLflow run")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """The ``easyrec evaluate`` command (arguments from ``sys.argv`` when ``argv`` is None); returns the metrics."""
    args = parser().parse_intermixed_args(argv)
    return evaluate(
        args.path,
        args.overrides,
        which=args.checkpoint,
        output=args.output,
        overwrite=args.overwrite,
        mlflow=not args.no_mlflow,
        trust=args.trust_target,
    )


def evaluate(
    location: str | Path,
    overrides: Sequence[str] = (),
    which: str = "best",
    output: Path | None = None,
    overwrite: bool = False,
    mlflow: bool = True,
    trust: Sequence[str] = (),
) -> dict[str, float]:
    """Evaluate the checkpoint ``location`` names; print a table, write the JSON report, log to MLflow.
    ``trust``: see :meth:`SavedRun.load`."""
    if output is not None:
        refuse_existing(output, overwrite)  # before any work
    from easyrec.saved_run import SavedRun

    saved = SavedRun.load(location, overrides, which, trust)
    metrics = saved.evaluate()
    source = saved.data.eval.source
    report = {
        "checkpoint": str(saved.path),
        "step": saved.state.get("step"),
        "run_id": saved.run_id,
        "data": source,
        "overrides": list(overrides),
        "metrics": {key: value if math.isfinite(value) else None for key, value in metrics.items()},
    }
    if output is None:
        output = free_name((saved.run_dir or saved.path.parent) / f"evaluate-{saved.path.stem}.json")
    else:
        refuse_existing(output, overwrite)
    write_json(report, output)
    print_metrics(metrics, saved, source, output)
    if mlflow:
        log_to_mlflow(saved, metrics, source)
    return metrics


def print_metrics(metrics: dict[str, float], saved: Any, source: str, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"checkpoint: {saved.path} (step {saved.state.get('step')})", highlight=False, soft_wrap=True)
    console.print(f"data: {source}", highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.6f}")
    console.print(table)
    console.print(f"metrics written to {output}", highlight=False, soft_wrap=True)


def log_to_mlflow(saved: Any, metrics: dict[str, float], source: str) -> None:
    """``evaluate/<metric>`` at the checkpoint's step, and tags naming the data and the checkpoint, in the run the
    checkpoint belongs to; a warning, and nothing logged, when the run was not tracked by MLflow or is not found."""
    logger = saved.config.get("logger") or {}
    if logger.get("_target_") != "easyrec.loggers.MLflowLogger":
        return
    if saved.run_id is None:
        warn("the checkpoint names no MLflow run; metrics not logged")
        return
    from easyrec.loggers.mlflow import log_to_run

    tags = {"easyrec.evaluate.data": source, "easyrec.evaluate.checkpoint": str(saved.path)}
    logged = {f"evaluate/{key}": value for key, value in metrics.items()}
    why = log_to_run(str(logger.tracking_uri), saved.run_id, logged, int(saved.state.get("step") or 0), tags)
    if why:
        warn(f"{why}; metrics not logged")
    else:
        print(f"logged evaluate/... to MLflow run {saved.run_id} at {logger.tracking_uri}")


def warn(message: str) -> None:
    print(f"easyrec evaluate: warning: {message}", file=sys.stderr)
