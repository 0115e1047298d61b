"""The sharded tables' fused optimizer: which optimizer options map onto fbgemm's, and a torchrec model trained with it
(one gloo worker) against the same model in plain torch: same tables, same lr schedule, same state after a reload."""

from __future__ import annotations

import functools
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
    GroupedOptimizer,
    RowWiseAdagrad,
    build_optimizer,
    build_schedules,
)
from easyrec.optim.fused import fused_params
from tests.conftest import options

torchrec = pytest.importorskip("torchrec")
from fbgemm_gpu.split_embedding_configs import EmbOptimType  # noqa: E402  (after the skip: an optional extra)

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
    """``logits = Linear(concat of the sum-pooled tables)``: ``ids (B, 2) -> (B,)``, plain (``nn.EmbeddingBag``)
    or as a torchrec ``EmbeddingBagCollection`` to shard."""

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

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if isinstance(self.tables, nn.ModuleDict):
            pooled = torch.cat([table(ids[:, [k]]) for k, table in enumerate(self.tables.values())], dim=1)
        else:
            features = torchrec.KeyedJaggedTensor.from_lengths_sync(
                keys=list(DIMS), values=ids.t().reshape(-1), lengths=torch.ones(ids.numel(), dtype=torch.int32)
            )
            pooled = self.tables(features).values()
        return self.linear(pooled).squeeze(1)


def start(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weights = {n: torch.randn(ROWS, d, generator=generator) * 0.1 for n, d in DIMS.items()}
    return weights | {"linear.weight": torch.randn(1, sum(DIMS.values()), generator=generator), "linear.bias": 0}


def plain_model(weights: dict[str, torch.Tensor], sparse: bool = False) -> Tables:
    model = Tables(torchrec_tables=False)
    with torch.no_grad():
        for name, table in model.tables.items():
            table.weight.copy_(weights[name])
            table.sparse = sparse
        model.linear.weight.copy_(weights["linear.weight"])
        model.linear.bias.fill_(weights["linear.bias"])
    return model


def sharded_model(weights: dict[str, torch.Tensor], params: dict):
    """The DistributedModelParallel of a :class:`Tables` whose tables train fused with ``params``, filled with
    ``weights``; and the tables' local shards (the whole tables: one worker)."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology

    model = Tables(torchrec_tables=True)
    sharder = EmbeddingBagCollectionSharder(fused_params=params)
    constraints = {n: ParameterConstraints(sharding_types=["table_wise"]) for n in DIMS}
    planner = EmbeddingShardingPlanner(topology=Topology(world_size=1, compute_device="cpu"), constraints=constraints)
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    dmp = DistributedModelParallel(model, device=torch.device("cpu"), sharders=[sharder], plan=plan)
    state = dmp.state_dict()
    shards = {n: state[f"tables.embedding_bags.{n}.weight"].local_shards()[0].tensor for n in DIMS}
    with torch.no_grad():
        for name, shard in shards.items():
            shard.copy_(weights[name])
        model.linear.weight.copy_(weights["linear.weight"])
        model.linear.bias.fill_(weights["linear.bias"])
    return dmp, shards


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
    dmp, shards = sharded_model(weights, fused_params(factory, "cpu"))
    optimizer = build_optimizer(factory, dmp, fused=dmp.fused_optimizer)
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
