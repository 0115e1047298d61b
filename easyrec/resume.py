"""Starting a run from a checkpoint: an exact resume of the same run, or fine-tuning from another run's weights."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from easyrec.checkpoints import find_checkpoint, load_checkpoint, load_matching
from easyrec.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

#: The config an exact resume must keep: what decides the model, its inputs, its updates and the data order.
RESUME_MUST_MATCH = ("seed", "model", "data", "optimizer", "lr_schedule", "gradients", "loss")
#: ... but for these keys: a stream resumed on another number of loader workers deals the pieces not yet wholly
#: trained again (see :mod:`easyrec.data.stream`), as it does on another number of ranks.
RESUME_MAY_CHANGE = ("data.num_workers",)


def resume_state(setting: bool | str | None, output_dir: Path) -> dict[str, Any] | None:
    """The checkpoint ``trainer.resume`` names: ``true`` the latest of this run directory (an error when there is
    none; a damaged one is skipped with a warning, for the newest readable one), ``auto`` the same or None when
    there is none (a restarted worker), a path a checkpoint file or another run directory, ``false`` None. Sharded
    tables stay in their shards directory: each worker of the resumed run reads its rows of them."""
    if setting in (None, False, "false"):
        return None
    if setting in (True, "true", "auto"):
        try:
            find_checkpoint(output_dir)
        except CheckpointError:
            if setting == "auto":
                return None
            raise CheckpointError(
                f"trainer.resume=true: {output_dir} has no checkpoint to resume; run in the directory of the run to "
                "resume (hydra.run.dir=...) or give its path (trainer.resume=PATH)"
            ) from None
        return load_checkpoint(output_dir, gather=False)
    return load_named_checkpoint("trainer.resume", setting, gather=False)


def checked_resume_state(
    setting: bool | str | None, output_dir: Path, config: Mapping[str, Any], sharded: bool = False
) -> dict[str, Any] | None:
    """:func:`resume_state`, refused by :func:`check_resumable` when ``config`` changed what must stay (``sharded``:
    whether this run shards its tables)."""
    state = resume_state(setting, output_dir)
    if state is not None:
        check_resumable(state, config, state["path"], sharded)
    return state


def load_named_checkpoint(key: str, location: str | Path, gather: bool = True) -> dict[str, Any]:
    """:func:`load_checkpoint`, its errors naming the config ``key`` that gave ``location``."""
    try:
        return load_checkpoint(location, gather=gather)
    except CheckpointError as error:
        raise CheckpointError(f"{key}={location}: {error}") from None


def check_resumable(state: Mapping[str, Any], config: Mapping[str, Any], path: str, sharded: bool = False) -> None:
    """ConfigError when ``config`` changes what an exact resume must keep (:data:`RESUME_MUST_MATCH`, but for
    :data:`RESUME_MAY_CHANGE` and the keys the checkpoint's config does not have); a weights-only checkpoint
    (``best.pt``) cannot be resumed, nor a checkpoint of sharded tables by a run that does not shard them
    (``sharded``: this run does), or the other way round. The process layout (``distributed``: the number of
    workers and machines) may change: sharded tables are read again into this run's shards; and ``data.batch_size``
    with it where a step keeps its rows (2 workers x 128 rows resume as 1 worker x 256)."""
    if state.get("kind") == "weights":
        raise CheckpointError(
            f"{path} holds the best weights only (no optimizer state): resume from a step checkpoint "
            f"(checkpoints/step-*.pt), or start a new run from these weights with trainer.init_from={path}"
        )
    if "sharded" in state and not sharded:
        raise CheckpointError(
            f"{path} holds sharded tables (a distributed=model_parallel run): resume it with "
            f"distributed=model_parallel (on any number of workers), or start a new run from its weights with "
            f"trainer.init_from={path}"
        )
    if sharded and "sharded" not in state:
        raise CheckpointError(
            f"{path} holds whole tables (a run without distributed=model_parallel): resume it with the distributed "
            f"option it was written with, or start a distributed=model_parallel run from its weights with "
            f"trainer.init_from={path}"
        )
    saved = state["config"]
    before, after = (
        flatten({k: saved.get(k) for k in RESUME_MUST_MATCH}),
        flatten({k: config.get(k) for k in RESUME_MUST_MATCH}),
    )
    # a key this config has and the checkpoint's lacks came with a later easyrec (data.streaming, ...): no change
    keys = sorted(set(before) - set(RESUME_MAY_CHANGE))
    rows = step_rows(saved)
    if rows is not None and rows == step_rows(config) and "data.batch_size" in keys:
        keys.remove("data.batch_size")  # a step's rows shared out over more or fewer workers: the same rows
    changed = [key for key in keys if before.get(key) != after.get(key)]
    if changed:
        shown = ", ".join(f"{key} ({before.get(key)!r} -> {after.get(key)!r})" for key in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise ConfigError(
            f"trainer.resume: this config differs from the checkpoint's ({path}) in {shown}{more}; an exact resume "
            f"keeps {', '.join(RESUME_MUST_MATCH)} (the trainer's limits, data.num_workers, and data.batch_size where "
            f"the rows of a step stay the same on another number of workers, may change); to start from its weights "
            f"with a new config, use trainer.init_from={path}"
        )


def step_rows(config: Mapping[str, Any]) -> int | None:
    """Rows of a training step of ``config``: ``data.batch_size`` x workers x ``distributed.accumulate_steps`` (None
    when the config does not say)."""
    data, layout = config.get("data") or {}, config.get("distributed") or {}
    if "batch_size" not in data:
        return None
    workers = layout.get("nproc_per_node", 1) * layout.get("nnodes", 1)
    return data["batch_size"] * workers * layout.get("accumulate_steps", 1)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def fine_tune(model: nn.Module, state: Mapping[str, Any], cardinalities: list[int]) -> dict[str, Any]:
    """Load what fits of another run's model weights (a loaded checkpoint, ``trainer.init_from``) into ``model``;
    log and return the report: loaded, resized (embedding rows per field, padded or clipped) and skipped entries.
    The data was encoded with the checkpoint's vocabularies (``TabularData.setup(keep_encoding=...)``), so an id
    keeps its row."""
    old = state.get("input_spec", {}).get("cardinalities")
    report = load_matching(model, state["model"], (old, cardinalities) if old else None)
    log.info(
        "fine-tuning from %s: %d entries loaded, %d resized, %d skipped",
        state["path"],
        len(report.loaded),
        len(report.resized),
        len(report.skipped),
    )
    for name, why in report.skipped.items():
        log.warning("fine-tune: skipped %s: %s", name, why)
    if not report.loaded and not report.resized:
        raise CheckpointError(f"trainer.init_from: nothing in {state['path']} fits this model")
    return {"path": state["path"], "loaded": report.loaded, "resized": report.resized, "skipped": report.skipped}
