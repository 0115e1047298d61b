"""A trained run, rebuilt from one of its checkpoints: config, data encoding, loss, heads and model, ready to
evaluate or predict (``easyrec evaluate``, ``easyrec predict``).

Example::

    run = SavedRun.load("outputs/2026-11-26/10-00-00", ["data.eval_path=next_week.csv"])
    print(run.evaluate())  # {'eval/auc': ..., 'eval/logloss': ...}
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from easyrec.checkpoints import WHICH, load_checkpoint
from easyrec.config import validate
from easyrec.config.trust import TrustedTargets, check_stored_config
from easyrec.data.batches import Batch
from easyrec.data.features import FeatureEncoder
from easyrec.data.tabular import TabularData
from easyrec.distributed import pick_device
from easyrec.ema import averaged_weights
from easyrec.errors import CheckpointError, ConfigError
from easyrec.losses.base import Loss
from easyrec.losses.heads import Head
from easyrec.metrics import EvalMetrics, evaluate_model
from easyrec.recipe import Components, build_components, build_model, check_labels, checkpoint_errors


class SavedRun:
    """The run a checkpoint was written by, rebuilt from the config inside it (no Hydra composition).

    Everything is built when first used: :attr:`encoder`, :attr:`model` and :attr:`heads` need no data
    (prediction); :attr:`data` reads and encodes only the eval split, with the checkpoint's vocabularies and
    statistics (evaluation).

    Args:
        path: the checkpoint file.
        state: the loaded checkpoint (see :mod:`easyrec.checkpoints`).
        config: the run's resolved config, with any overrides applied.
    """

    def __init__(self, path: Path, state: dict[str, Any], config: DictConfig) -> None:
        self.path, self.state, self.config = path, state, config

    @classmethod
    def load(
        cls, location: str | Path, overrides: Sequence[str] = (), which: str = "best", trust: Sequence[str] = ()
    ) -> SavedRun:
        """The run of the checkpoint ``location`` names: a checkpoint file, or a run directory (its ``best.pt`` with
        ``which="best"`` when there is one, else its latest step checkpoint); ``overrides`` are ``key=value`` changes
        to its config (``data.eval_path=other.csv``, ``trainer.device=cpu``), checked like ``easyrec train``'s.

        The stored config is untrusted: it may name only the components easyrec ships and the modules or callables
        in ``trust`` (and ``EASYREC_TRUSTED_TARGETS``), see :mod:`easyrec.config.trust`."""
        if which not in WHICH:
            raise ConfigError(f"checkpoint={which}: must be one of: {', '.join(WHICH)}")
        state = load_checkpoint(location, which)
        path = Path(state["path"])
        for key in ("config", "model", "data"):
            if not state.get(key):
                raise CheckpointError(f"{path}: the checkpoint has no '{key}' (written by an older easyrec?)")
        check_stored_config(state["config"], str(path), TrustedTargets.from_env(trust))
        config = OmegaConf.create(state["config"])
        apply_overrides(config, overrides)
        validate(config)
        return cls(path, state, config)

    # ------------------------------------------------------------------ the parts

    @property
    def run_dir(self) -> Path | None:
        """The run directory of a checkpoint in its ``checkpoints/`` folder, else None."""
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else None

    @property
    def run_id(self) -> str | None:
        """The MLflow run the checkpoint belongs to (None when it was not tracked)."""
        return (self.state.get("run") or {}).get("id")

    @functools.cached_property
    def device(self) -> torch.device:
        """``trainer.device`` of the config (overridable); also applies ``trainer.num_threads``."""
        trainer = self.config.get("trainer") or {}
        if trainer.get("num_threads"):
            torch.set_num_threads(int(trainer.num_threads))
        return pick_device(str(trainer.get("device", "auto")))

    @functools.cached_property
    def components(self) -> Components:
        """The run's data (not set up), loss and metrics, built from its config (:mod:`easyrec.recipe`)."""
        return build_components(self.config, training=False)

    @property
    def source(self) -> TabularData:
        """The run's data component, not set up: its feature spec and how it reads files."""
        return self.components.data

    @functools.cached_property
    def encoder(self) -> FeatureEncoder:
        """The feature encoder with the checkpoint's vocabularies and statistics."""
        self.source.encoder.load_state_dict(self._encoding())
        return self.source.encoder

    def _encoding(self) -> dict[str, Any]:
        """The checkpoint's encoder state; CheckpointError when it lacks a column the data spec encodes."""
        encoding, spec = self.state["data"]["encoder"], self.source.spec
        vocab = [name for group in spec.categorical if group.encoding == "vocab" for name in group.names]
        standardized = [name for group in spec.dense if group.standardize for name in group.names]
        missing = [name for name in vocab if name not in encoding["vocabularies"]]
        missing += [name for name in standardized if name not in encoding["mean"]]
        if missing:
            raise CheckpointError(
                f"{self.path}: does not fit this data config: the checkpoint has no encoding of column "
                f"{', '.join(repr(name) for name in missing)}"
            )
        return encoding

    @functools.cached_property
    def data(self) -> TabularData:
        """The data component with only its eval split read and encoded by :attr:`encoder`; the eval labels are
        checked against what the loss needs, as in training."""
        data = self.source
        data.setup_eval(self._encoding())
        check_labels(data, self.loss)
        return data

    @functools.cached_property
    def loss(self) -> Loss:
        """The loss (it decides the heads: tasks, label columns, scores), with the checkpoint's parameters."""
        loss = self.components.loss
        if self.state.get("loss"):
            with checkpoint_errors(str(self.path)):
                loss.load_state_dict(self.state["loss"])
        return loss

    @functools.cached_property
    def heads(self) -> list[Head]:
        """What the model predicts: one head per task (see :meth:`~easyrec.losses.base.Loss.heads`)."""
        return self.loss.heads(self.source.spec.label_names)

    @property
    def metrics(self) -> EvalMetrics:
        return self.components.metrics

    @functools.cached_property
    def model(self) -> nn.Module:
        """The model built as training built it (:func:`~easyrec.recipe.build_model`), with the checkpoint's
        weights, on :attr:`device`, in eval mode."""
        model = build_model(self.config.model, self.encoder, self.loss, probe=self.probe())
        saved, own = averaged_weights(self.state), model.state_dict()  # with trainer.ema: the averaged weights
        problems = [f"{name} is not in the model" for name in saved if name not in own]
        problems += [f"{name} is not in the checkpoint" for name in own if name not in saved]
        problems += [
            f"{name} has shape {tuple(saved[name].shape)} in the checkpoint, {tuple(own[name].shape)} in the model"
            for name in own
            if name in saved and saved[name].shape != own[name].shape
        ]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CheckpointError(
                f"{self.path}: does not fit the model its config builds ({type(model).__name__}): {problems[0]}{more}"
            )
        with checkpoint_errors(str(self.path)):
            model.load_state_dict(saved)
        return model.to(self.device).eval()

    def probe(self, rows: int = 2) -> Batch:
        """``rows`` rows of zeros: dense 0.0, every categorical field its row 0 (out of vocabulary, or bucket 0), every
        list feature one id of row 0."""
        return Batch.of_zeros(self.encoder.input_spec, rows)

    # ------------------------------------------------------------------ using it

    def evaluate(self) -> dict[str, float]:
        """The eval metrics of the checkpoint's weights on :attr:`data`'s eval split, computed by the trainer's own
        eval loop: on the run's eval split, the numbers training logged at the checkpoint's step."""
        evaluation = self.metrics.evaluation(self.heads, self.data, self.loss.to(self.device))
        return evaluate_model(self.model, self.data.eval_batches(), evaluation, self.device)

    @torch.inference_mode()
    def predict(self, batch: Batch) -> list[torch.Tensor]:
        """Each head's predictions for ``batch`` (on the CPU): ``(B,)``, or ``(B, C)`` class probabilities."""
        batch = batch.to(self.device)
        outputs = self.model(*batch.inputs).float()
        return [head.scores(head.outputs(outputs)).cpu() for head in self.heads]


def apply_overrides(config: DictConfig, overrides: Sequence[str]) -> None:
    """Apply ``key=value`` overrides (Hydra's syntax for values: ``[16,8]``, ``null``, quoted strings) to
    ``config`` in place. Only existing keys can be set; a config group (a whole node) cannot be swapped, since the
    model and its encoding come from the checkpoint."""
    if not overrides:
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    OmegaConf.set_struct(config, True)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key, line = override.key_or_group, override.input_line
        if override.is_sweep_override() or override.is_delete() or override.is_add() or override.is_force_add():
            raise ConfigError(f"{line}: only key=value overrides of existing keys apply to a saved run")
        current = OmegaConf.select(config, key, default=_ABSENT, throw_on_missing=False)
        if current is _ABSENT:
            raise ConfigError(f"{key}: no such key in the run's config")
        value = override.value()
        if isinstance(current, DictConfig) and not isinstance(value, dict):
            raise ConfigError(
                f"{line}: {key} is a config group; a saved run keeps its options (set its keys, e.g. {key}.<key>=...)"
            )
        OmegaConf.update(config, key, value, merge=True)


_ABSENT = object()
