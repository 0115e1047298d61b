"""Typed schemas of the components easyrec ships, keyed by the ``_target_`` they configure.

:func:`easyrec.config.validate` merges each config group's node into the schema of its ``_target_``, so a
wrong type or an unknown key is refused, and the ``checked`` rules catch impossible values, before any
work. Keying by ``_target_`` also checks the user's own options (``--config-dir``) that build our
components. This module imports no torch, so ``easyrec train --cfg job`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from easyrec.config.checks import Rule, between, checked, each, ge, gt, non_empty, one_of

# --------------------------------------------------------------------------- data


@dataclass
class DenseFeaturesConfig:
    """Float columns, transformed alike."""

    names: list[str] = checked([], non_empty())
    transform: str = checked("none", one_of("none", "log1p"))
    standardize: bool = False
    fill_value: float = 0.0


@dataclass
class CategoricalFeaturesConfig:
    """Id columns, encoded alike into embedding rows."""

    names: list[str] = checked([], non_empty())
    encoding: str = checked("vocab", one_of("vocab", "hash"))
    num_buckets: int | None = checked(None, gt(1))
    min_count: int = checked(1, ge(1))
    max_vocab_size: int | None = checked(None, gt(0))


@dataclass
class FeaturesConfig:
    dense: list[DenseFeaturesConfig] = field(default_factory=list)
    categorical: list[CategoricalFeaturesConfig] = field(default_factory=list)
    label: Any = "label"  # a column name, or a list of them
    weight: str | None = None
    session: str | None = None


@dataclass
class DataConfig:
    _target_: str = MISSING
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    batch_size: int = checked(1024, gt(0))
    eval_batch_size: int = checked(16384, gt(0))
    shuffle: bool = True
    seed: int = 0

    @staticmethod
    def consistency(node: Any) -> str | None:
        label = node.features.label
        names = [label] if isinstance(label, str) else list(label) if label is not None else []
        if not names or not all(isinstance(name, str) for name in names):
            return f"features.label={label}: must be a column name or a non-empty list of column names"
        for group in node.features.categorical:
            if group.encoding == "hash" and group.num_buckets is None:
                shown = ", ".join(group.names) if len(group.names) < 4 else f"{group.names[0]}, ..., {group.names[-1]}"
                return f"features.categorical: encoding=hash needs num_buckets (features {shown})"
        return None


@dataclass
class SyntheticDataConfig(DataConfig):
    _target_: str = "easyrec.data.SyntheticCTRData"
    num_rows: int = checked(500_000, ge(100))
    eval_fraction: float = checked(0.1, between(0, 1, low_open=True, high_open=True))
    positive_rate: float = checked(0.25, between(0, 1, low_open=True, high_open=True))


@dataclass
class CSVDataConfig(DataConfig):
    _target_: str = "easyrec.data.CSVData"
    train_path: str = MISSING
    eval_path: str = MISSING
    delimiter: str = ","
    header: bool = True
    columns: list[str] | None = None
    cache_dir: str | None = None  # null: no cache of encoded splits

    @staticmethod
    def consistency(node: Any) -> str | None:
        if not node.header and not node.columns:
            return "columns: required when header=false (the names of the file's columns, in order)"
        return DataConfig.consistency(node)


@dataclass
class ParquetDataConfig(DataConfig):
    _target_: str = "easyrec.data.ParquetData"
    train_path: str = MISSING
    eval_path: str = MISSING
    cache_dir: str | None = None


# --------------------------------------------------------------------------- model


@dataclass
class DeepFMConfig:
    _target_: str = "easyrec.models.DeepFM"
    _partial_: bool = True
    embedding_dim: int = checked(16, gt(0))
    hidden_units: list[int] = checked([400, 400, 400], each(gt(0)))
    dropout: float = checked(0.0, between(0, 1, high_open=True))
    sparse_embeddings: bool = False
    embedding_regularization: float = checked(0.0, ge(0))


@dataclass
class WideAndDeepConfig(DeepFMConfig):
    _target_: str = "easyrec.models.WideAndDeep"
    hidden_units: list[int] = checked([256, 128, 64], each(gt(0)))


@dataclass
class MMoEConfig:
    _target_: str = "easyrec.models.MMoE"
    _partial_: bool = True
    embedding_dim: int = checked(16, gt(0))
    num_experts: int = checked(4, gt(0))
    expert_units: list[int] = checked([256, 128], each(gt(0)))
    tower_units: list[int] = checked([64], each(gt(0)))
    dropout: float = checked(0.0, between(0, 1, high_open=True))
    sparse_embeddings: bool = False
    embedding_regularization: float = checked(0.0, ge(0))

    @staticmethod
    def consistency(node: Any) -> str | None:
        return None if node.expert_units else "expert_units: must not be empty"


@dataclass
class ESMMConfig:
    _target_: str = "easyrec.models.ESMM"
    _partial_: bool = True
    embedding_dim: int = checked(16, gt(0))
    tower_units: list[int] = checked([256, 128, 64], each(gt(0)))
    dropout: float = checked(0.0, between(0, 1, high_open=True))
    sparse_embeddings: bool = False
    embedding_regularization: float = checked(0.0, ge(0))


@dataclass
class DSSMConfig:
    _target_: str = "easyrec.models.DSSM"
    _partial_: bool = True
    user_features: list[str] = checked([], non_empty())
    item_features: list[str] = checked([], non_empty())
    embedding_dim: int = checked(16, gt(0))
    hidden_units: list[int] = checked([256, 128], each(gt(0)))
    output_dim: int = checked(32, gt(0))
    normalize: bool = True
    dropout: float = checked(0.0, between(0, 1, high_open=True))
    sparse_embeddings: bool = False
    embedding_regularization: float = checked(0.0, ge(0))

    @staticmethod
    def consistency(node: Any) -> str | None:
        both = [name for name in node.user_features if name in node.item_features]
        return f"item_features: {both[0]!r} is also in user_features" if both else None


# --------------------------------------------------------------------------- optimizer


@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = checked(1e-3, gt(0))
    betas: list[float] = checked([0.9, 0.999], each(between(0, 1, high_open=True)))
    eps: float = checked(1e-8, ge(0))
    weight_decay: float = checked(0.0, ge(0))
    amsgrad: bool = False
    fused: bool | None = None


@dataclass
class AdagradConfig:
    _target_: str = "torch.optim.Adagrad"
    _partial_: bool = True
    lr: float = checked(0.1, gt(0))
    lr_decay: float = checked(0.0, ge(0))
    weight_decay: float = checked(0.0, ge(0))
    initial_accumulator_value: float = checked(0.1, ge(0))
    eps: float = checked(1e-10, ge(0))


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = checked(0.1, gt(0))
    momentum: float = checked(0.0, ge(0))
    dampening: float = checked(0.0, ge(0))
    weight_decay: float = checked(0.0, ge(0))
    nesterov: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = checked(0.01, ge(0))


@dataclass
class LazyAdamConfig:
    _target_: str = "easyrec.optim.LazyAdam"
    _partial_: bool = True
    lr: float = checked(1e-3, gt(0))
    betas: list[float] = checked([0.9, 0.999], each(between(0, 1, high_open=True)))
    eps: float = checked(1e-8, ge(0))


@dataclass
class TFRMSPropConfig:
    _target_: str = "easyrec.optim.TFRMSProp"
    _partial_: bool = True
    lr: float = checked(0.01, gt(0))
    decay: float = checked(0.9, between(0, 1, high_open=True))
    momentum: float = checked(0.9, between(0, 1, high_open=True))
    eps: float = checked(1.0, gt(0))


@dataclass
class FtrlConfig:
    _target_: str = "easyrec.optim.Ftrl"
    _partial_: bool = True
    lr: float = checked(0.05, gt(0))
    lr_power: float = checked(-0.5, between(-1e9, 0))
    initial_accumulator_value: float = checked(0.1, ge(0))
    l1: float = checked(0.0, ge(0))
    l2: float = checked(0.0, ge(0))
    l2_shrinkage: float = checked(0.0, ge(0))


@dataclass
class LambConfig:
    _target_: str = "easyrec.optim.Lamb"
    _partial_: bool = True
    lr: float = checked(0.01, gt(0))
    betas: list[float] = checked([0.9, 0.999], each(between(0, 1, high_open=True)))
    eps: float = checked(1e-6, gt(0))
    weight_decay: float = checked(0.0, ge(0))


@dataclass
class ParamGroupConfig:
    """One group of a GroupedOptimizer; ``optimizer`` and ``lr_schedule`` are checked by their own schemas."""

    params: str = MISSING
    optimizer: Any = MISSING
    sparse_gradients: bool = False
    lr_schedule: Any = None


@dataclass
class GroupedOptimizerConfig:
    _target_: str = "easyrec.optim.GroupedOptimizer"
    _partial_: bool = True
    groups: dict[str, ParamGroupConfig] = checked({}, non_empty())


# --------------------------------------------------------------------------- learning-rate schedule


@dataclass
class ConstantLRConfig:
    _target_: str = "easyrec.optim.ConstantLR"
    _partial_: bool = True


@dataclass
class ExponentialDecayConfig:
    _target_: str = "easyrec.optim.ExponentialDecayWithBurnin"
    _partial_: bool = True
    decay_steps: int = checked(10000, gt(0))
    decay_factor: float = checked(0.95, gt(0))
    staircase: bool = True
    burnin_learning_rate: float = checked(0.0, ge(0))
    burnin_steps: int = checked(0, ge(0))
    min_learning_rate: float = checked(0.0, ge(0))


@dataclass
class ManualStepConfig:
    _target_: str = "easyrec.optim.ManualStepLR"
    _partial_: bool = True
    schedule: list[Any] = checked([[1000, 5e-4], [2000, 1e-4]], non_empty())  # [step, lr] pairs
    warmup: bool = False


@dataclass
class CosineConfig:
    _target_: str = "easyrec.optim.CosineDecayWithWarmup"
    _partial_: bool = True
    total_steps: int | None = checked(None, gt(0))  # None: the run's planned steps
    warmup_learning_rate: float = checked(0.0, ge(0))
    warmup_steps: int = checked(0, ge(0))
    hold_base_rate_steps: int = checked(0, ge(0))


@dataclass
class PolynomialConfig:
    _target_: str = "easyrec.optim.PolynomialDecay"
    _partial_: bool = True
    total_steps: int | None = checked(None, gt(0))  # None: the run's planned steps
    power: float = checked(1.0, gt(0))
    end_learning_rate: float = checked(0.0, ge(0))


@dataclass
class TransformerConfig:
    _target_: str = "easyrec.optim.TransformerLR"
    _partial_: bool = True
    hidden_size: int = checked(400, gt(0))
    warmup_steps: int = checked(1000, gt(0))
    step_scaling_rate: float = checked(1.0, gt(0))


# --------------------------------------------------------------------------- gradients


@dataclass
class GradientTreatmentConfig:
    _target_: str = "easyrec.optim.GradientTreatment"
    clip_norm: float | None = checked(None, gt(0))
    clip_value: float | None = checked(None, gt(0))
    multipliers: dict[str, float] = field(default_factory=dict)
    noise_scale: float = checked(0.0, ge(0))
    freeze: list[str] = field(default_factory=list)
    non_finite: str = checked("skip", one_of("skip", "error"))


# --------------------------------------------------------------------------- loss


@dataclass
class BinaryCrossEntropyConfig:
    _target_: str = "easyrec.losses.BinaryCrossEntropy"
    label_smoothing: float = checked(0.0, between(0, 1, high_open=True))


@dataclass
class BinaryFocalLossConfig:
    _target_: str = "easyrec.losses.BinaryFocalLoss"
    gamma: float = checked(2.0, ge(0))
    alpha: float | None = checked(None, between(0, 1, low_open=True, high_open=True))
    ohem_ratio: float = checked(1.0, between(0, 1, low_open=True))
    label_smoothing: float = checked(0.0, between(0, 1, high_open=True))


@dataclass
class L2LossConfig:
    _target_: str = "easyrec.losses.L2Loss"


@dataclass
class SigmoidL2LossConfig:
    _target_: str = "easyrec.losses.SigmoidL2Loss"


@dataclass
class F1ReweightedLossConfig:
    _target_: str = "easyrec.losses.F1ReweightedLoss"
    f1_beta_square: float = checked(1.0, gt(0))
    label_smoothing: float = checked(0.0, between(0, 1, high_open=True))


@dataclass
class PairwiseLogisticLossConfig:
    _target_: str = "easyrec.losses.PairwiseLogisticLoss"
    temperature: float = checked(1.0, gt(0))
    hinge_margin: float | None = None
    ohem_ratio: float = checked(1.0, between(0, 1, low_open=True))
    use_label_margin: bool = False


@dataclass
class PairwiseHingeLossConfig:
    _target_: str = "easyrec.losses.PairwiseHingeLoss"
    temperature: float = checked(1.0, gt(0))
    margin: float = checked(1.0, ge(0))
    ohem_ratio: float = checked(1.0, between(0, 1, low_open=True))
    label_is_logits: bool = True
    use_label_margin: bool = True
    use_exponent: bool = False


@dataclass
class PairwiseFocalLossConfig:
    _target_: str = "easyrec.losses.PairwiseFocalLoss"
    gamma: float = checked(2.0, ge(0))
    alpha: float | None = checked(None, between(0, 1, low_open=True, high_open=True))
    hinge_margin: float | None = None
    ohem_ratio: float = checked(1.0, between(0, 1, low_open=True))
    temperature: float = checked(1.0, gt(0))


@dataclass
class ListwiseRankLossConfig:
    _target_: str = "easyrec.losses.ListwiseRankLoss"
    temperature: float = checked(1.0, gt(0))
    label_is_logits: bool = False
    scale_logits: bool = False


@dataclass
class ListwiseDistillLossConfig:
    _target_: str = "easyrec.losses.ListwiseDistillLoss"
    temperature: float = checked(1.0, gt(0))
    label_clip_max_value: float = checked(512.0, ge(1))
    scale_logits: bool = False


@dataclass
class JRCLossConfig:
    _target_: str = "easyrec.losses.JRCLoss"
    alpha: float = checked(0.5, between(0, 1))
    same_label_loss: bool = True
    strategy: str = checked(
        "fixed", one_of("fixed", "random_uniform", "random_normal", "random_bernoulli", "uncertainty")
    )


@dataclass
class SoftmaxCrossEntropyConfig:
    _target_: str = "easyrec.losses.SoftmaxCrossEntropy"
    num_classes: int = checked(2, ge(2))
    label_smoothing: float = checked(0.0, between(0, 1, high_open=True))


@dataclass
class ZILNLossConfig:
    _target_: str = "easyrec.losses.ZILNLoss"
    mu_regularization: float = checked(0.01, ge(0))
    sigma_regularization: float = checked(0.01, ge(0))
    max_sigma: float = checked(5.0, gt(math.sqrt(1e-7)))
    max_log_clip_value: float = checked(20.0, gt(-100))
    classification_weight: float = checked(1.0, ge(0))
    regression_weight: float = checked(1.0, ge(0))


@dataclass
class KLDivergenceLossConfig:
    _target_: str = "easyrec.losses.KLDivergenceLoss"
    temperature: float = checked(1.0, gt(0))
    label_is_logits: bool = False


@dataclass
class CircleLossConfig:
    _target_: str = "easyrec.losses.CircleLoss"
    margin: float = checked(0.25, ge(0))
    gamma: float = checked(32.0, gt(0))


@dataclass
class MultiSimilarityLossConfig:
    _target_: str = "easyrec.losses.MultiSimilarityLoss"
    alpha: float = checked(2.0, gt(0))
    beta: float = checked(50.0, gt(0))
    lamb: float = 1.0
    eps: float = checked(0.1, ge(0))
    ms_mining: bool = False


@dataclass
class SoftmaxNegativeMiningLossConfig:
    _target_: str = "easyrec.losses.SoftmaxNegativeMiningLoss"
    num_negative_samples: int = checked(4, ge(1))
    margin: float = checked(0.0, ge(0))
    gamma: float = checked(1.0, gt(0))
    coefficient_of_support_vector: float = checked(1.0, gt(0))


@dataclass
class InBatchSoftmaxLossConfig:
    _target_: str = "easyrec.losses.InBatchSoftmaxLoss"
    temperature: float = checked(1.0, gt(0))
    cosine: bool = False
    symmetric: bool = False
    mask_duplicates: bool = True
    reg_pos_weight: float = checked(1.0, ge(0))


@dataclass
class LossTermConfig:
    """One term of WeightedLosses; ``loss`` is checked by the schema of its own ``_target_``."""

    loss: Any = MISSING
    weight: float = checked(1.0, ge(0))
    learn_weight: bool = False


@dataclass
class WeightedLossesConfig:
    _target_: str = "easyrec.losses.WeightedLosses"
    strategy: str = checked("fixed", one_of("fixed", "uncertainty", "random"))
    losses: dict[str, LossTermConfig] = checked({}, non_empty())

    @staticmethod
    def consistency(node: Any) -> str | None:
        learned = [name for name, term in node.losses.items() if term.learn_weight]
        if learned and node.strategy != "uncertainty":
            return f"losses.{learned[0]}.learn_weight=true: needs strategy=uncertainty"
        return None


@dataclass
class TaskConfig:
    """One task of MultiTaskLoss; ``loss`` is checked by the schema of its own ``_target_``."""

    loss: Any = MISSING
    label: str | None = None
    weight: float = checked(1.0, ge(0))
    learn_weight: bool = False
    output: str | None = None


@dataclass
class ConditionalHeadConfig:
    """An eval-only head of MultiTaskLoss: P(task | given) on the rows where given's label is positive."""

    task: str = MISSING
    given: str = MISSING


@dataclass
class MultiTaskLossConfig:
    _target_: str = "easyrec.losses.MultiTaskLoss"
    label_columns: Any = MISSING
    strategy: str = checked("fixed", one_of("fixed", "uncertainty", "random"))
    tasks: dict[str, TaskConfig] = checked({}, non_empty())
    order_calibrate: dict[str, list[str]] = field(default_factory=dict)
    order_calibrate_weight: float = checked(1.0, ge(0))
    eval_conditional: dict[str, ConditionalHeadConfig] = field(default_factory=dict)

    @staticmethod
    def consistency(node: Any) -> str | None:
        for name, head in node.eval_conditional.items():
            for key in ("task", "given"):
                if head[key] not in node.tasks:
                    tasks = ", ".join(node.tasks)
                    return f"eval_conditional.{name}.{key}={head[key]}: no such task; the tasks are: {tasks}"
        learned = [name for name, task in node.tasks.items() if task.learn_weight]
        if learned and node.strategy != "uncertainty":
            return f"tasks.{learned[0]}.learn_weight=true: needs strategy=uncertainty"
        for name, task in node.tasks.items():
            if task.output is not None and task.output not in node.tasks:
                return f"tasks.{name}.output={task.output}: no such task; the tasks are: {', '.join(node.tasks)}"
        for task, uppers in node.order_calibrate.items():
            for other in [task, *uppers]:
                if other not in node.tasks:
                    return f"order_calibrate: {other!r} is not a task; the tasks are: {', '.join(node.tasks)}"
        return None


# --------------------------------------------------------------------------- metrics


@dataclass
class EvalMetricsConfig:
    _target_: str = "easyrec.metrics.EvalMetrics"
    gauc_reductions: list[str] = checked(["mean"], each(one_of("mean", "sample", "positive")))
    top_k: int = checked(5, ge(1))
    recall_at_k: list[int] = checked([1, 10, 50], each(ge(1)))


# --------------------------------------------------------------------------- early stopping


@dataclass
class NeverStopConfig:
    _target_: str = "easyrec.early_stopping.NeverStop"


@dataclass
class PatienceConfig:
    _target_: str = "easyrec.early_stopping.StopOnPlateau"
    monitor: str = "eval/auc"
    mode: str = checked("max", one_of("max", "min"))
    patience: int | None = checked(3, gt(0))
    max_steps_without_improvement: int | None = checked(None, gt(0))
    min_delta: float = checked(0.0, ge(0))
    min_steps: int = checked(0, ge(0))

    @staticmethod
    def consistency(node: Any) -> str | None:
        if node.patience is not None and node.max_steps_without_improvement is not None:
            return (
                f"patience={node.patience} and max_steps_without_improvement={node.max_steps_without_improvement}: "
                "set only one (patience=null to count steps)"
            )
        return None


@dataclass
class ThresholdConfig:
    _target_: str = "easyrec.early_stopping.StopAtThreshold"
    monitor: str = "eval/auc"
    threshold: float = MISSING
    mode: str = checked("max", one_of("max", "min"))
    min_steps: int = checked(0, ge(0))


@dataclass
class DivergenceConfig:
    _target_: str = "easyrec.early_stopping.StopOnDivergence"
    max_ratio: float | None = checked(10.0, gt(1))
    max_loss: float | None = None
    warmup_logs: int = checked(3, ge(0))
    loss_metric: str = "train/loss"
    monitor: str | None = None


@dataclass
class StopFileConfig:
    _target_: str = "easyrec.early_stopping.StopOnFile"
    path: str = MISSING
    every_n_steps: int = checked(10, gt(0))


@dataclass
class DeadlineConfig:
    _target_: str = "easyrec.early_stopping.StopAtDeadline"
    at: Any = None  # 'YYYY-mm-dd HH:MM:SS' / 'YYYYmmdd HH:MM:SS' (local) or a 10-digit epoch: str or int
    after: Any = None  # '90s', '30m', '2h', '1h30m', '1d' or seconds: str or number

    @staticmethod
    def consistency(node: Any) -> str | None:
        from easyrec.early_stopping.deadline import deadline_problem  # stdlib only, no torch

        return deadline_problem(node.at, node.after)


@dataclass
class CustomStopConfig:
    _target_: str = "easyrec.early_stopping.CustomStop"
    fn: str = MISSING
    params: dict[str, Any] = checked({})


@dataclass
class AnyOfConfig:
    _target_: str = "easyrec.early_stopping.AnyOf"
    rules: Any = MISSING  # {label: rule node} or [rule node, ...]; each node is checked against its own schema


# --------------------------------------------------------------------------- distributed


@dataclass
class PruneTrialConfig:
    _target_: str = "easyrec.early_stopping.PruneTrial"
    monitor: str = "eval/auc"
    pruner: Any = None  # an optuna.pruners.* node
    trial_id: int | None = None
    study_name: str | None = None
    storage: str | None = None


@dataclass
class SingleProcessConfig:
    _target_: str = "easyrec.distributed.SingleProcess"
    accumulate_steps: int = checked(1, ge(1))


@dataclass
class DDPConfig:
    _target_: str = "easyrec.distributed.DDP"
    nproc_per_node: int = checked(2, ge(1))
    nnodes: int = checked(1, ge(1))
    backend: str = checked("auto", one_of("auto", "gloo", "nccl"))
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    rdzv_timeout: float = checked(300.0, gt(0))
    max_restarts: int = checked(0, ge(0))
    accumulate_steps: int = checked(1, ge(1))
    local_addr: str | None = None


# --------------------------------------------------------------------------- trainer

AUTO_TRUE_FALSE = Rule(lambda v: v in ("auto", True, False), "must be one of: auto, true, false")


@dataclass
class TrainerConfig:
    _target_: str = "easyrec.trainer.Trainer"
    _partial_: bool = True
    max_epochs: int = checked(1, ge(0))
    max_steps: int | None = checked(None, gt(0))
    eval_every_n_steps: int | None = checked(None, gt(0))
    log_every_n_steps: int = checked(50, gt(0))
    checkpoint_every_n_steps: int | None = checked(None, gt(0))
    checkpoint_every_n_seconds: float | None = checked(None, gt(0))
    keep_last_n: int = checked(3, ge(1))
    monitor: str | None = None
    monitor_mode: str = checked("max", one_of("max", "min"))
    restore_best: bool = True
    resume: Any = False  # false, true, auto, or a path
    init_from: str | None = None
    progress_bar: bool = True
    device: str = checked("auto", one_of("auto", "cpu", "cuda"))
    num_threads: int | None = checked(None, gt(0))
    precision: str = checked("fp32", one_of("fp32", "bf16"))
    data_on_device: Any = checked("auto", AUTO_TRUE_FALSE)

    @staticmethod
    def consistency(node: Any) -> str | None:
        if node.max_epochs == 0 and node.max_steps is None:
            return "max_epochs=0 and max_steps=null: set at least one limit"
        return None


# --------------------------------------------------------------------------- logger


@dataclass
class MLflowLoggerConfig:
    _target_: str = "easyrec.loggers.MLflowLogger"
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "easyrec"
    run_name: str | None = None
    asynchronous: bool = True
    parent_run_id: str | None = None
    timeout: float = checked(30.0, Rule(lambda v: v > 0 and math.isfinite(v), "must be > 0 and finite (seconds)"))


@dataclass
class NullLoggerConfig:
    _target_: str = "easyrec.loggers.NullLogger"


# --------------------------------------------------------------------------- root


@dataclass
class TrainConfig:
    """The whole ``easyrec train`` config: one node per config group plus the run-wide keys."""

    seed: int = 42
    optimized_metric: str = "eval/auc"
    model: Any = MISSING
    data: Any = MISSING
    optimizer: Any = MISSING
    lr_schedule: Any = MISSING
    gradients: Any = MISSING
    loss: Any = MISSING
    metrics: Any = MISSING
    early_stopping: Any = MISSING
    distributed: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING


GROUP_SCHEMAS: dict[str, list[type]] = {
    "data": [SyntheticDataConfig, CSVDataConfig, ParquetDataConfig],
    "model": [DeepFMConfig, WideAndDeepConfig, MMoEConfig, ESMMConfig, DSSMConfig],
    "optimizer": [
        AdamConfig,
        AdamWConfig,
        AdagradConfig,
        SGDConfig,
        LazyAdamConfig,
        TFRMSPropConfig,
        FtrlConfig,
        LambConfig,
        GroupedOptimizerConfig,
    ],
    "lr_schedule": [
        ConstantLRConfig,
        ExponentialDecayConfig,
        ManualStepConfig,
        CosineConfig,
        PolynomialConfig,
        TransformerConfig,
    ],
    "gradients": [GradientTreatmentConfig],
    "loss": [
        BinaryCrossEntropyConfig,
        BinaryFocalLossConfig,
        L2LossConfig,
        SigmoidL2LossConfig,
        F1ReweightedLossConfig,
        PairwiseLogisticLossConfig,
        PairwiseHingeLossConfig,
        PairwiseFocalLossConfig,
        ListwiseRankLossConfig,
        ListwiseDistillLossConfig,
        JRCLossConfig,
        WeightedLossesConfig,
        MultiTaskLossConfig,
        SoftmaxCrossEntropyConfig,
        ZILNLossConfig,
        KLDivergenceLossConfig,
        CircleLossConfig,
        MultiSimilarityLossConfig,
        SoftmaxNegativeMiningLossConfig,
        InBatchSoftmaxLossConfig,
    ],
    "metrics": [EvalMetricsConfig],
    "early_stopping": [
        NeverStopConfig,
        PatienceConfig,
        ThresholdConfig,
        DivergenceConfig,
        StopFileConfig,
        DeadlineConfig,
        CustomStopConfig,
        AnyOfConfig,
        PruneTrialConfig,
    ],
    "distributed": [SingleProcessConfig, DDPConfig],
    "trainer": [TrainerConfig],
    "logger": [MLflowLoggerConfig, NullLoggerConfig],
}

#: The schema of each ``_target_`` that easyrec ships a schema for.
SCHEMAS: dict[str, type] = {schema._target_: schema for schemas in GROUP_SCHEMAS.values() for schema in schemas}
