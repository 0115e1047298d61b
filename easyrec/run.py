"""``easyrec train``: compose the config, build every component from its ``_target_``, train, track.

Only Hydra and OmegaConf are imported at module level, so ``easyrec train --cfg job`` answers fast;
torch and the components are imported when a run starts.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from easyrec.config import validate
from easyrec.config.trust import TrustedTargets, check_stored_config, code_references
from easyrec.errors import CheckpointError, ConfigError, EasyrecError, Interrupted
from easyrec.sweeps.jobs import run_sweep_job
from easyrec.user_errors import describe, exit_with

log = logging.getLogger("easyrec")


def entry() -> None:
    """``easyrec train``: under ``torchrun`` every worker runs this, and they agree on one run directory first."""
    from easyrec.launch import torchrun_arguments

    sys.argv[1:] = torchrun_arguments(sys.argv[1:])
    main()


@hydra.main(version_base="1.3", config_path="pkg://easyrec.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """The Hydra app behind ``easyrec train``; returns ``cfg.optimized_metric`` for sweepers.

    With ``distributed=ddp`` (and not already a worker of ``torchrun``), this process starts the job's workers
    and waits for them: see :mod:`easyrec.launch`.
    """
    hydra_cfg = HydraConfig.get()
    output_dir, overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    try:
        with sigterm_interrupts():
            if hydra_cfg.mode == RunMode.MULTIRUN:  # a failing job is recorded, and the sweep goes on
                return run_sweep_job(run_job, cfg, output_dir, overrides, hydra_cfg.job.num)
            return run_job(cfg, output_dir, overrides)
    except EasyrecError as error:
        # Exit here, not through Hydra, which would print the job's overrides as a second line.
        exit_with("train", error, describe(error))


def run_job(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> float:
    """One job: trained in this process, or by the workers it starts (``distributed=ddp``, outside torchrun).

    The process that owns the job's run directory locks it for the job's life (:mod:`easyrec.run_lock`): this one,
    unless it is a worker of an outside torchrun other than rank 0, or a launcher of workers on several machines
    (there, the rank-0 worker does: :func:`easyrec.launch.worker`).
    """
    from easyrec.run_lock import hold_run_directory

    validate(cfg)
    # a missing file or column fails before a run is opened, as a bad config does (data.setup reads all later)
    instantiate(cfg.data, _convert_="all").check_files()
    distributed = instantiate(cfg.distributed)
    launches = getattr(distributed, "launches_workers", False)
    owner = distributed.nnodes == 1 if launches else os.environ.get("RANK", "0") == "0"
    with hold_run_directory(output_dir) if owner else nullcontext():
        if launches:
            from easyrec.launch import launch_workers

            job_logging = OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True)
            return launch_workers(cfg, distributed, output_dir, overrides, job_logging)
        return train(cfg, output_dir, overrides)


def train(
    cfg: DictConfig, output_dir: Path, overrides: list[str] | None = None, tracked_run: str | None = None
) -> float:
    """Validate ``cfg``, build the components, train; the tracked run ends whatever happens.

    In a distributed job every worker runs this; the main one (rank 0) alone tracks the run and writes files.
    ``tracked_run``: the id of the run the launcher opened (or reopened, to resume) for this job: the workers
    log into it.
    Returns the final value of ``cfg.optimized_metric``.
    """
    validate(cfg)
    import torch

    from easyrec.loggers import NullLogger
    from easyrec.losses.heads import label_rules
    from easyrec.optim import attach_loss_parameters, build_optimizer, build_schedules
    from easyrec.resume import checked_resume_state, fine_tune, load_named_checkpoint
    from easyrec.trainer import configure_process, planned_steps

    torch.manual_seed(cfg.seed)
    # Constructors only check their arguments: a bad config fails here, before a run is opened.
    distributed = instantiate(cfg.distributed)
    data = instantiate(cfg.data, _convert_="all")
    with config_errors("loss"):
        loss = instantiate(cfg.loss)
    early_stopping = instantiate(cfg.early_stopping)
    gradients = instantiate(cfg.gradients, _convert_="all")
    logger = instantiate(cfg.logger)
    metrics = instantiate(cfg.metrics, _convert_="all")
    check_loss_fits_data(loss, data.spec)
    config = OmegaConf.to_container(cfg, resolve=True)
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    resume, init_from = trainer_options.pop("resume", False), trainer_options.pop("init_from", None)
    memory_check = trainer_options.pop("memory_check", True)
    if resume and init_from:
        raise ConfigError(
            "trainer.resume and trainer.init_from: give one (resume continues a run, init_from starts a new one)"
        )
    distributed.start()
    if not distributed.is_main:
        logger = NullLogger()  # the main worker alone talks to the tracker
    if distributed.restart_count and not resume:
        resume = "auto"  # restarted workers continue from the run's latest checkpoint, if there is one yet
    # the main worker reads the checkpoint and hands it to the others (their machines may not have the files)
    state = distributed.broadcast(checked_resume_state(resume, output_dir, config) if distributed.is_main else None)
    init_state = load_named_checkpoint("trainer.init_from", init_from) if init_from else None
    # a checkpoint's config builds nothing here, but may name only code this run's own config trusts
    loaded = [checkpoint for checkpoint in (state, init_state) if checkpoint is not None]
    if loaded:  # easyrec's own targets are read from its YAML files only then, not at every start
        trusted = TrustedTargets.from_env(exact=[target for _, target in code_references(config)])
        for checkpoint in loaded:
            check_stored_config(checkpoint.get("config") or {}, checkpoint["path"], trusted)
    status = "FAILED"
    try:
        if tracked_run:
            logger.attach(tracked_run, output_dir)
        else:
            logger.start(config, overrides or [], output_dir, run_id=state["run"]["id"] if state else None)
        if distributed.restart_count:
            logger.set_tags({"easyrec.restarts": str(distributed.restart_count)})
        data.setup(keep_encoding=init_state["data"]["encoder"] if init_state else None)
        for rule in label_rules(loss, data.spec.label_names):
            data.check_labels(rule.required_by, rule.values, rule.value_range, rule.column, rule.every_value)
        if memory_check:
            check_memory(cfg, data, loss, distributed, trainer_options.get("device", "auto"))
        with config_errors("model"):
            model = build_model(instantiate(cfg.model, _convert_="all"), data, loss)
        log.info("model: %s, %s parameters", type(model).__name__, f"{sum(p.numel() for p in model.parameters()):,}")
        if distributed.world_size > 1:
            torch.manual_seed(cfg.seed + distributed.rank)  # the weights are drawn alike everywhere, dropout is not
        gradients.prepare(model)
        with config_errors("optimizer"):
            optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), model)
            attach_loss_parameters(optimizer, loss)
        with config_errors("lr_schedule"):
            steps = planned_steps(data, distributed, trainer_options["max_epochs"], trainer_options["max_steps"])
            lr_schedulers = build_schedules(instantiate(cfg.lr_schedule, _convert_="all"), optimizer, steps)
        if init_state:
            tuned = fine_tune(model, init_state, list(data.input_spec.cardinalities))
            logger.set_tags({"easyrec.init_from": tuned["path"], "easyrec.init_skipped": str(len(tuned["skipped"]))})
        configure_process(trainer_options.pop("num_threads", None))  # process-wide: the run's, not the Trainer's
        trainer = instantiate(OmegaConf.create(trainer_options))(
            model=model,
            data=data,
            optimizer=optimizer,
            loss=loss,
            output_dir=output_dir,
            logger=logger,
            early_stopping=early_stopping,
            distributed=distributed,
            lr_schedulers=lr_schedulers,
            gradients=gradients,
            metrics=metrics,
            config=config,
        )
        trainer.run_id = getattr(logger, "run_id", None)
        if state is not None:
            with checkpoint_errors(state["path"]):
                trainer.load_state_dict(state)
            log.info("resumed from %s at step %d", state["path"], trainer.step)
        if cfg.optimized_metric not in trainer.metric_names():
            raise ConfigError(
                f"optimized_metric={cfg.optimized_metric}: no such metric; "
                f"the metrics are: {', '.join(trainer.metric_names())}"
            )
        metrics = trainer.fit()
        status = "FINISHED"
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Interrupted): a checkpoint was written when training
        status = "KILLED"
        raise
    except Exception as error:
        logger.set_tags({"easyrec.error": f"{type(error).__name__}: {error}"[:5000]})
        raise
    finally:
        for log_file in output_dir.glob("*.log"):
            logger.log_artifact(log_file)
        logger.finish(status)
        distributed.close()
    return metrics[cfg.optimized_metric]


def check_loss_fits_data(loss: Any, spec: Any) -> None:
    """Refuse a loss the data cannot feed: a session loss without sessions, one label loss on several columns."""
    name = type(loss).__name__
    if getattr(loss, "requires_sessions", False) and not spec.session:
        raise ConfigError(f"loss={name} works on sessions: name the session column with data.features.session=...")
    labels = spec.label_names
    if len(labels) > 1 and not hasattr(loss, "heads"):
        raise ConfigError(
            f"loss={name} takes one label column, but data.features.label names {len(labels)} "
            f"({', '.join(labels)}): pick one (data.features.label=...) or use a multi-task loss (loss=multi_task)"
        )


def check_memory(cfg: DictConfig, data: Any, loss: Any, distributed: Any, device: str) -> None:
    """Refuse (ConfigError) a model whose parameters, gradients and optimizer state exceed the memory available to
    this worker, before building it: the model and the optimizer are built on the ``meta`` device, which allocates
    nothing. A model that cannot be built there (a user's model with data-dependent code) is not checked."""
    import torch

    from easyrec.memory import available_bytes, training_bytes
    from easyrec.optim import build_optimizer

    try:
        with torch.device("meta"):
            with config_errors("model"):
                model = construct_model(instantiate(cfg.model, _convert_="all"), data.input_spec, loss)
            with config_errors("optimizer"):
                optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), model)
    except (NotImplementedError, RuntimeError) as error:
        log.debug("memory check skipped: the model cannot be built on the meta device (%s)", error)
        return
    where = distributed.device(device)
    # the workers of a CPU machine share its memory; each GPU worker has a GPU of its own
    sharing = getattr(distributed, "nproc_per_node", 1) if where.type == "cpu" else 1
    needed, available = training_bytes(model, optimizer), available_bytes(where) // sharing
    if needed > available:
        count = sum(p.numel() for p in model.parameters())
        each = f" for each of {sharing} workers" if sharing > 1 else ""
        raise ConfigError(
            f"model: {type(model).__name__} needs about {needed / 2**30:,.1f} GiB for its {count:,} parameters, their "
            f"gradients and the {type(optimizer).__name__} state, more than the {available / 2**30:,.1f} GiB available "
            f"on {where}{each}: make it smaller (model.hidden_units, model.embedding_dim, ...) or skip this check "
            "with trainer.memory_check=false"
        )


def construct_model(factory: Any, input_spec: Any, loss: Any) -> Any:
    """``factory(input_spec)`` with the outputs ``loss`` reads: one tower per task for a multi-task model (one that
    takes ``task_outputs``), else ``num_outputs`` logits per sample."""
    num_outputs = getattr(loss, "num_outputs", 1)
    task_outputs = getattr(loss, "task_outputs", (num_outputs,))
    if "task_outputs" in inspect.signature(factory).parameters:
        return factory(input_spec, task_outputs=tuple(task_outputs))
    return factory(input_spec, **({"num_outputs": num_outputs} if num_outputs != 1 else {}))


def build_model(factory: Any, data: Any, loss: Any, probe: Any = None) -> Any:
    """Build the model with the outputs ``loss`` reads, and check that its output has their shape.

    A multi-task model (one that takes ``task_outputs``) gets one tower per task; any other model gets
    ``num_outputs`` logits per sample. A two-tower model's ``(B, 2, D)`` output needs a retrieval loss.
    ``data``: anything with an ``input_spec`` (a set-up TabularData, a fitted FeatureEncoder); ``probe``: the batch
    the output shape is checked on (default: the first two rows of ``data``'s eval split).
    """
    import torch

    num_outputs = getattr(loss, "num_outputs", 1)
    model = construct_model(factory, data.input_spec, loss)
    retrieval = getattr(loss, "task", None) == "retrieval"
    model_name, loss_name = type(model).__name__, type(loss).__name__
    pairs = getattr(model, "output_kind", None) == "pair_embeddings"
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
            probe = probe if probe is not None else next(iter(data.eval.batches(2)))
            shape = tuple(model.eval()(probe.dense, probe.sparse).shape[1:])
        expected = () if num_outputs == 1 else (num_outputs,)
        if shape != expected:
            raise ConfigError(
                f"model={model_name} gives {shape[0] if shape else 1} outputs per sample, loss={loss_name} reads "
                f"{num_outputs} ({_describe_outputs(loss)})"
            )
    return model


def _describe_outputs(loss: Any) -> str:
    columns = getattr(loss, "columns", None)
    if not columns:
        return "its logits"
    return ", ".join(f"{task}: {stop - start}" for task, (start, stop) in columns.items())


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises :class:`~easyrec.errors.Interrupted` (the run ends KILLED) instead of killing the process
    outright; while training, the trainer's own handler stops at a step boundary with a checkpoint first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: Any) -> None:
        raise Interrupted(number, signal.Signals(number).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
