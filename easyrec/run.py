"""``easyrec train``: compose the config, build every component from its ``_target_``, train, track.

Only Hydra and OmegaConf are imported at module level, so ``easyrec train --cfg job`` answers fast;
torch and the components are imported when a run starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from easyrec.config import validate
from easyrec.errors import ConfigError, EasyrecError
from easyrec.user_errors import describe, exit_with

log = logging.getLogger("easyrec")


@hydra.main(version_base="1.3", config_path="pkg://easyrec.conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """The Hydra app behind ``easyrec train``; returns ``cfg.optimized_metric`` for sweepers."""
    hydra_cfg = HydraConfig.get()
    try:
        return train(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task))
    except EasyrecError as error:
        # Exit here, not through Hydra, which would print the job's overrides as a second line.
        exit_with("train", error, describe(error))


def train(cfg: DictConfig, output_dir: Path, overrides: list[str] | None = None) -> float:
    """Validate ``cfg``, build the components, train; the tracked run ends whatever happens.

    Returns the final value of ``cfg.optimized_metric``.
    """
    validate(cfg)
    import torch

    from easyrec.optim import attach_loss_parameters, build_optimizer, build_schedules

    torch.manual_seed(cfg.seed)
    # Constructors only check their arguments: a bad config fails here, before a run is opened.
    distributed = instantiate(cfg.distributed)
    data = instantiate(cfg.data, _convert_="all")
    loss = instantiate(cfg.loss)
    early_stopping = instantiate(cfg.early_stopping)
    gradients = instantiate(cfg.gradients, _convert_="all")
    logger = instantiate(cfg.logger)
    if getattr(loss, "requires_sessions", False) and not data.spec.session:
        raise ConfigError(
            f"loss={type(loss).__name__} works on sessions: name the session column with data.features.session=..."
        )
    status = "FAILED"
    try:
        logger.start(OmegaConf.to_container(cfg, resolve=True), overrides or [], output_dir)
        data.setup()
        if getattr(loss, "label_values", None):
            data.check_labels(loss.label_values, required_by=f"loss {type(loss).__name__}")
        num_outputs = getattr(loss, "num_outputs", 1)  # e.g. JRC's two logits
        extra = {"num_outputs": num_outputs} if num_outputs != 1 else {}
        model = instantiate(cfg.model, _convert_="all")(data.input_spec, **extra)
        log.info("model: %s, %s parameters", type(model).__name__, f"{sum(p.numel() for p in model.parameters()):,}")
        gradients.prepare(model)
        with config_errors("optimizer"):
            optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), model)
            attach_loss_parameters(optimizer, loss)
        with config_errors("lr_schedule"):
            lr_schedulers = build_schedules(instantiate(cfg.lr_schedule, _convert_="all"), optimizer)
        trainer = instantiate(cfg.trainer)(
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
        )
        if cfg.optimized_metric not in trainer.metric_names():
            raise ConfigError(
                f"optimized_metric={cfg.optimized_metric}: no such metric; "
                f"the metrics are: {', '.join(trainer.metric_names())}"
            )
        metrics = trainer.fit()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as error:
        logger.set_tags({"easyrec.error": f"{type(error).__name__}: {error}"[:5000]})
        raise
    finally:
        for log_file in output_dir.glob("*.log"):
            logger.log_artifact(log_file)
        logger.finish(status)
    return metrics[cfg.optimized_metric]


@contextmanager
def config_errors(key: str) -> Iterator[None]:
    """Report a constructor's refusal of its arguments (ValueError) as a ConfigError naming ``key``."""
    try:
        yield
    except (ValueError, InstantiationException) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) and error.__cause__ else error
        raise ConfigError(f"{key}: {cause}") from error
