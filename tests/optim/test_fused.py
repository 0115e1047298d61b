"""The sharded tables' fused optimizer: which optimizer options map onto fbgemm's, and a torchrec model trained with it
(one gloo worker) against the same model in plain torch: same tables, same lr schedule, same state after a reload."""

from __future__ import annotations

import copy
import functools
import logging
from importlib import resources

import pytest
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from easyrec.errors import ConfigError
from easyrec.optim import (
    CosineDecayWithWarmup,
    GradientTreatment,
    GroupedOptimizer,
    RowWiseAdagrad,
    attach_loss_parameters,
    build_optimizer,
    build_schedules,
)
from easyrec.optim.build import turn_on_sparse_gradients
from easyrec.optim.fused import fused_params
from tests.conftest import options

torchrec = pytest.importorskip("torchrec")
from fbgemm_gpu.split_embedding_configs import EmbOptimType  # noqa: E402  (after the skip: an optional extra)
from torch.distributed._shard.sharded_tensor import ShardedTensor  # noqa: E402

CPU_CHOICES = "on cpu use sgd, adagrad, row_wise_adagrad"
CUDA_CHOICES = "on cuda use sgd, adagrad, row_wise_adagrad, lazy_adam"
NO_COUNTERPART = "has no fused counterpart for the sharded embedding tables of distributed=model_parallel"
# Every option of conf/optimizer/ on (cpu, cuda): the fused_params it maps to, or its ConfigError.
EXPECTED = {
    "adagrad": {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": 0.1, "eps": 1e-10},
    "adam": f"optimizer: Adam {NO_COUNTERPART}; {{choices}}",
    "adamw": f"optimizer: AdamW {NO_COUNTERPART}; {{choices}}",
    "ftrl": f"optimizer: Ftrl {NO_COUNTERPART}; {{choices}}",
    "lamb": f"optimizer: Lamb {NO_COUNTERPART}; {{choices}}",
    "lazy_adam": (
        "optimizer: LazyAdam trains sharded tables fused as fbgemm's ADAM, which runs on cuda only; {choices}",
        {
            "optimizer": EmbOptimType.ADAM,
            "learning_rate": 1e-3,
            "eps": 1e-8,
            "beta1": 0.9,
            "beta2": 0.999,
            "weight_decay": 0.0,
        },
    ),
    "momentum": "optimizer.momentum=0.9: fbgemm's fused EXACT_SGD has no momentum; set it to 0.0 for "
    "distributed=model_parallel",
    "momentumw": f"optimizer: MomentumW {NO_COUNTERPART}; {{choices}}",
    "rmsprop": f"optimizer: TFRMSProp {NO_COUNTERPART}; {{choices}}",
    "row_wise_adagrad": {"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.1, "eps": 1e-10},
    "sgd": {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": 0.1},
    "sparse_dense": {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": 0.05, "eps": 1e-10},
    "wide_deep": f"optimizer.groups.deep.optimizer: Adam {NO_COUNTERPART}; {{choices}}",
}


def preset(option: str):
    return instantiate(
        OmegaConf.load(resources.files("easyrec.conf") / "optimizer" / f"{option}.yaml"), _convert_="all"
    )


def test_every_optimizer_option_is_classified():
    assert sorted(EXPECTED) == options("optimizer")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_an_optimizer_option_maps_onto_fbgemm_or_is_refused(option, device):
    expected = EXPECTED[option]
    if isinstance(expected, tuple):  # refused on the CPU, mapped on CUDA
        expected = expected[device == "cuda"]
    if isinstance(expected, dict):
        assert fused_params(preset(option), device) == expected
        return
    with pytest.raises(ConfigError) as error:
        fused_params(preset(option), device)
    assert str(error.value) == expected.format(choices=CPU_CHOICES if device == "cpu" else CUDA_CHOICES)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (
            functools.partial(torch.optim.Adagrad, lr_decay=0.01),
            "optimizer.lr_decay=0.01: fbgemm's fused EXACT_ADAGRAD has no lr_decay",
        ),
        (
            functools.partial(torch.optim.SGD, lr=0.1, weight_decay=1e-4),
            "optimizer.weight_decay=0.0001: fbgemm's fused EXACT_SGD has no weight_decay",
        ),
        (
            functools.partial(
                GroupedOptimizer,
                groups={
                    "tables": {"params": "embeddings", "optimizer": functools.partial(torch.optim.SGD, momentum=0.5)},
                    "dense": {"params": "rest", "optimizer": functools.partial(torch.optim.Adam)},
                },
            ),
            "optimizer.groups.tables.optimizer.momentum=0.5: fbgemm's fused EXACT_SGD has no momentum",
        ),
        (
            functools.partial(GroupedOptimizer, groups={"wide": {"params": "wide", "optimizer": torch.optim.SGD}}),
            "optimizer.groups: no group has params: embeddings or rest, so none trains the sharded embedding tables",
        ),
    ],
    ids=["adagrad-lr-decay", "sgd-weight-decay", "group-momentum", "no-table-group"],
)
def test_what_fbgemm_cannot_compute_is_refused_by_key(factory, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        fused_params(factory, "cpu")


def test_the_rest_group_trains_the_tables_when_no_group_takes_embeddings():
    factory = functools.partial(
        GroupedOptimizer,
        groups={
            "wide": {"params": "wide", "optimizer": torch.optim.SGD},
            "all": {"params": "rest", "optimizer": functools.partial(RowWiseAdagrad, lr=0.2)},
        },
    )
    assert fused_params(factory, "cpu")["optimizer"] == EmbOptimType.EXACT_ROWWISE_ADAGRAD


# ---------------------------------------------------------------------- one gloo worker, a tiny torchrec model

ROWS, DIMS, BATCH = 12, {"a": 4, "b": 8}, 6


@pytest.fixture(scope="module")
def process_group():
    """A gloo process group of one worker (world size 1), as DistributedModelParallel needs."""
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class Tables(nn.Module):
    """``logits = Linear(concat of the sum-pooled tables) + first-order weights``: ``ids (B, 2) -> (B,)``; the tables
    plain (``nn.EmbeddingBag``) or a torchrec ``EmbeddingBagCollection`` to shard; the first-order weights (width 1:
    fbgemm cannot take them) plain in both, as easyrec's ``LinearTerms`` stay in a sharded model."""

    def __init__(self, torchrec_tables: bool) -> None:
        super().__init__()
        if torchrec_tables:
            configs = [
                torchrec.EmbeddingBagConfig(name=n, embedding_dim=d, num_embeddings=ROWS, feature_names=[n])
                for n, d in DIMS.items()
            ]
            self.tables = torchrec.EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
        else:
            self.tables = nn.ModuleDict({n: nn.EmbeddingBag(ROWS, d, mode="sum") for n, d in DIMS.items()})
        self.linear = nn.Linear(sum(DIMS.values()), 1)
        self.first = nn.Embedding(ROWS, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.tables, nn.ModuleDict):
            pooled = torch.cat([table(ids[:, [k]]) for k, table in enumerate(self.tables.values())], dim=1)
        else:
            features = torchrec.KeyedJaggedTensor.from_lengths_sync(
                keys=list(DIMS), values=ids.t().reshape(-1), lengths=torch.ones(ids.numel(), dtype=torch.int32)
            )
            pooled = self.tables(features).values()
        return self.linear(pooled).squeeze(1) + self.first(ids).sum(dim=(1, 2))


def start(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = {n: torch.randn(ROWS, d, generator=generator) * 0.1 for n, d in DIMS.items()}
    return weights | {
        "linear.weight": torch.randn(1, sum(DIMS.values()), generator=generator),
        "linear.bias": 0,
        "first.weight": torch.randn(ROWS, 1, generator=generator),
    }


def plain_model(weights: dict[str, torch.Tensor], sparse: bool = False) -> Tables:
    model = Tables(torchrec_tables=False)
    with torch.no_grad():
        for name, table in model.tables.items():
            table.weight.copy_(weights[name])
            table.sparse = sparse
        copy_dense(model, weights)
    return model


def copy_dense(model: Tables, weights: dict[str, torch.Tensor]) -> None:
    model.linear.weight.copy_(weights["linear.weight"])
    model.linear.bias.fill_(weights["linear.bias"])
    model.first.weight.copy_(weights["first.weight"])


def sharded_model(weights: dict[str, torch.Tensor], factory, train_first_order: bool = True):
    """A :class:`Tables` whose tables train fused with the counterpart of optimizer ``factory``, filled with
    ``weights``: its DistributedModelParallel (which trains), the model itself (sharded in place: the run builds its
    optimizer on it) and its tables' local shards (the whole tables: one worker). As the run does, the tables left
    whole produce sparse gradients first if ``factory`` asks, and frozen ones are frozen (DDP reads both when built)."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

    model = Tables(torchrec_tables=True)
    model.first.weight.requires_grad_(train_first_order)
    turn_on_sparse_gradients(factory, model)
    sharder = EmbeddingBagCollectionSharder(fused_params=fused_params(factory, "cpu"))
    constraints = {n: ParameterConstraints(sharding_types=["table_wise"]) for n in DIMS}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints)
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), sharders=[sharder], plan=plan)
    state = dmp.state_dict()
    shards = {n: state[f"tables.embedding_bags.{n}.weight"].local_shards()[0].tensor for n in DIMS}
    with torch.no_grad():
        for name, shard in shards.items():
            shard.copy_(weights[name])
        copy_dense(model, weights)
    return dmp, model, shards


def batches(steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    # a few rows, so that most batches look a row up twice (fbgemm's "exact" optimizers sum those first)
    return [torch.randint(0, 5, (BATCH, len(DIMS)), generator=generator) for _ in range(steps)]


def train(model: nn.Module, optimizer, schedules, ids: torch.Tensor) -> None:
    """One step as the trainer takes it: zero_grad, backward (fused tables update here), step, schedules."""
    optimizer.zero_grad(set_to_none=True)
    model(ids).square().mean().backward()
    optimizer.step()
    for schedule in schedules:
        schedule.step()


SCHEDULE = functools.partial(CosineDecayWithWarmup, total_steps=5, warmup_steps=2, warmup_learning_rate=0.01)


@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize(
    ("factory", "sparse"),
    [
        (functools.partial(torch.optim.SGD, lr=0.3), False),
        (functools.partial(torch.optim.Adagrad, lr=0.2, initial_accumulator_value=0.5, eps=1e-10), True),
        (functools.partial(RowWiseAdagrad, lr=0.2, initial_accumulator_value=0.1), False),
        (functools.partial(RowWiseAdagrad, lr=0.2), True),
    ],
    ids=["sgd", "adagrad-initial-accumulator", "row-wise-adagrad-dense", "row-wise-adagrad-sparse"],
)
def test_fused_tables_train_as_the_torch_optimizer_under_a_schedule(factory, sparse):
    weights, steps = start(), 5
    plain = plain_model(weights, sparse)
    plain_optimizer = build_optimizer(factory, plain)
    plain_schedules = build_schedules(SCHEDULE, plain_optimizer)
    dmp, model, shards = sharded_model(weights, factory)
    optimizer = build_optimizer(factory, model, fused=dmp.fused_optimizer)
    schedules = build_schedules(SCHEDULE, optimizer)
    # the fused optimizer is one more group, which the schedule drives as the dense parameters' (warmup included)
    assert list(optimizer.optimizers) == ["", "embeddings.fused"]
    assert {group.get("group") for group in optimizer.param_groups} == {None, "embeddings"}
    lrs = []
    for ids in batches(steps):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        train(plain, plain_optimizer, plain_schedules, ids)
        train(dmp, optimizer, schedules, ids)
        for name, shard in shards.items():
            torch.testing.assert_close(shard, plain.tables[name].weight.detach(), rtol=0, atol=1e-6)
        torch.testing.assert_close(
            dict(dmp.named_parameters())["linear.weight"], plain.linear.weight, rtol=0, atol=1e-6
        )
    lr = factory.keywords["lr"]
    schedule = SCHEDULE(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr))
    assert lrs == [[pytest.approx(schedule.lr_at(k, lr))] * 2 for k in range(steps)]


@pytest.mark.usefixtures("process_group")
def test_a_reloaded_optimizer_state_continues_the_run_exactly():
    factory = functools.partial(torch.optim.Adagrad, lr=0.2, initial_accumulator_value=0.5)
    ids = batches(4)
    runs = []
    for seed in (0, 5):  # the second starts elsewhere and takes the first's state after two steps
        dmp, model, shards = sharded_model(start(seed), factory)
        optimizer = build_optimizer(factory, model, fused=dmp.fused_optimizer)
        runs.append((dmp, shards, optimizer, build_schedules(SCHEDULE, optimizer)))
    (first, first_shards, first_optimizer, first_schedules), (second, second_shards, optimizer, schedules) = runs
    for batch in ids[:2]:
        train(first, first_optimizer, first_schedules, batch)
    # as a checkpoint would hold it: the dense optimizer's state copied (a state_dict holds the live tensors)
    state = {
        name: part if name.endswith(".fused") else copy.deepcopy(part)
        for name, part in first_optimizer.state_dict().items()
    }
    fused = state["embeddings.fused"]
    assert fused["lr"] == pytest.approx(first_schedules[0].lr_at(2, 0.2))  # the scheduled lr, which fbgemm forgets
    assert isinstance(fused["state"]["tables.embedding_bags.a.weight"]["a.momentum1"], ShardedTensor)
    second.load_state_dict(first.state_dict())
    optimizer.load_state_dict(state)
    for schedule, saved in zip(schedules, first_schedules, strict=True):
        schedule.load_state_dict(saved.state_dict())
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in first_optimizer.param_groups]
    for batch in ids[2:]:
        train(first, first_optimizer, first_schedules, batch)
        train(second, optimizer, schedules, batch)
    for name, shard in first_shards.items():
        torch.testing.assert_close(second_shards[name], shard, rtol=0, atol=0)


def momentum(optimizer) -> dict[str, torch.Tensor]:
    """The fused optimizer's accumulators (this worker's shards), by state key."""
    state = optimizer.state_dict()["embeddings.fused"]["state"]
    return {key: tensor.local_shards()[0].tensor for table in state.values() for key, tensor in table.items()}


@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize("first_order", [True, False], ids=["with-plain-table", "tables-only"])
def test_the_group_that_trains_the_tables_takes_the_fused_optimizer_with_its_lr_and_schedule(first_order):
    tables = functools.partial(torch.optim.Adagrad, lr=0.05, initial_accumulator_value=1.0)
    factory = functools.partial(
        GroupedOptimizer,
        groups={
            "embeddings": {
                "params": "embeddings",
                "optimizer": tables,
                "lr_schedule": SCHEDULE,
                "sparse_gradients": True,
            },
            "dense": {"params": "rest", "optimizer": functools.partial(torch.optim.Adam, lr=1e-3)},
        },
    )
    dmp, model, _ = sharded_model(start(), factory, train_first_order=first_order)
    first = model.first.weight
    assert model.first.sparse == first_order  # the group's sparse_gradients, turned on before DDP wrapped it
    optimizer = build_optimizer(factory, model, fused=dmp.fused_optimizer)
    # the group's plain table (the first-order weights) keeps its torch optimizer; the fused one joins in its place
    expected = ["embeddings", "embeddings.fused", "dense"] if first_order else ["embeddings.fused", "dense"]
    assert list(optimizer.optimizers) == expected
    if first_order:
        assert optimizer.optimizers["embeddings"].param_groups[0]["params"] == [first]
    assert [(g["group"], g["lr"]) for g in optimizer.param_groups][-1] == ("dense", 1e-3)
    assert {(g["group"], g["lr"]) for g in optimizer.param_groups[:-1]} == {("embeddings", 0.05)}
    assert len(optimizer.optimizers["dense"].param_groups[0]["params"]) == 2  # the linear layer's, no table
    assert optimizer.schedule_factories == {"embeddings": SCHEDULE, "embeddings.fused": SCHEDULE}
    assert all(torch.equal(m, torch.ones_like(m)) for m in momentum(optimizer).values())  # initial_accumulator_value
    loss = nn.Linear(1, 1)  # a loss with parameters of its own joins the first torch optimizer, never the fused one
    attach_loss_parameters(optimizer, loss)
    first_torch = optimizer.optimizers["embeddings" if first_order else "dense"]
    assert first_torch.param_groups[-1]["group"] == "loss"
    schedules = build_schedules(None, optimizer)
    assert [type(s).__name__ for s in schedules] == ["CosineDecayWithWarmup"] * (1 + first_order)
    warming = [g["lr"] for g in optimizer.param_groups if g["group"] == "embeddings"]
    assert warming == pytest.approx([0.01] * len(warming))
    before = first.detach().clone()
    train(dmp, optimizer, schedules, batches(1)[0])  # the first-order weights' sparse gradient passes DDP
    assert first_order != torch.equal(first, before)


@pytest.mark.usefixtures("process_group")
def test_a_group_that_picks_a_sharded_table_besides_the_one_that_trains_them_is_refused():
    factory = functools.partial(
        GroupedOptimizer,
        groups={
            "embeddings": {"params": "embeddings", "optimizer": torch.optim.SGD},
            "second": {"params": "re:embedding_bags.b", "optimizer": torch.optim.SGD},
            "dense": {"params": "rest", "optimizer": torch.optim.SGD},
        },
    )
    # (before sharding, the embeddings group takes the tables too: "claimed by group 'embeddings' and group 'second'")
    dmp, model, _ = sharded_model(start(), torch.optim.SGD)
    with pytest.raises(ConfigError) as error:
        build_optimizer(factory, model, fused=dmp.fused_optimizer)
    assert str(error.value) == (
        "optimizer.groups.second.params=re:embedding_bags.b: picks the sharded embedding table "
        "tables.embedding_bags.b.weight, which trains fused with group 'embeddings's optimizer; leave the tables to "
        "that group"
    )


@pytest.mark.usefixtures("process_group")
def test_gradient_treatments_warn_that_they_act_on_the_dense_parameters_only(caplog):
    dmp, model, _ = sharded_model(start(), torch.optim.SGD)
    treatment = GradientTreatment(clip_norm=0.5, multipliers={"linear": 2.0})
    with caplog.at_level(logging.WARNING, logger="easyrec.optim.gradients"):
        treatment.prepare(model)
    assert [r.getMessage() for r in caplog.records if r.name == "easyrec.optim.gradients"] == [
        "distributed=model_parallel: fbgemm updates the 2 sharded embedding tables inside the backward, so gradient "
        "treatments (gradients.clip_norm=0.5, gradients.multipliers={'linear': 2.0}) reach the other parameters only, "
        "train/grad_norm and the non-finite check leave the tables out, and a skipped step has already updated them"
    ]
    dmp(batches(1)[0]).sum().backward()
    linear = torch.cat([model.linear.weight.grad.reshape(-1), model.linear.bias.grad]) * 2.0
    norm = torch.linalg.vector_norm(torch.cat([linear, model.first.weight.grad.reshape(-1)]))
    report = treatment.apply(step=1)
    assert report.apply and report.norm == pytest.approx(float(norm))  # the other parameters' gradients only


@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"multipliers": {"embedding_bags": 10.0}},
            "gradients.multipliers: 'embedding_bags' matches only sharded embedding tables, which fbgemm updates "
            "inside the backward (distributed=model_parallel): no gradient multiplier reaches them",
        ),
        (
            {"freeze": ["embedding_bags.a"]},
            "gradients.freeze: 'embedding_bags.a' matches the sharded embedding table tables.embedding_bags.a.weight, "
            "which fbgemm updates inside the backward (distributed=model_parallel): it cannot be frozen",
        ),
    ],
    ids=["multiplier", "freeze"],
)
def test_a_gradient_treatment_that_only_a_sharded_table_could_take_is_refused(options, message):
    _, model, _ = sharded_model(start(), torch.optim.SGD)
    with pytest.raises(ConfigError) as error:
        GradientTreatment(**options).prepare(model)
    assert str(error.value) == message


# What makes each lr schedule option move within a few steps.
MOVING = {
    "constant": {},
    "cosine": {"total_steps": 4, "warmup_steps": 2, "warmup_learning_rate": 0.01},
    "exponential_decay": {"decay_steps": 1, "staircase": False, "burnin_learning_rate": 0.02, "burnin_steps": 1},
    "manual_step": {"schedule": [[1, 0.05], [2, 0.02]], "warmup": True},
    "polynomial": {"total_steps": 3, "power": 2.0},
    "transformer": {"hidden_size": 4, "warmup_steps": 2},
}


@pytest.mark.usefixtures("process_group")
@pytest.mark.parametrize("option", sorted(MOVING))
def test_every_lr_schedule_option_drives_the_fused_tables_as_the_dense_parameters(option):
    assert sorted(MOVING) == options("lr_schedule")
    node = OmegaConf.merge(
        OmegaConf.load(resources.files("easyrec.conf") / "lr_schedule" / f"{option}.yaml"), MOVING[option]
    )
    factory = functools.partial(torch.optim.SGD, lr=0.1)
    dmp, model, _ = sharded_model(start(), factory)
    optimizer = build_optimizer(factory, model, fused=dmp.fused_optimizer)
    schedules = build_schedules(instantiate(node, _convert_="all"), optimizer, planned_steps=4)
    lrs = []
    for ids in batches(4):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        train(dmp, optimizer, schedules, ids)
    assert all(len(set(step)) == 1 for step in lrs), lrs  # the fused group follows the dense one at every step
    assert [step[0] for step in lrs] == pytest.approx([schedules[0].lr_at(k, 0.1) for k in range(4)])
    assert option == "constant" or len({step[0] for step in lrs}) > 1  # the schedule did move
