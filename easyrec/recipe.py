"""The recipe of a run: each component built from its config node, and checked against the others.

``easyrec train`` (:func:`easyrec.run.train`, in every worker of a distributed job too) and a saved run
(:class:`easyrec.saved_run.SavedRun`: ``evaluate``, ``predict``, ``export``) build their parts here, so both
build them alike. Constructors only check their arguments: a bad config fails in :func:`build_components`,
before a run is opened.

Example::

    parts = build_components(cfg)
    parts.data.setup()
    check_labels(parts.data, parts.loss)
    model = build_model(cfg.model, parts.data, parts.loss)
    optimizer, lr_schedulers = build_optimizers(cfg, model, parts.loss, steps=100)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from easyrec.data.tabular import TabularData
from easyrec.errors import CheckpointError, ConfigError
from easyrec.losses.base import Loss
from easyrec.metrics import EvalMetrics
from easyrec.models import base as models

log = logging.getLogger("easyrec")


@dataclass
class Components:
    """The parts of a run that need no data to be built. A saved run (``training=False``) has no
    ``distributed``, ``early_stopping``, ``gradients`` or ``logger``."""

    data: TabularData
    loss: Loss
    metrics: EvalMetrics
    distributed: Any = None
    early_stopping: Any = None
    gradients: Any = None
    logger: Any = None


def build_components(cfg: DictConfig, training: bool = True) -> Components:
    """Every component of ``cfg`` that needs no data (the model and optimizers do: :func:`build_model`,
    :func:`build_optimizers`), the loss checked against the data's columns (:func:`check_loss_fits_data`).
    ``training=False``: only what evaluating and predicting need."""
    parts: dict[str, Any] = {}
    if training:
        parts["distributed"] = instantiate(cfg.distributed)
    with config_errors("data"):
        data = instantiate(cfg.data, _convert_="all")
    with config_errors("loss"):
        loss = Loss.of(instantiate(cfg.loss))
    if training:
        parts["early_stopping"] = instantiate(cfg.early_stopping)
        parts["gradients"] = instantiate(cfg.gradients, _convert_="all")
        parts["logger"] = instantiate(cfg.logger)
    with config_errors("metrics"):
        metrics = instantiate(cfg.metrics, _convert_="all")
    check_loss_fits_data(loss, data.spec)
    return Components(data, loss, metrics, **parts)


def check_loss_fits_data(loss: Loss, spec: Any) -> None:
    """Refuse a loss the data cannot feed: a session loss without sessions, one label loss on several columns."""
    name = loss.class_name
    if loss.requires_sessions and not spec.session:
        raise ConfigError(f"loss={name} works on sessions: name the session column with data.features.session=...")
    labels = spec.label_names
    if len(labels) > 1 and not loss.multi_task:
        raise ConfigError(
            f"loss={name} takes one label column, but data.features.label names {len(labels)} "
            f"({', '.join(labels)}): pick one (data.features.label=...) or use a multi-task loss (loss=multi_task)"
        )


def check_labels(data: TabularData, loss: Loss) -> None:
    """Check the labels ``data`` has read against every rule ``loss`` puts on them (DataError naming the column)."""
    for rule in loss.label_rules(data.spec.label_names):
        data.check_labels(rule.required_by, rule.values, rule.value_range, rule.column, rule.every_value)


def build_model(
    node: DictConfig,
    data: Any,
    loss: Loss,
    probe: Any = None,
    prepare: Callable[[nn.Module], nn.Module] | None = None,
) -> nn.Module:
    """The model of config ``node`` with the outputs ``loss`` reads, its output shape checked.

    A multi-task model gets one tower per task, any other model ``num_outputs`` logits per sample (see
    :mod:`easyrec.models.base`). A two-tower model's ``(B, 2, D)`` output needs a retrieval loss.
    ``data``: anything with an ``input_spec`` (a set-up TabularData, a fitted FeatureEncoder); ``probe``: the batch
    whose first two rows the output shape is checked on (default: ``data``'s first eval batch, held in memory or
    streamed); ``prepare``: what the run does to the model before the check (load weights, shard its tables: then
    every worker runs the check, a collective).
    """
    with config_errors("model"):
        model = construct_model(node, data.input_spec, loss)
        if prepare is not None:
            model = prepare(model)
        model_name, loss_name = type(model).__name__, loss.class_name
        retrieval = loss.task == "retrieval"
        pairs = models.output_kind(model) == "pair_embeddings"
        if retrieval and not pairs:
            raise ConfigError(
                f"loss={loss_name} trains a two-tower retrieval model (user and item embeddings), "
                f"model={model_name} is not one: use model=dssm (experiment=retrieval)"
            )
        if pairs and not retrieval:
            raise ConfigError(
                f"model={model_name} gives user and item embeddings; loss={loss_name} does not train them: use a "
                "retrieval loss (in_batch_softmax, infonce, circle, multi_similarity, softmax_negative_mining)"
            )
        if not pairs:
            with torch.no_grad():
                probe = probe if probe is not None else next(iter(data.eval_batches()))
                shape = tuple(model.eval()(*probe.head(2).inputs).shape[1:])
            expected = () if loss.num_outputs == 1 else (loss.num_outputs,)
            if shape != expected:
                raise ConfigError(
                    f"model={model_name} gives {shape[0] if shape else 1} outputs per sample, loss={loss_name} "
                    f"reads {loss.num_outputs} ({loss.describe_outputs()})"
                )
    return model


def construct_model(node: DictConfig, input_spec: Any, loss: Loss) -> nn.Module:
    """The model of config ``node`` for ``input_spec``, with the outputs ``loss`` reads; not checked."""
    factory = instantiate(node, _convert_="all")
    return models.build(factory, input_spec, loss.num_outputs, loss.task_outputs)


def build_optimizers(
    cfg: DictConfig, model: nn.Module, loss: Loss, steps: int, fused: Any = None
) -> tuple[Any, list[LRScheduler]]:
    """The optimizer of ``model`` (and of ``loss``'s own parameters) and its learning-rate schedules over ``steps``
    optimizer steps. ``fused``: the fused optimizer of a sharded model's tables (``distributed=model_parallel``),
    which joins the optimizer (see :func:`easyrec.optim.build_optimizer`)."""
    from easyrec.optim import attach_loss_parameters, build_optimizer, build_schedules

    with config_errors("optimizer"):
        optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), model, fused=fused)
        attach_loss_parameters(optimizer, loss)
    with config_errors("lr_schedule"):
        lr_schedulers = build_schedules(instantiate(cfg.lr_schedule, _convert_="all"), optimizer, steps)
    return optimizer, lr_schedulers


def shard_model(cfg: DictConfig, model: nn.Module, distributed: Any, device: str) -> nn.Module:
    """``model`` with its tables sharded over the workers of ``distributed`` (a ModelParallel), trained by the
    fused optimizer that ``cfg.optimizer`` maps to; ``device``: ``trainer.device``."""
    from easyrec.optim.build import turn_on_sparse_gradients

    where = distributed.device(device)
    factory, fused = fused_optimizer(cfg, where.type)
    with config_errors("optimizer"):
        turn_on_sparse_gradients(factory, model)  # the tables left whole: the DDP that shard() builds reads them
    return distributed.shard(model, fused, cfg.seed, where)


def fused_optimizer(cfg: DictConfig, device_type: str) -> tuple[Any, dict[str, Any]]:
    """``cfg.optimizer``'s factory and the fused optimizer of sharded tables it maps to on ``device_type``
    (``cpu``, ``cuda``); ConfigError naming the key when it maps to none. The launcher asks it too, before any
    worker starts."""
    from easyrec.optim.fused import fused_params

    with config_errors("optimizer"):
        factory = instantiate(cfg.optimizer, _convert_="all")
        return factory, fused_params(factory, device_type)


def fill_deferred_tables(model: nn.Module, seed: int) -> None:
    """Allocate the tables of ``model`` built under ``deferred_tables`` (on the CPU), with the initial rows a
    sharded model starts from (:func:`~easyrec.modules.embedding_collection.initial_rows` of ``seed``)."""
    from easyrec.modules.embedding_collection import field_embeddings, fill_field_embedding

    for path, module in field_embeddings(model):
        if module.table.weight.is_meta:
            fill_field_embedding(module, path, seed, torch.device("cpu"))


def report_plan(distributed: Any, output_dir: Path, logger: Any) -> None:
    """The sharding plan of ``distributed``: every worker measures its part (a collective); the main one logs it
    and keeps it as ``sharding_plan.txt`` in the run directory and with the tracked run."""
    table = distributed.plan_table()
    if distributed.is_main:
        log.info("sharding plan (%d workers):\n%s", distributed.world_size, table)
        path = output_dir / "sharding_plan.txt"
        path.write_text(table + "\n")
        logger.log_artifact(path)


def check_memory(cfg: DictConfig, data: Any, loss: Loss, distributed: Any, device: str) -> None:
    """Refuse (ConfigError) a model whose parameters, gradients and optimizer state exceed the memory available to
    this worker, before building it: the model and the optimizer are built on the ``meta`` device, which allocates
    nothing. A model that cannot be built there (a user's model with data-dependent code) is not checked."""
    from easyrec.memory import available_bytes, training_bytes
    from easyrec.optim import build_optimizer

    try:
        with torch.device("meta"):
            with config_errors("model"):
                model = construct_model(cfg.model, data.input_spec, loss)
            with config_errors("optimizer"):
                optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), model)
    except (NotImplementedError, RuntimeError) as error:
        log.debug("memory check skipped: the model cannot be built on the meta device (%s)", error)
        return
    where = distributed.device(device)
    # the workers of a CPU machine share its memory; each GPU worker has a GPU of its own
    sharing = getattr(distributed, "nproc_per_node", 1) if where.type == "cpu" else 1
    shares = {}
    if distributed.sharded:  # each worker holds its share of the tables that are sharded
        from easyrec.modules.embedding_collection import field_embeddings, swappable

        tables = [module.table.weight for _, module in field_embeddings(model) if swappable(module)]
        shares = {id(weight): 1 / distributed.world_size for weight in tables}
    needed, available = training_bytes(model, optimizer, shares), available_bytes(where) // sharing
    if needed > available:
        count = sum(p.numel() for p in model.parameters())
        each = f" for each of {sharing} workers" if sharing > 1 else ""
        raise ConfigError(
            f"model: {type(model).__name__} needs about {needed / 2**30:,.1f} GiB for its {count:,} parameters, their "
            f"gradients and the {type(optimizer).__name__} state, more than the {available / 2**30:,.1f} GiB available "
            f"on {where}{each}: make it smaller (model.hidden_units, model.embedding_dim, ...) or skip this check "
            "with trainer.memory_check=false"
        )


@contextmanager
def checkpoint_errors(path: str) -> Iterator[None]:
    """A checkpoint whose tensors do not fit the model or optimizer built from this config: CheckpointError."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError) as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: does not fit this model or optimizer ({first})") from None


@contextmanager
def config_errors(key: str) -> Iterator[None]:
    """Report a constructor's refusal of its arguments (ValueError) as a ConfigError naming ``key``."""
    try:
        yield
    except (ValueError, InstantiationException) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        raise ConfigError(f"{key}: {cause}") from error
