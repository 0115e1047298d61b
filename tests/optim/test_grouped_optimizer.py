"""GroupedOptimizer (selectors, errors, stepping, state), build_optimizer's sparse handling and build_schedules."""

from __future__ import annotations

import copy
import re
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from easyrec.config import validate
from easyrec.data import InputSpec
from easyrec.errors import ConfigError
from easyrec.models import DeepFM, WideAndDeep
from easyrec.optim import (
    ConstantLR,
    Ftrl,
    GroupedOptimizer,
    LazyAdam,
    PolynomialDecay,
    TFRMSProp,
    build_optimizer,
    build_schedules,
)
from easyrec.optim.build import check_sparse_support
from easyrec.optim.grouped import select

SPEC = InputSpec(("d",), ("a", "b"), (5, 7))  # 12 embedding rows per table
WIDE_DEEP_PARAMS = {
    "wide.categorical.table.weight",
    "wide.dense.weight",
    "wide.dense.bias",
    "deep.embedding.table.weight",
    "deep.mlp.layers.0.weight",
    "deep.mlp.layers.0.bias",
    "deep.mlp.layers.2.weight",
    "deep.mlp.layers.2.bias",
}
WIDE_DEEP_TABLES = {"wide.categorical.table.weight", "deep.embedding.table.weight"}
ADAM = partial(torch.optim.Adam, lr=0.01)
ADAGRAD = partial(torch.optim.Adagrad, lr=0.05, initial_accumulator_value=1.0)


def wide_deep(seed: int = 0, **kwargs) -> WideAndDeep:
    torch.manual_seed(seed)
    return WideAndDeep(SPEC, embedding_dim=2, hidden_units=[4], **kwargs)


def deepfm(seed: int = 0, **kwargs) -> DeepFM:
    torch.manual_seed(seed)
    return DeepFM(SPEC, embedding_dim=2, hidden_units=[4], **kwargs)


def batch(seed: int = 1, size: int = 6, a_ids=None, b_ids=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dense (B, 1), sparse (B, 2), labels (B,))``; ids drawn from the given sets (default: all)."""
    generator = torch.Generator().manual_seed(seed)
    a_ids = torch.tensor(a_ids if a_ids is not None else range(5))
    b_ids = torch.tensor(b_ids if b_ids is not None else range(7))
    a = a_ids[torch.randint(len(a_ids), (size,), generator=generator)]
    b = b_ids[torch.randint(len(b_ids), (size,), generator=generator)]
    dense = torch.randn(size, 1, generator=generator)
    labels = torch.randint(0, 2, (size,), generator=generator).float()
    return dense, torch.stack([a, b], dim=1), labels


def train_step(model: nn.Module, optimizer, data) -> None:
    dense, sparse, labels = data
    optimizer.zero_grad()
    nn.functional.binary_cross_entropy_with_logits(model(dense, sparse), labels).backward()
    optimizer.step()


def names_of(optimizer: torch.optim.Optimizer) -> set[str]:
    return {name for group in optimizer.param_groups for name in group["param_names"]}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def embedding_sparsity(model: nn.Module) -> dict[str, bool]:
    return {n: m.sparse for n, m in model.named_modules() if isinstance(m, nn.Embedding)}


# ---------------------------------------------------------------------- selectors


def test_embeddings_selector_picks_exactly_the_embedding_tables():
    model = wide_deep()
    candidates = dict(model.named_parameters())
    picked = select(model, "embeddings", candidates)
    assert {n for n, _ in picked} == WIDE_DEEP_TABLES
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    assert {id(p) for _, p in picked} == tables and len(tables) == 2
    deepfm_model = deepfm()
    picked = select(deepfm_model, "embeddings", dict(deepfm_model.named_parameters()))
    assert {n for n, _ in picked} == {"embedding.table.weight", "linear.categorical.table.weight"}


def test_rest_regex_and_submodule_selectors():
    model = wide_deep()
    candidates = dict(model.named_parameters())
    assert {n for n, _ in select(model, "rest", candidates)} == WIDE_DEEP_PARAMS
    assert {n for n, _ in select(model, r"re:bias$", candidates)} == {
        "wide.dense.bias",
        "deep.mlp.layers.0.bias",
        "deep.mlp.layers.2.bias",
    }
    assert {n for n, _ in select(model, "wide", candidates)} == {
        "wide.categorical.table.weight",
        "wide.dense.weight",
        "wide.dense.bias",
    }
    assert {n for n, _ in select(model, "deep.mlp", candidates)} == {n for n in WIDE_DEEP_PARAMS if ".mlp." in n}
    assert select(model, "deep.ml", candidates) == []  # a submodule name, not a name prefix
    # the selector picks among the candidates only
    assert [n for n, _ in select(model, "wide", {"wide.dense.bias": candidates["wide.dense.bias"]})] == [
        "wide.dense.bias"
    ]


def test_groups_get_their_selected_parameters_and_rest_the_remainder_wherever_it_stands():
    model = wide_deep()
    groups = {
        "dense": {"params": "rest", "optimizer": ADAM},  # first in the dict, filled last
        "embeddings": {"params": "embeddings", "optimizer": ADAGRAD},
        "wide_linear": {"params": "wide.dense", "optimizer": ADAM},
    }
    optimizer = GroupedOptimizer(model, groups)
    inner = optimizer.optimizers
    assert names_of(inner["embeddings"]) == WIDE_DEEP_TABLES
    assert names_of(inner["wide_linear"]) == {"wide.dense.weight", "wide.dense.bias"}
    assert names_of(inner["dense"]) == {n for n in WIDE_DEEP_PARAMS if ".mlp." in n}
    assert isinstance(inner["embeddings"], torch.optim.Adagrad) and isinstance(inner["dense"], torch.optim.Adam)
    every = [p for opt in inner.values() for group in opt.param_groups for p in group["params"]]
    assert len(every) == len({id(p) for p in every}) == len(WIDE_DEEP_PARAMS)


def test_deepfm_submodule_and_regex_groups():
    model = deepfm()
    optimizer = GroupedOptimizer(
        model,
        {
            "fm": {"params": "embedding", "optimizer": ADAGRAD},
            "first_order": {"params": r"re:^linear\.", "optimizer": ADAGRAD},
            "mlp": {"params": "rest", "optimizer": ADAM},
        },
    )
    assert names_of(optimizer.optimizers["fm"]) == {"embedding.table.weight"}
    assert names_of(optimizer.optimizers["first_order"]) == {
        "linear.categorical.table.weight",
        "linear.dense.weight",
        "linear.dense.bias",
    }
    assert names_of(optimizer.optimizers["mlp"]) == {n for n, _ in model.named_parameters() if n.startswith("mlp.")}


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "groups,message",
    [
        (
            {"emb": {"params": "re:nomatch", "optimizer": ADAGRAD}, "rest": {"params": "rest", "optimizer": ADAM}},
            "optimizer.groups.emb.params=re:nomatch: matches no trainable parameter",
        ),
        (
            {"tower": {"params": "tower", "optimizer": ADAM}, "rest": {"params": "rest", "optimizer": ADAM}},
            "optimizer.groups.tower.params=tower: matches no trainable parameter",
        ),
        (
            {"all": {"params": "re:.", "optimizer": ADAM}, "dense": {"params": "rest", "optimizer": ADAM}},
            "optimizer.groups.dense.params=rest: matches no trainable parameter",
        ),
        (
            {
                "wide": {"params": "wide", "optimizer": ADAGRAD},
                "tables": {"params": "embeddings", "optimizer": ADAGRAD},
                "dense": {"params": "rest", "optimizer": ADAM},
            },
            "optimizer.groups: parameter wide.categorical.table.weight is claimed by group 'wide' and group 'tables'",
        ),
        (
            {"emb": {"params": "embeddings", "optimizer": ADAGRAD}},
            "optimizer.groups: parameters wide.dense.weight, wide.dense.bias, deep.mlp.layers.0.weight, ... "
            "belong to no group; add a group with params: rest",
        ),
        (
            {"one": {"params": "rest", "optimizer": ADAM}, "two": {"params": "rest", "optimizer": ADAM}},
            "optimizer.groups: one and two both take params: rest; keep one",
        ),
        (
            {"emb": {"params": "embeddings", "optimizer": None}, "dense": {"params": "rest", "optimizer": ADAM}},
            "optimizer.groups.emb.optimizer: the group has no optimizer",
        ),
        ({}, "optimizer.groups: no group; give at least one (e.g. params: rest)"),
    ],
    ids=[
        "regex-no-match",
        "no-such-submodule",
        "empty-rest",
        "claimed-twice",
        "unclaimed",
        "two-rests",
        "no-opt",
        "none",
    ],
)
def test_bad_groups_raise_config_errors_naming_the_group(groups, message):
    with pytest.raises(ConfigError) as caught:
        GroupedOptimizer(wide_deep(), groups)
    assert str(caught.value) == message


def test_a_frozen_parameter_is_not_selectable():
    model = wide_deep()
    model.wide.dense.bias.requires_grad_(False)
    groups = {
        "bias": {"params": r"re:^wide\.dense\.bias$", "optimizer": ADAM},
        "rest": {"params": "rest", "optimizer": ADAM},
    }
    with pytest.raises(
        ConfigError, match=re.escape("optimizer.groups.bias.params=re:^wide\\.dense\\.bias$: matches no")
    ):
        GroupedOptimizer(model, groups)
    optimizer = GroupedOptimizer(model, {"rest": {"params": "rest", "optimizer": ADAM}})
    assert names_of(optimizer.optimizers["rest"]) == WIDE_DEEP_PARAMS - {"wide.dense.bias"}


# ---------------------------------------------------------------------- the optimizer interface


def sparse_dense(model: nn.Module) -> GroupedOptimizer:
    return GroupedOptimizer(
        model,
        {
            "embeddings": {"params": "embeddings", "sparse_gradients": True, "optimizer": ADAGRAD},
            "dense": {"params": "rest", "optimizer": ADAM},
        },
    )


def test_param_groups_are_named_after_their_group_and_concatenated():
    model = wide_deep()
    two_groups = partial(torch.optim.SGD, lr=0.1)  # a factory making two param groups of its own

    def split(named):
        return two_groups([{"params": named[:1]}, {"params": named[1:], "lr": 0.2}])

    optimizer = GroupedOptimizer(
        model,
        {"dense": {"params": "rest", "optimizer": ADAM}, "wide": {"params": "wide", "optimizer": split}},
    )
    assert [g["group"] for g in optimizer.param_groups] == ["wide", "wide", "dense"]
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.2, 0.01]
    inner = [g for opt in optimizer.optimizers.values() for g in opt.param_groups]
    assert all(a is b for a, b in zip(optimizer.param_groups, inner, strict=True))
    optimizer.param_groups[2]["lr"] = 0.5  # the groups are the inner optimizers' own, not copies
    assert optimizer.optimizers["dense"].param_groups[0]["lr"] == 0.5


def test_step_and_zero_grad_reach_every_inner_optimizer():
    model = wide_deep()
    optimizer = sparse_dense(model)
    before = snapshot(model)
    train_step(model, optimizer, batch())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == WIDE_DEEP_PARAMS
    assert all(p.grad is not None for p in model.parameters())
    optimizer.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    dense, sparse, labels = batch()
    nn.functional.binary_cross_entropy_with_logits(model(dense, sparse), labels).backward()
    optimizer.zero_grad(set_to_none=False)
    dense_grads = [p.grad for n, p in model.named_parameters() if n not in WIDE_DEEP_TABLES]
    assert all(g is not None and not g.any() for g in dense_grads)


def test_state_dict_round_trip_gives_identical_next_steps():
    first, second, fresh = wide_deep(seed=0), wide_deep(seed=5), wide_deep(seed=5)
    first_optimizer = sparse_dense(first)
    train_step(first, first_optimizer, batch(seed=1))
    state = first_optimizer.state_dict()
    assert set(state) == {"embeddings", "dense"}
    second_optimizer, fresh_optimizer = sparse_dense(second), sparse_dense(fresh)
    second.load_state_dict(first.state_dict())
    fresh.load_state_dict(first.state_dict())
    second_optimizer.load_state_dict(copy.deepcopy(state))
    for step in range(2, 4):
        for model, optimizer in ((first, first_optimizer), (second, second_optimizer), (fresh, fresh_optimizer)):
            train_step(model, optimizer, batch(seed=step))
    for name, param in first.named_parameters():
        assert torch.equal(param, dict(second.named_parameters())[name]), name
    # without the optimizer state (Adam's moments, Adagrad's sums) the next steps differ
    assert any(not torch.equal(p, q) for p, q in zip(first.parameters(), fresh.parameters(), strict=True))


# ---------------------------------------------------------------------- sparse gradients


def test_sparse_gradients_turn_on_only_the_groups_embedding_tables():
    model = wide_deep()
    GroupedOptimizer(
        model,
        {
            "deep_table": {"params": r"re:^deep\.embedding\.", "sparse_gradients": True, "optimizer": ADAGRAD},
            "dense": {"params": "rest", "optimizer": ADAM},
        },
    )
    assert embedding_sparsity(model) == {"wide.categorical.table": False, "deep.embedding.table": True}
    dense, sparse, labels = batch()
    nn.functional.binary_cross_entropy_with_logits(model(dense, sparse), labels).backward()
    assert model.deep.embedding.table.weight.grad.is_sparse
    assert not model.wide.categorical.table.weight.grad.is_sparse
    assert not any(p.grad.is_sparse for n, p in model.named_parameters() if n not in WIDE_DEEP_TABLES)


def test_sparse_gradients_on_the_embeddings_group_and_the_wide_deep_option(compose_train):
    model = wide_deep()
    sparse_dense(model)
    assert embedding_sparsity(model) == {"wide.categorical.table": True, "deep.embedding.table": True}
    model = wide_deep()
    factory = instantiate(compose_train("model=wide_deep", "optimizer=wide_deep").optimizer, _convert_="all")
    optimizer = build_optimizer(factory, model)
    assert embedding_sparsity(model) == {"wide.categorical.table": True, "deep.embedding.table": False}
    assert isinstance(optimizer.optimizers["wide"], Ftrl)
    assert names_of(optimizer.optimizers["wide"]) == {
        "wide.categorical.table.weight",
        "wide.dense.weight",
        "wide.dense.bias",
    }
    before = snapshot(model)
    train_step(model, optimizer, batch())
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())


# ---------------------------------------------------------------------- build_optimizer


def test_build_optimizer_gives_a_torch_optimizer_the_trainable_named_parameters():
    model = wide_deep()
    model.wide.dense.bias.requires_grad_(False)
    optimizer = build_optimizer(ADAM, model)
    assert isinstance(optimizer, torch.optim.Adam)
    assert names_of(optimizer) == WIDE_DEEP_PARAMS - {"wide.dense.bias"}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    assert all(p is not model.wide.dense.bias for p in params) and len(params) == 7
    assert not any(embedding_sparsity(model).values())


@pytest.mark.parametrize(
    "factory,sparse",
    [
        (partial(LazyAdam, lr=0.01), True),
        (partial(Ftrl, lr=0.05), True),
        (ADAM, False),
        (ADAGRAD, False),
    ],
    ids=["lazy_adam", "ftrl", "adam", "adagrad"],
)
def test_row_sparse_optimizers_turn_on_sparse_gradients_for_every_table(factory, sparse):
    for model in (wide_deep(), deepfm()):
        optimizer = build_optimizer(factory, model)
        assert set(embedding_sparsity(model).values()) == {sparse}
        train_step(model, optimizer, batch())
        tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
        assert all(t.grad.is_sparse == sparse for t in tables)


def test_sparse_embeddings_refuse_adam():
    with pytest.raises(ConfigError) as caught:
        build_optimizer(ADAM, deepfm(sparse_embeddings=True))
    assert str(caught.value).startswith("optimizer: Adam cannot take the sparse gradients of the embedding tables;")
    # a group's own optimizer: named by its group
    groups = {"emb": {"params": "embeddings", "optimizer": ADAM}, "dense": {"params": "rest", "optimizer": ADAM}}
    with pytest.raises(ConfigError, match=r"^optimizer\.groups\.emb: Adam cannot take the sparse gradients"):
        build_optimizer(partial(GroupedOptimizer, groups=groups), deepfm(sparse_embeddings=True))
    groups["emb"]["sparse_gradients"] = True
    with pytest.raises(ConfigError, match=r"^optimizer\.groups\.emb: Adam cannot take"):
        build_optimizer(partial(GroupedOptimizer, groups=groups), deepfm())
    # a frozen sparse table reaches no optimizer
    model = deepfm(sparse_embeddings=True)
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.weight.requires_grad_(False)
    check_sparse_support(build_optimizer(ADAM, model), model)


@pytest.mark.parametrize(
    "factory",
    [
        partial(torch.optim.SGD, lr=0.1),
        ADAGRAD,
        partial(LazyAdam, lr=0.01),
        partial(Ftrl, lr=0.05),
        partial(TFRMSProp, lr=0.01),
    ],
    ids=["sgd", "adagrad", "lazy_adam", "ftrl", "tf_rmsprop"],
)
def test_sparse_capable_optimizers_are_accepted_and_step_on_sparse_gradients(factory):
    model = deepfm(sparse_embeddings=True)
    optimizer = build_optimizer(factory, model)
    check_sparse_support(optimizer, model)
    before = snapshot(model)
    train_step(model, optimizer, batch())
    assert model.embedding.table.weight.grad.is_sparse
    assert not torch.equal(model.embedding.table.weight, before["embedding.table.weight"])


@pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, torch.optim.Adagrad])
def test_weight_decay_with_sparse_gradients_is_refused_before_training(optimizer_cls):
    decayed = partial(optimizer_cls, lr=0.1, weight_decay=0.01)
    # what the check spares the user: torch fails at the first step, after the run has started
    model = deepfm(sparse_embeddings=True)
    with pytest.raises(RuntimeError):
        train_step(model, decayed(model.parameters()), batch())
    with pytest.raises(ConfigError) as caught:
        build_optimizer(decayed, deepfm(sparse_embeddings=True))
    assert str(caught.value).startswith(
        f"optimizer.weight_decay=0.01: {optimizer_cls.__name__} cannot apply weight decay to the sparse gradients"
    )
    groups = {
        "embeddings": {"params": "embeddings", "sparse_gradients": True, "optimizer": decayed},
        "dense": {"params": "rest", "optimizer": ADAM},
    }
    with pytest.raises(ConfigError, match=r"^optimizer\.groups\.embeddings\.optimizer\.weight_decay=0\.01: "):
        build_optimizer(partial(GroupedOptimizer, groups=groups), deepfm())
    # dense embeddings may decay; so may the dense group next to sparse tables
    model = deepfm()
    train_step(model, build_optimizer(decayed, model), batch())
    groups = {
        "embeddings": {"params": "embeddings", "sparse_gradients": True, "optimizer": ADAGRAD},
        "dense": {"params": "rest", "optimizer": decayed},
    }
    model = deepfm()
    train_step(model, build_optimizer(partial(GroupedOptimizer, groups=groups), model), batch())


def test_sparse_dense_option_updates_only_the_looked_up_rows_and_every_dense_parameter(compose_train):
    model = wide_deep()
    factory = instantiate(compose_train("optimizer=sparse_dense").optimizer, _convert_="all")
    optimizer = build_optimizer(factory, model)
    assert isinstance(optimizer.optimizers["embeddings"], torch.optim.Adagrad)
    assert isinstance(optimizer.optimizers["dense"], torch.optim.Adam)
    for step, (a_ids, b_ids) in enumerate([([0, 2], [1, 4]), ([1, 2], [0, 6])]):
        before = snapshot(model)
        data = batch(seed=step, size=8, a_ids=a_ids, b_ids=b_ids)
        train_step(model, optimizer, data)
        assert model.deep.embedding.table.weight.grad.is_sparse
        rows = set((data[1] + torch.tensor([0, 5])).flatten().tolist())  # field b's rows follow field a's 5
        assert rows == {*a_ids, *(5 + b for b in b_ids)}
        for name in WIDE_DEEP_TABLES:
            table, old = dict(model.named_parameters())[name], before[name]
            for row in range(12):
                if row in rows:
                    assert not torch.equal(table[row], old[row]), (name, row)
                else:
                    assert torch.equal(table[row], old[row]), (name, row)
        for name in WIDE_DEEP_PARAMS - WIDE_DEEP_TABLES:
            assert not torch.equal(dict(model.named_parameters())[name], before[name]), name


# ---------------------------------------------------------------------- build_schedules


def step_all(optimizer, schedules, steps: int) -> None:
    for _ in range(steps):
        optimizer.step()
        for schedule in schedules:
            schedule.step()


def test_build_schedules_one_per_inner_optimizer_a_groups_own_replaces_the_shared_one():
    model = wide_deep()
    groups = {
        "embeddings": {
            "params": "embeddings",
            "optimizer": partial(torch.optim.Adagrad, lr=0.1),
            "lr_schedule": partial(PolynomialDecay, total_steps=4),
        },
        "dense": {"params": "rest", "optimizer": ADAM},
    }
    optimizer = build_optimizer(partial(GroupedOptimizer, groups=groups), model)
    schedules = build_schedules(partial(ConstantLR), optimizer)
    assert [type(s) for s in schedules] == [PolynomialDecay, ConstantLR]
    assert [s.optimizer for s in schedules] == list(optimizer.optimizers.values())
    lrs = {}
    for steps in (1, 1, 3):
        step_all(optimizer, schedules, steps)
        lrs[len(lrs)] = {g["group"]: g["lr"] for g in optimizer.param_groups}
    assert lrs[0] == {"embeddings": pytest.approx(0.075), "dense": 0.01}
    assert lrs[1] == {"embeddings": pytest.approx(0.05), "dense": 0.01}
    assert lrs[2] == {"embeddings": 0.0, "dense": 0.01}  # held at the end after total_steps
    # without a shared schedule only the group with its own one is scheduled
    schedules = build_schedules(None, build_optimizer(partial(GroupedOptimizer, groups=groups), wide_deep()))
    assert [type(s) for s in schedules] == [PolynomialDecay]


def test_build_schedules_for_a_plain_optimizer():
    optimizer = build_optimizer(ADAM, wide_deep())
    [schedule] = build_schedules(partial(PolynomialDecay, total_steps=10), optimizer)
    assert schedule.optimizer is optimizer
    step_all(optimizer, [schedule], 5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
    assert build_schedules(None, optimizer) == []


def test_a_groups_lr_schedule_from_the_config(compose_train):
    cfg = compose_train(
        "optimizer=sparse_dense",
        "optimizer.groups.embeddings.optimizer.lr=0.2",
        "+optimizer.groups.embeddings.lr_schedule={_target_: easyrec.optim.PolynomialDecay, _partial_: true, "
        "total_steps: 4}",
        "lr_schedule=exponential_decay",
        "lr_schedule.decay_steps=1",
        "lr_schedule.decay_factor=0.5",
    )
    validate(cfg)
    optimizer = build_optimizer(instantiate(cfg.optimizer, _convert_="all"), wide_deep())
    schedules = build_schedules(instantiate(cfg.lr_schedule, _convert_="all"), optimizer)
    step_all(optimizer, schedules, 2)
    lrs = {g["group"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {"embeddings": pytest.approx(0.1), "dense": pytest.approx(1e-3 * 0.25)}


# ---------------------------------------------------------------------- config validation of the groups


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["optimizer=sparse_dense", "optimizer.groups.embeddings.optimizer.lr=-1"],
            "optimizer.groups.embeddings.optimizer.lr=-1.0: must be > 0",
        ),
        (
            [
                "optimizer=sparse_dense",
                "+optimizer.groups.embeddings.lr_schedule={_target_: easyrec.optim.PolynomialDecay, "
                "_partial_: true, total_steps: 0}",
            ],
            "optimizer.groups.embeddings.lr_schedule.total_steps=0: must be > 0",
        ),
        (
            ["lr_schedule=exponential_decay", "lr_schedule.decay_factor=-0.5"],
            "lr_schedule.decay_factor=-0.5: must be > 0",
        ),
    ],
    ids=["group-lr", "group-schedule", "shared-schedule"],
)
def test_config_validation_names_the_key(compose_train, overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate(compose_train(*overrides))
    assert str(caught.value) == message
