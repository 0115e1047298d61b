"""``easyrec train``: the Hydra app, and the life of a run: open the tracked run, resume, train, close it.

The components are built by :mod:`easyrec.recipe`. Only Hydra and OmegaConf are imported at module level, so
``easyrec train --cfg job`` answers fast; torch and the components are imported when a run starts.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from easyrec.config import validate
from easyrec.config.trust import TrustedTargets, check_stored_config, code_references
from easyrec.errors import ConfigError, EasyrecError, sigterm_interrupts
from easyrec.sweeps.jobs import run_sweep_job
from easyrec.user_errors import describe, exit_with
from hydra_plugins.easyrec_launcher.ray_launcher import RayLauncher
from hydra_plugins.easyrec_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("easyrec")

# Hydra finds plugins by listing the folders of hydra_plugins, which an editable install does not show it.
Plugins.instance().register(OptunaSweeper)
Plugins.instance().register(RayLauncher)
# conf/hydra/launcher/ray.yaml takes the name of the Ray plugin's own config on purpose (hydra/launcher=ray is
# easyrec's launcher); Hydra merges the plugin's schema under it, which fits, and would warn at every composition.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


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
    except (EasyrecError, InstantiationException) as error:
        # a constructor's refusal (distributed=model_parallel without torchrec) comes wrapped by Hydra
        refusal = error.__cause__ if isinstance(error, InstantiationException) else error
        if not isinstance(refusal, EasyrecError):
            raise
        # Exit here, not through Hydra, which would print the job's overrides as a second line.
        exit_with("train", refusal, describe(refusal))


def run_job(cfg: DictConfig, output_dir: Path, overrides: list[str]) -> float:
    """One job: trained in this process, or by the workers it starts (``distributed=ddp``, outside torchrun).

    The process that owns the job's run directory locks it for the job's life (:mod:`easyrec.run_lock`): this one,
    unless it is a worker of an outside torchrun other than rank 0, or a launcher of workers on several machines
    (there, the rank-0 worker does: :func:`easyrec.launch.worker`).
    """
    from easyrec.run_lock import hold_run_directory

    # the data node and its files first: they need no torch, which binding the other nodes imports
    validate(cfg, "data")
    # a missing file or column fails before a run is opened, as a bad config does (data.setup reads all later)
    instantiate(cfg.data, _convert_="all").check_files()
    validate(cfg)
    distributed = instantiate(cfg.distributed)
    launches = getattr(distributed, "launches_workers", False)
    if launches and distributed.sharded:  # refused here in one line, not by every worker it would start
        from easyrec.ema import check_layout
        from easyrec.recipe import fused_optimizer

        fused_optimizer(cfg, "cuda" if distributed.backend == "nccl" else "cpu")
        check_layout(cfg.trainer.get("ema"), distributed)
    owner = distributed.nnodes == 1 if launches else os.environ.get("RANK", "0") == "0"
    with hold_run_directory(output_dir) if owner else nullcontext():
        if launches:
            from easyrec.launch import launch_workers

            job_logging = OmegaConf.to_container(HydraConfig.get().job_logging, resolve=True)
            return launch_workers(train, cfg, distributed, output_dir, overrides, job_logging)
        return train(cfg, output_dir, overrides)


def train(
    cfg: DictConfig, output_dir: Path, overrides: list[str] | None = None, tracked_run: str | None = None
) -> float:
    """Validate ``cfg``, build the components (:mod:`easyrec.recipe`), train; the tracked run ends whatever happens.

    In a distributed job every worker runs this; the main one (rank 0) alone tracks the run and writes files.
    ``tracked_run``: the id of the run the launcher opened (or reopened, to resume) for this job: the workers
    log into it.
    Returns the final value of ``cfg.optimized_metric``.
    """
    validate(cfg)
    import torch

    from easyrec.config.schema import InitOptions
    from easyrec.loggers import NullLogger
    from easyrec.modules.embedding import deferred_tables
    from easyrec.recipe import (
        build_components,
        build_model,
        build_optimizers,
        check_labels,
        check_memory,
        checkpoint_errors,
        fill_deferred_tables,
        report_plan,
        shard_model,
    )
    from easyrec.resume import checked_resume_state, fine_tune, init_optimizer, init_state
    from easyrec.trainer import configure_process, planned_steps

    torch.manual_seed(cfg.seed)
    parts = build_components(cfg)  # a bad config fails here, before a run is opened
    data, loss, distributed, logger = parts.data, parts.loss, parts.distributed, parts.logger
    config = OmegaConf.to_container(cfg, resolve=True)
    trainer_options = OmegaConf.to_container(cfg.trainer, resolve=True)
    resume, init_from = trainer_options.pop("resume", False), trainer_options.pop("init_from", None)
    init = InitOptions(**trainer_options.pop("init", None) or {})
    memory_check = trainer_options.pop("memory_check", True)
    if resume not in (False, "auto") and init_from:  # auto: resume this run if it has a checkpoint, else init_from
        raise ConfigError(
            "trainer.resume and trainer.init_from: give one (resume continues a run, init_from starts a new one), "
            "or trainer.resume=auto with init_from (a daily job run again: it continues its own checkpoint if any)"
        )
    distributed.start()
    if not distributed.is_main:
        logger = NullLogger()  # the main worker alone talks to the tracker
    if distributed.restart_count and not resume:
        resume = "auto"  # restarted workers continue from the run's latest checkpoint, if there is one yet
    # the main worker reads the checkpoint and hands it to the others (their machines may not have the files; the
    # shards of sharded tables, each worker reads its own: they must see the run directory)
    resumed = checked_resume_state(resume, output_dir, config, distributed.sharded) if distributed.is_main else None
    state = distributed.broadcast(resumed)
    start = init_state(init_from, init) if state is None else None  # EasyRec's: a run's own checkpoint comes first
    # a checkpoint's config builds nothing here, but may name only code this run's own config trusts
    loaded = [checkpoint for checkpoint in (state, start) if checkpoint is not None]
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
        # a run started from another's encodes with that run's vocabularies, grown: resumed, it keeps its own
        tuned_run = state is not None and (state.get("config") or {}).get("trainer", {}).get("init_from")
        grown = state if tuned_run else start
        data.setup(keep_encoding=grown["data"]["encoder"] if grown else None)
        check_labels(data, loss)
        if distributed.sharded:
            distributed.check_inputs(data.input_spec)
        if memory_check:
            check_memory(cfg, data, loss, distributed, trainer_options.get("device", "auto"))

        tuned: dict = {}  # what trainer.init_from loaded: its optimizer slots follow, once the optimizer exists

        def prepare(model: torch.nn.Module) -> torch.nn.Module:
            """The model's starting weights (trainer.init_from), its tables sharded (model_parallel)."""
            count = sum(p.numel() for p in model.parameters())
            log.info("model: %s, %s parameters", type(model).__name__, f"{count:,}")
            if start:
                if distributed.sharded:  # the checkpoint's tables are whole in memory: each worker keeps its rows
                    fill_deferred_tables(model, cfg.seed)
                tuned.update(fine_tune(model, start, list(data.input_spec.table_rows), init))
                tags = {"easyrec.init_from": tuned["path"], "easyrec.init_skipped": str(len(tuned["skipped"]))}
                logger.set_tags(tags)
            if distributed.sharded:
                parts.gradients.freeze_parameters(model)  # before the DDP that sharding builds reads requires_grad
                model = shard_model(cfg, model, distributed, trainer_options.get("device", "auto"))
                report_plan(distributed, output_dir, logger)
            return model

        with deferred_tables() if distributed.sharded else nullcontext():
            model = build_model(cfg.model, data, loss, prepare=prepare)
        if distributed.world_size > 1:
            torch.manual_seed(cfg.seed + distributed.rank)  # the weights are drawn alike everywhere, dropout is not
        parts.gradients.prepare(model)
        steps = planned_steps(data, distributed, trainer_options["max_epochs"], trainer_options["max_steps"])
        optimizer, lr_schedulers = build_optimizers(cfg, model, loss, steps, fused=distributed.fused_optimizer)
        configure_process(trainer_options.pop("num_threads", None))  # process-wide: the run's, not the Trainer's
        trainer = instantiate(OmegaConf.create(trainer_options))(
            model=model,
            data=data,
            optimizer=optimizer,
            loss=loss,
            output_dir=output_dir,
            logger=logger,
            early_stopping=parts.early_stopping,
            distributed=distributed,
            lr_schedulers=lr_schedulers,
            gradients=parts.gradients,
            metrics=parts.metrics,
            config=config,
        )
        trainer.run_id = getattr(logger, "run_id", None)
        if tuned and init.optimizer:  # the model on its device now: the slots go where the optimizer keeps them
            sizes = list(data.input_spec.table_rows)
            restored = init_optimizer(
                trainer.optimizer, start, trainer.model, tuned["sources"], sizes, distributed.sharded
            )
            logger.set_tags({"easyrec.init_optimizer": str(len(restored))})
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
        if isinstance(error, EasyrecError):
            # shown as one line, with no traceback: what its frames hold (a stream's loader processes, the model)
            # goes now, not at a later garbage collection (a sweep's next job runs in this process)
            traceback.clear_frames(error.__traceback__)
        raise
    finally:
        for log_file in output_dir.glob("*.log"):
            logger.log_artifact(log_file)
        logger.finish(status)
        distributed.close()
    return metrics[cfg.optimized_metric]
