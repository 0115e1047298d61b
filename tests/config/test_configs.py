"""Every option of every config group composes, validates and instantiates; bad values are refused."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from easyrec.config import validate
from easyrec.data import InputSpec
from easyrec.data.features import ListField
from easyrec.distributed import DDP
from easyrec.early_stopping import StopOnPlateau
from easyrec.errors import ConfigError
from easyrec.losses import BinaryFocalLoss
from easyrec.models import DeepFM, WideAndDeep
from easyrec.optim import build_optimizer, build_schedules
from tests.conftest import options

CONF = resources.files("easyrec.conf")
# The component groups: every folder of conf/ but those that select other groups' options or configure Hydra.
GROUPS = sorted(
    p.name
    for p in CONF.iterdir()
    if p.is_dir() and p.name not in {"experiment", "hparams_search", "hydra", "__pycache__"}
)
FILE_DATA = ["data.train_path=train.csv", "data.eval_path=eval.csv"]
# Options that need more of the config than their own group: files, or the label columns their tasks read.
NEEDS = {
    ("data", "csv"): FILE_DATA,
    ("data", "parquet"): FILE_DATA,
    ("loss", "multi_task"): ["data.features.label=[label,conversion]"],
    ("loss", "order_calibrate"): ["data.features.label=[label,conversion]"],
    ("loss", "kl_distill"): ["data.features.label=[label,teacher]"],
    # ${hydra:runtime.output_dir} resolves only inside the real Hydra app
    ("early_stopping", "stop_file"): ["early_stopping.path=STOP"],
    ("early_stopping", "several"): ["early_stopping.rules.stop_file.path=STOP"],
}
CRITEO_INPUTS = InputSpec(
    tuple(f"I{j}" for j in range(1, 14)), tuple(f"C{f}" for f in range(1, 27)), tuple(range(5, 31))
)
# DIN needs a history of a categorical field's ids: C1's here
HISTORY_INPUTS = replace(CRITEO_INPUTS, lists=(ListField("history", "sequence", 5, "mean", 0, 5, "C1"),))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_validates_and_instantiates(compose_train, group, option, tmp_path):
    cfg = compose_train(f"{group}={option}", *NEEDS.get((group, option), []))
    validate(cfg)
    node = cfg[group]
    assert "_target_" in node
    if group == "trainer":
        return  # needs live components; built in test_trainer.py and by the CLI tests
    if (group, option) == ("distributed", "model_parallel"):
        pytest.importorskip("torchrec")  # the sharding install (nox -s tests has it)
    built = instantiate(node, _convert_="all")
    if group == "model":
        model = built(HISTORY_INPUTS if option == "din" else CRITEO_INPUTS)
        assert sum(p.numel() for p in model.parameters()) > 0
    elif group == "optimizer":
        model = WideAndDeep(InputSpec(("d",), ("a", "b"), (5, 7)), embedding_dim=2, hidden_units=[4])
        optimizer = build_optimizer(built, model)
        assert all(group["lr"] > 0 for group in optimizer.param_groups)
        assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))
    elif group == "lr_schedule":
        model = torch.nn.Linear(2, 1)
        [scheduler] = build_schedules(built, torch.optim.SGD(model.parameters(), lr=0.1), planned_steps=100)
        assert scheduler.get_last_lr()[0] >= 0
    elif group == "gradients":
        built.prepare(torch.nn.Linear(2, 1))
    else:
        assert type(built).__name__ == node._target_.rsplit(".", 1)[1]


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_train, experiment):
    needs_files = "train_path" in compose_train(f"experiment={experiment}").data.keys()
    cfg = compose_train(f"experiment={experiment}", *(FILE_DATA if needs_files else []))
    validate(cfg)


def test_defaults(compose_train):
    cfg = compose_train()
    choices = {g: OmegaConf.select(cfg, f"{g}._target_") for g in GROUPS}
    assert choices["data"] == "easyrec.data.SyntheticCTRData"
    assert choices["optimizer"] == "torch.optim.Adam"
    assert choices["loss"] == "easyrec.losses.BinaryCrossEntropy"
    assert choices["logger"] == "easyrec.loggers.MLflowLogger"
    assert cfg.logger.tracking_uri == "sqlite:///mlflow.db"
    assert cfg.data.seed == cfg.seed


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-1", "optimizer.lr=-1.0: must be > 0"),
        ("optimizer.lr=0", "optimizer.lr=0.0: must be > 0"),
        ("data.batch_size=0", "data.batch_size=0: must be > 0"),
        ("data.eval_fraction=1.5", "data.eval_fraction=1.5: must be in (0, 1)"),
        ("model.hidden_units=[64,0]", "model.hidden_units=[64, 0]: every element must be > 0"),
        ("model.dropout=1", "model.dropout=1.0: must be in [0, 1)"),
        ("model.embedding_regularization=-1e-5", "model.embedding_regularization=-1e-05: must be >= 0"),
        ("model.l2_regularization=-1e-5", "model.l2_regularization=-1e-05: must be >= 0"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 and max_steps=null: set at least one limit"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0: must be > 0"),
        ("trainer.device=tpu", "trainer.device=tpu: must be one of: auto, cpu, cuda"),
        ("data.features.dense.0.transform=sqrt", "data.features.dense.0.transform=sqrt: must be one of: none, log1p"),
        (
            "data.features.categorical.0.encoding=hash",
            "data.features.categorical.0.num_buckets: required with encoding=hash (features C1, ..., C26)",
        ),
    ],
)
def test_impossible_values_name_the_key(compose_train, override, message):
    cfg = compose_train(override)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["loss=focal", "loss.gamma=-2"], "loss.gamma=-2.0: must be >= 0"),
        (["loss=focal", "loss.alpha=1"], "loss.alpha=1.0: must be in (0, 1)"),
        (["early_stopping=patience", "early_stopping.mode=up"], "early_stopping.mode=up: must be one of: max, min"),
        (["optimizer=momentumw", "optimizer.weight_decay=-1e-6"], "optimizer.weight_decay=-1e-06: must be >= 0"),
        (["optimizer=momentumw", "optimizer.momentum=1"], "optimizer.momentum=1.0: must be in [0, 1)"),
        (["loss=soft_ce", "loss.temperature=0"], "loss.temperature=0.0: must be > 0"),
        (
            ["experiment=multi_task", "loss.tasks.ctcvr.out_task_space_weight=0"],
            "loss.tasks.ctcvr.out_task_space_weight=0.0: has no effect without a task_space_indicator",
        ),
        (
            [
                "experiment=multi_task",
                "loss.tasks.ctcvr.task_space_indicator=label",
                "loss.tasks.ctcvr.in_task_space_weight=-1",
            ],
            "loss.tasks.ctcvr.in_task_space_weight=-1.0: must be >= 0",
        ),
        (["data=csv", "data.eval_path=e.csv"], "data.train_path: a value is required"),
        (["data=csv", *FILE_DATA, "data.header=false"], "data.columns: required when header=false"),
    ],
)
def test_impossible_values_in_other_options(compose_train, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(*overrides))
    assert str(error.value).startswith(message)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["optimizer.lr=fast"], "optimizer.lr: Value 'fast' of type 'str' could not be converted to Float"),
        (
            ["+optimizer.amsgrad_typo=1"],
            "optimizer.amsgrad_typo: not an option of torch.optim.adam.Adam; its options are: ",
        ),
        (["seed=abc"], "seed: Value 'abc' of type 'str' could not be converted to Integer"),
        (["data.features.dense.0.standardize=maybe"], "data.features.dense.0.standardize: Value 'maybe'"),
    ],
)
def test_wrong_types_and_unknown_keys_name_the_key(compose_train, overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_train(*overrides))
    assert str(error.value).startswith(message)


def test_a_target_that_cannot_be_imported_is_refused_naming_the_key(compose_train):
    with pytest.raises(ConfigError, match=r"^model._target_=my_package.MyModel: cannot be imported"):
        validate(compose_train("model._target_=my_package.MyModel"))


def test_a_users_own_component_is_checked_by_its_signature_and_annotations(compose_train):
    """No schema or registration: the user's class (here a DeepFM under another name) is bound like ours."""
    own = ["model._target_=tests.trusted_models.OwnDeepFM"]
    validate(compose_train(*own))
    with pytest.raises(ConfigError, match=r"^model.whatever: not an option of tests.trusted_models.OwnDeepFM"):
        validate(compose_train(*own, "+model.whatever=1"))
    with pytest.raises(ConfigError, match=r"^model.dropout=1.0: must be in \[0, 1\)$"):
        validate(compose_train(*own, "model.dropout=1"))
    own = ["early_stopping._target_=tests.own_components.StopAfterEvaluations"]
    validate(compose_train(*own, "+early_stopping.evaluations=2"))
    with pytest.raises(ConfigError, match=r"^early_stopping.evaluations=0: must be >= 1$"):
        validate(compose_train(*own, "+early_stopping.evaluations=0"))
    with pytest.raises(ConfigError, match=r"^early_stopping.mode=up: must be one of: max, min$"):
        validate(compose_train(*own, "+early_stopping.mode=up"))
    with pytest.raises(ConfigError, match=r"^early_stopping.evaluation: not an option of tests.own_components"):
        validate(compose_train(*own, "+early_stopping.evaluation=2"))


@pytest.mark.parametrize(
    "overrides,build",
    [
        (["loss=focal", "loss.gamma=-1.0"], lambda: BinaryFocalLoss(gamma=-1.0)),
        (["model.dropout=1.0"], lambda: DeepFM(CRITEO_INPUTS, dropout=1.0)),
        (
            ["early_stopping=patience", "early_stopping.mode=up"],
            lambda: StopOnPlateau(mode="up"),
        ),
        (
            ["distributed=ddp", "distributed.backend=mpi"],
            lambda: DDP(backend="mpi"),
        ),
    ],
    ids=["loss", "model", "early_stopping", "distributed"],
)
def test_a_rule_refuses_a_config_and_plain_python_in_the_same_words(compose_train, overrides, build):
    with pytest.raises(ConfigError) as from_config:
        validate(compose_train(*overrides))
    with pytest.raises(ValueError) as from_python:
        build()
    group = overrides[-1].split(".")[0]
    assert str(from_config.value) == f"{group}.{from_python.value}"
