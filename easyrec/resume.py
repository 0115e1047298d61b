"""Starting a run from a checkpoint: an exact resume of the same run, or a new run from another run's weights and
optimizer state (``trainer.init_from`` with ``trainer.init``: fine-tuning, incremental training)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from easyrec.checkpoints import candidates, find_checkpoint, load_checkpoint, load_matching, resize_rows
from easyrec.config.schema import InitOptions
from easyrec.errors import CheckpointError, ConfigError
from easyrec.optim.build import Optimizer, inner_optimizers
from easyrec.optim.grouped import FUSED

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


def load_named_checkpoint(key: str, location: str | Path, gather: bool = True, which: str = "latest") -> dict[str, Any]:
    """:func:`load_checkpoint`, its errors naming the config ``key`` that gave ``location``."""
    try:
        return load_checkpoint(location, which=which, gather=gather)
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


def init_state(location: str | Path | None, options: InitOptions) -> dict[str, Any] | None:
    """The checkpoint ``trainer.init_from`` names: a checkpoint file, or the one of a run directory that
    ``options.checkpoint`` picks (its latest step checkpoint, or ``best.pt``). None without ``location``, and, with
    ``options.missing_ok``, when there is no checkpoint there yet (warned: the run starts from scratch); a damaged
    checkpoint is an error either way."""
    if location is None:
        return None
    if options.missing_ok:
        try:
            candidates(location, options.checkpoint)
        except CheckpointError as error:
            log.warning("trainer.init_from: %s; starting from scratch (trainer.init.missing_ok=true)", error)
            return None
    return load_named_checkpoint("trainer.init_from", location, which=options.checkpoint)


def renamed(names: list[str], options: InitOptions) -> tuple[dict[str, str], list[str]]:
    """``({this model's name: the checkpoint's}, excluded)`` for the checkpoint's entry ``names``: each renamed by
    the first pattern of ``options.rename`` found in it; those whose new name an ``options.exclude`` pattern finds
    are left out, and listed apart (their new names)."""
    rules = [(re.compile(pattern), replacement) for pattern, replacement in options.rename.items()]
    excluded = [re.compile(pattern) for pattern in options.exclude]
    sources: dict[str, str] = {}
    left_out = []
    for name in names:
        new = name
        for pattern, replacement in rules:
            if pattern.search(name):
                try:
                    new = pattern.sub(replacement, name)
                except re.error as error:
                    raise ConfigError(f"trainer.init.rename.{pattern.pattern}={replacement}: {error}") from None
                break
        if any(pattern.search(new) for pattern in excluded):
            left_out.append(new)
        elif new in sources:
            raise ConfigError(
                f"trainer.init.rename: {sources[new]} and {name} both become {new}; each name must have one source"
            )
        else:
            sources[new] = name
    return sources, left_out


def fine_tune(
    model: nn.Module, state: Mapping[str, Any], cardinalities: list[int], options: InitOptions | None = None
) -> dict[str, Any]:
    """Load what fits of another run's model weights (a loaded checkpoint, ``trainer.init_from``) into ``model``,
    renamed and filtered by ``options`` (:func:`renamed`); log and return the report: loaded, resized (embedding
    rows per field: a grown vocabulary's new rows keep their initial values) and skipped entries, and ``sources``
    (this model's name -> the checkpoint's, of every entry loaded or resized). The data was encoded with the
    checkpoint's vocabularies, grown by the new ids (``TabularData.setup(keep_encoding=...)``), so an id keeps its
    row."""
    options = options or InitOptions()
    old = state.get("input_spec", {}).get("cardinalities")
    sources, excluded = renamed(list(state["model"]), options)
    entries = {name: state["model"][source] for name, source in sources.items()}
    report = load_matching(model, entries, (old, cardinalities) if old else None)
    for name in excluded:
        report.skipped[name] = "excluded by trainer.init.exclude (kept its initial value)"
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
    return {
        "path": state["path"],
        "loaded": report.loaded,
        "resized": report.resized,
        "skipped": report.skipped,
        "sources": {name: source for name, source in sources.items() if name not in report.skipped},
    }


def init_optimizer(
    optimizer: Optimizer,
    state: Mapping[str, Any],
    model: nn.Module,
    sources: Mapping[str, str],
    cardinalities: list[int],
    sharded: bool = False,
) -> list[str]:
    """``trainer.init.optimizer``: :func:`restore_optimizer` from the checkpoint ``state`` into the ``optimizer`` of
    ``model``, whose tables have ``cardinalities`` rows per field; with sharded tables on either side
    (``distributed=model_parallel``: ``sharded`` for this run) the weights alone carry over, with a warning."""
    if sharded or "sharded" in state:  # fbgemm keeps the sharded tables' slots fused in its kernels
        log.warning(
            "trainer.init.optimizer: the optimizer state is not restored to or from sharded tables "
            "(distributed=model_parallel): the weights are, the optimizer starts fresh"
        )
        return []
    old = state.get("input_spec", {}).get("cardinalities")
    return restore_optimizer(optimizer, state, model, sources, (old, cardinalities) if old else None)


#: Entries of a param group that are no hyper-parameter of its optimizer: two groups whose other keys differ are of
#: different optimizers, whose slots do not carry over.
NOT_OPTIONS = frozenset({"params", "param_names", "group", "initial_lr"})


def restore_optimizer(
    optimizer: Optimizer,
    state: Mapping[str, Any],
    model: nn.Module,
    sources: Mapping[str, str],
    cardinalities: tuple[list[int], list[int]] | None = None,
) -> list[str]:
    """Load into ``optimizer`` (a torch optimizer, or several: a GroupedOptimizer) the slots that the checkpoint
    ``state``'s optimizer kept for the parameters :func:`fine_tune` loaded (``sources``: this model's name -> the
    checkpoint's), by name, whatever group trains them now: EasyRec's restore of its optimizer variables.

    A parameter's slots carry over when its optimizer has the same hyper-parameters (the values may differ: today's
    config sets them) and its shape is the checkpoint's; an embedding table that grew keeps its rows' slots, field
    by field (``cardinalities``: rows per field, (old, new)), and its new rows take the optimizer's initial state
    (as built: Adagrad's ``initial_accumulator_value``; zeros for the slots an optimizer creates at its first step,
    Adam's moments). Scalars (Adam's ``step``) carry over as they are. The other parameters start fresh. Returns the
    names of the parameters whose slots were restored (``model``: the model ``optimizer`` trains)."""
    saved = state.get("optimizer")
    slots = saved_slots(saved) if saved else None
    if slots is None:
        why = "holds the weights only (best.pt)" if not saved else "names no parameter in its optimizer state"
        log.warning("trainer.init.optimizer: %s %s: the optimizer starts fresh", state["path"], why)
        return []
    params = dict(model.named_parameters())
    restored, fresh = [], {}
    for inner_name, inner in inner_optimizers(optimizer).items():
        if inner_name.endswith(FUSED):
            continue
        for group in inner.param_groups:
            for name, param in zip(group.get("param_names") or [], group["params"], strict=False):
                source = sources.get(name)
                if source is None or source not in slots or params.get(name) is not param:
                    continue
                saved_state, options = slots[source]
                if options != option_keys(group):
                    fresh[name] = "another optimizer trains it now"
                    continue
                old_shape = tuple(state["model"][source].shape)
                moved = fitted_slots(saved_state, inner.state.get(param, {}), param, old_shape, cardinalities)
                if moved is None:
                    fresh[name] = f"its slots do not fit its shape {tuple(param.shape)}"
                    continue
                inner.state[param] = moved
                restored.append(name)
    log.info("trainer.init.optimizer: restored the optimizer slots of %d parameters", len(restored))
    for name, why in fresh.items():
        log.warning("trainer.init.optimizer: %s starts with fresh slots: %s", name, why)
    return restored


def saved_slots(saved: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], frozenset[str]]] | None:
    """``{parameter name: (its slots, its group's option keys)}`` of a saved optimizer state (a torch optimizer's
    state dict, or a GroupedOptimizer's: one per group; a fused optimizer's are left out), or None when it does not
    name its parameters."""
    parts = [saved] if "param_groups" in saved else [part for key, part in saved.items() if not key.endswith(FUSED)]
    slots = {}
    for part in parts:
        for group in part["param_groups"]:
            if "param_names" not in group:
                return None
            for index, name in zip(group["params"], group["param_names"], strict=True):
                if index in part["state"]:
                    slots[name] = (part["state"][index], option_keys(group))
    return slots


def option_keys(group: Mapping[str, Any]) -> frozenset[str]:
    """The hyper-parameter names of a param group (:data:`NOT_OPTIONS` left out)."""
    return frozenset(key for key in group if key not in NOT_OPTIONS)


def fitted_slots(
    saved: Mapping[str, Any],
    current: Mapping[str, torch.Tensor],
    param: torch.Tensor,
    old_shape: tuple[int, ...],
    cardinalities: tuple[list[int], list[int]] | None,
) -> dict[str, Any] | None:
    """The ``saved`` slots of a parameter whose shape was ``old_shape`` fitted to ``param``: as they are for the
    same shape; for a table whose rows changed, each slot with a row per table row ``(rows, ...)`` resized as
    :func:`~easyrec.checkpoints.resize_rows` does, its new rows taken from the optimizer's ``current`` slot (as
    built) or zeros. Scalars as they are; None when a slot fits neither way."""
    fitted = {}
    for key, value in saved.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            fitted[key] = value
            continue
        start = current.get(key)
        device = start.device if start is not None else param.device
        if old_shape != tuple(param.shape):
            if value.shape[0] != old_shape[0]:
                return None
            if start is None or start.shape != (param.shape[0], *value.shape[1:]):
                start = value.new_zeros((param.shape[0], *value.shape[1:]))
            value = resize_rows(value, start.to(value.device), cardinalities)
        elif start is not None and start.shape != value.shape:
            return None
        fitted[key] = value.to(device)
    return fitted
