"""``easyrec export``: a checkpoint as a deployable model that takes raw feature values (the encoding inside) and
returns the predictions of ``easyrec predict``: TorchScript (``model.pt``, needs only torch) and an MLflow pyfunc
model (``mlflow_model/``, also logged to the checkpoint's MLflow run as its ``model`` artifact)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from easyrec.commands import CommandParser, checkpoint_parser, refuse_existing

DESCRIPTION = """\
Export a checkpoint as a model that takes raw feature values (the run's transforms, vocabularies and hashing are
inside) and returns its predictions: DIR/model.pt (TorchScript: torch.jit.load, needs only torch),
DIR/signature.json (its inputs and outputs) and DIR/mlflow_model (an MLflow pyfunc model, also logged to the
checkpoint's MLflow run as the artifact "model": mlflow.pyfunc.load_model("runs:/<run id>/model").predict(df)).
PATH is a checkpoint file or a run directory (its best.pt, or its latest step checkpoint: --checkpoint)."""

EXAMPLES = """examples:
  easyrec export outputs/2026-11-26/10-00-00
  easyrec export outputs/2026-11-26/10-00-00 --checkpoint latest --output serving/ctr --overwrite
  easyrec export outputs/ctr-1/checkpoints/step-000000400.pt --no-mlflow"""


def parser() -> CommandParser:
    parser = checkpoint_parser("easyrec export", DESCRIPTION, EXAMPLES, "logger.tracking_uri=sqlite:///elsewhere.db")
    parser.add_argument(
        "--output",
        metavar="DIR",
        type=Path,
        help="the export directory (default: <run dir>/export/<checkpoint name>)",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the model to the run's MLflow run")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    """The ``easyrec export`` command (arguments from ``sys.argv`` when ``argv`` is None); returns the directory."""
    args = parser().parse_intermixed_args(argv)
    return export(
        args.path, args.overrides, args.checkpoint, args.output, args.overwrite, not args.no_mlflow, args.trust_target
    )


def export(
    location: str | Path,
    overrides: Sequence[str] = (),
    which: str = "best",
    output: Path | None = None,
    overwrite: bool = False,
    mlflow: bool = True,
    trust: Sequence[str] = (),
) -> Path:
    """Export the checkpoint ``location`` names into ``output``, written as a temporary directory then renamed;
    log it to the checkpoint's MLflow run. ``trust``: see :meth:`SavedRun.load`. Returns the directory."""
    if output is not None:
        refuse_existing(output, overwrite, "directory")  # before any work
    from easyrec.saved_run import SavedRun

    saved = SavedRun.load(location, overrides, which, trust)
    if output is None:
        output = (saved.run_dir or saved.path.parent) / "export" / saved.path.stem
        refuse_existing(output, overwrite, "directory")
    partial = output.with_name(f"{output.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        write_export(saved, partial)
        if output.exists():  # --overwrite (refuse_existing let only a directory through)
            shutil.rmtree(output)
        os.replace(partial, output)
    except BaseException:  # an error or Ctrl-C: no half-written export
        shutil.rmtree(partial, ignore_errors=True)
        raise
    print(f"easyrec export: {saved.path} exported to {output} (model.pt, signature.json, mlflow_model)")
    if mlflow:
        log_to_mlflow(saved, output)
    return output


def write_export(saved: Any, directory: Path) -> dict[str, Any]:
    """Write ``model.pt``, ``signature.json`` and ``mlflow_model/`` of ``saved`` into ``directory``; return the
    signature."""
    import torch

    import easyrec
    from easyrec.commands.predict import prediction_names
    from easyrec.export.serving import build_serving_module

    module = build_serving_module(saved)
    outputs = prediction_names(saved)
    check_against_the_model(saved, module, len(outputs))
    torch.jit.save(module, str(directory / "model.pt"))
    signature = {
        "dense": list(saved.source.spec.dense_names),
        "int_ids": list(module.int_names),
        "string_ids": list(module.str_names),
        "lists": dict(zip(module.list_names, module.list_separators, strict=True)),
        "outputs": outputs,
        "easyrec_version": easyrec.__version__,
        "checkpoint": str(saved.path),
        "step": saved.state.get("step"),
        "run_id": saved.run_id,
    }
    (directory / "signature.json").write_text(json.dumps(signature, indent=2) + "\n")
    save_pyfunc(directory, *input_example(module, signature, saved.encoder.state_dict()), list(signature["lists"]))
    return signature


def check_against_the_model(saved: Any, module: Any, width: int) -> None:
    """The exported module must give :meth:`SavedRun.predict`'s numbers on a batch of another size than the one it
    was traced on (a model whose trace fixed the batch size would not)."""
    import torch

    from easyrec.errors import CheckpointError
    from easyrec.export.serving import traced_inputs

    probe = saved.probe(5)
    expected = torch.cat([s.reshape(5, -1).float() for s in saved.predict(probe)], 1)
    with torch.no_grad():
        got = module.predictions(*traced_inputs(probe))
    if got.shape != (5, width) or not torch.allclose(got, expected, atol=1e-6, rtol=0):
        raise CheckpointError(
            f"{saved.path}: its model does not export to TorchScript faithfully (traced outputs differ)"
        )


def input_example(module: Any, signature: dict[str, Any], encoding: dict[str, Any], rows: int = 3) -> tuple:
    """``rows`` rows of raw values for the exported ``module`` and its predictions, as two DataFrames: dense values
    ``0, 1, 2, ...`` by row, the first ids of each vocabulary (``1, 2, ...`` for a hashed column)."""
    import numpy
    import pandas
    import torch

    def first_ids(name: str) -> list[Any]:
        seen = list(encoding["vocabularies"].get(name) or range(1, rows + 1))
        return [seen[row % len(seen)] for row in range(rows)]

    lists = signature["lists"]
    frame = pandas.DataFrame(
        {name: [float(row) for row in range(rows)] for name in signature["dense"]}
        | {name: [int(value) for value in first_ids(name)] for name in signature["int_ids"]}
        | {name: [str(value) for value in first_ids(name)] for name in signature["string_ids"]}
        | {name: [f"{value}{separator}{value}" for value in first_ids(name)] for name, separator in lists.items()}
    )
    dense = torch.tensor(frame[signature["dense"]].to_numpy(numpy.float64).reshape(rows, -1))
    int_ids = torch.tensor(frame[signature["int_ids"]].to_numpy(numpy.int64).reshape(rows, -1))
    cells = [frame[name].tolist() for name in lists] if lists else None
    with torch.no_grad():
        scores = module(dense, int_ids, [frame[name].tolist() for name in signature["string_ids"]], cells)
    return frame, pandas.DataFrame(scores.numpy(), columns=signature["outputs"])


def save_pyfunc(directory: Path, example: Any, predictions: Any, lists: Sequence[str] = ()) -> None:
    """``directory/mlflow_model``: the standalone pyfunc file as the model's code, model.pt and signature.json as its
    artifacts; its signature inferred from the DataFrames ``example`` (the input example, kept with the model) and
    ``predictions`` (the list columns ``lists`` of any type: lists of ids, or strings of them)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow.pyfunc
    import numpy
    import pandas
    import torch

    code = Path(__file__).resolve().parent.parent / "export" / "pyfunc_model.py"
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pandas.__version__}",
    ]
    mlflow.pyfunc.save_model(
        path=str(directory / "mlflow_model"),
        python_model=str(code),
        artifacts={"model": str(directory / "model.pt"), "signature": str(directory / "signature.json")},
        pip_requirements=requirements,
        signature=model_signature(example, predictions, lists),
        input_example=example,
    )


def model_signature(example: Any, predictions: Any, lists: Sequence[str] = ()) -> Any:
    """MLflow's signature of the pyfunc model: the columns of ``example`` and ``predictions``, inferred; id columns
    read as text stay ``string``, numeric inputs take ``any`` type (MLflow's ``long`` refuses an empty cell, its
    ``double`` an int64 column and rounds ids above 2**53; the model reads any number, NaN or None as empty), and
    so do the list columns ``lists`` (a cell is a list of ids or a string of them)."""
    import warnings

    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint on integer columns: they become "any" here
        inferred = infer_signature(example, predictions)
    columns = [
        c if c.type == DataType.string and c.name not in lists else ColSpec(AnyType(), c.name)
        for c in inferred.inputs.inputs
    ]
    return ModelSignature(Schema(columns), inferred.outputs)


def log_to_mlflow(saved: Any, directory: Path) -> None:
    """Log ``directory/mlflow_model`` as the artifact ``model`` of the checkpoint's MLflow run, with tags; a
    warning, and nothing logged, when the run was not tracked by MLflow or is not found."""
    logger = saved.config.get("logger") or {}
    if logger.get("_target_") != "easyrec.loggers.MLflowLogger":
        return
    if saved.run_id is None:
        warn("the checkpoint names no MLflow run; the model is not logged")
        return
    from easyrec.loggers.mlflow import log_to_run

    tags = {"easyrec.export.checkpoint": str(saved.path), "easyrec.export.model": "model"}
    why = log_to_run(str(logger.tracking_uri), saved.run_id, {}, int(saved.state.get("step") or 0), tags)
    if why:
        warn(f"{why}; the model is not logged")
        return
    from mlflow import MlflowClient

    from easyrec.loggers.mlflow import absolute_uri

    MlflowClient(absolute_uri(str(logger.tracking_uri))).log_artifacts(
        saved.run_id, str(directory / "mlflow_model"), "model"
    )
    print(f"logged the model to MLflow run {saved.run_id} at {logger.tracking_uri}: runs:/{saved.run_id}/model")


def warn(message: str) -> None:
    print(f"easyrec export: warning: {message}", file=sys.stderr)
