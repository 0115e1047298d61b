"""EasyRec's learning-rate schedules: lrs at chosen steps against the formulas, groups, bad arguments, resuming."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from functools import partial

import pytest
import torch
from torch import nn

from easyrec.checkpoints import load_checkpoint
from easyrec.optim import (
    ConstantLR,
    CosineDecayWithWarmup,
    ExponentialDecayWithBurnin,
    ManualStepLR,
    PolynomialDecay,
    StepSchedule,
    TransformerLR,
    build_schedules,
)
from tests.conftest import QUICK, options

Factory = Callable[[torch.optim.Optimizer], StepSchedule]


def sgd(*lrs: float) -> torch.optim.SGD:
    """An SGD optimizer with one one-element parameter per lr, each in its own group."""
    return torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def trace(scheduler: StepSchedule, steps: int) -> list[list[float]]:
    """The groups' lrs after s = 0, 1, …, steps optimizer steps (one scheduler step after each)."""
    optimizer = scheduler.optimizer
    lrs = [[group["lr"] for group in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append([group["lr"] for group in optimizer.param_groups])
        assert scheduler.get_last_lr() == lrs[-1]
    return lrs


def lr_trace(factory: Factory, steps: int, lr: float = 0.1) -> list[float]:
    """The lr of a one-group optimizer after s = 0, 1, …, steps optimizer steps."""
    return [lrs[0] for lrs in trace(factory(sgd(lr)), steps)]


def check(lrs: list[float], expected: dict[int, float]) -> None:
    for step, lr in expected.items():
        assert lrs[step] == pytest.approx(lr, rel=1e-12, abs=1e-15), f"s={step}"


def test_constant_keeps_the_optimizer_lr() -> None:
    assert lr_trace(ConstantLR, 5, lr=0.3) == [0.3] * 6


def test_the_optimizer_updates_with_the_lr_of_the_current_step() -> None:
    # With a gradient of 1, SGD's update k (from s=k−1 to s=k) is −lr(s=k−1).
    param = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = ManualStepLR(optimizer, [(2, 0.01)])
    for _ in range(4):
        param.grad = torch.ones(1, dtype=torch.float64)
        optimizer.step()
        scheduler.step()
    assert param.item() == pytest.approx(-(0.1 + 0.1 + 0.01 + 0.01))


def test_exponential_decay_staircase() -> None:
    lrs = lr_trace(lambda opt: ExponentialDecayWithBurnin(opt, decay_steps=10, decay_factor=0.5), 30)
    check(lrs, {0: 0.1, 9: 0.1, 10: 0.05, 19: 0.05, 20: 0.025, 25: 0.025, 30: 0.0125})


def test_exponential_decay_continuous() -> None:
    lrs = lr_trace(lambda opt: ExponentialDecayWithBurnin(opt, decay_steps=10, decay_factor=0.5, staircase=False), 30)
    check(lrs, {0: 0.1, 5: 0.07071067811865475, 10: 0.05, 25: 0.1 * 0.5**2.5})
    check(lrs, {s: 0.1 * 0.5 ** (s / 10) for s in range(31)})


def test_exponential_decay_linear_burnin_then_decay_from_its_end() -> None:
    lrs = lr_trace(
        lambda opt: ExponentialDecayWithBurnin(
            opt, decay_steps=4, decay_factor=0.5, burnin_learning_rate=0.01, burnin_steps=10
        ),
        20,
    )
    check(lrs, {0: 0.01, 5: 0.055, 9: 0.091, 10: 0.1, 13: 0.1, 14: 0.05, 18: 0.025})
    check(lrs, {s: 0.01 + (0.1 - 0.01) * s / 10 for s in range(10)})
    check(lrs, {s: 0.1 * 0.5 ** math.floor((s - 10) / 4) for s in range(10, 21)})


def test_exponential_decay_zero_burnin_rate_holds_the_base_rate() -> None:
    lrs = lr_trace(lambda opt: ExponentialDecayWithBurnin(opt, decay_steps=2, decay_factor=0.5, burnin_steps=6), 10)
    check(lrs, {0: 0.1, 5: 0.1, 6: 0.1, 7: 0.1, 8: 0.05, 10: 0.025})


def test_exponential_decay_min_rate_floors_decay_and_burnin() -> None:
    lrs = lr_trace(
        lambda opt: ExponentialDecayWithBurnin(
            opt, decay_steps=1, decay_factor=0.5, burnin_learning_rate=0.001, burnin_steps=2, min_learning_rate=0.01
        ),
        10,
    )
    # Burn-in: 0.001 and 0.0505; decay from s=2: 0.1, 0.05, 0.025, 0.0125, then below the floor.
    check(lrs, {0: 0.01, 1: 0.0505, 2: 0.1, 5: 0.0125, 6: 0.01, 10: 0.01})


def test_manual_step_switches_at_the_boundaries() -> None:
    lrs = lr_trace(lambda opt: ManualStepLR(opt, [(3, 0.05), (6, 0.01)]), 10)
    assert lrs == [0.1] * 3 + [0.05] * 3 + [0.01] * 5


def test_manual_step_warmup_interpolates_up_to_the_first_boundary() -> None:
    lrs = lr_trace(lambda opt: ManualStepLR(opt, [(4, 0.5), (8, 0.2)], warmup=True), 10)
    check(lrs, {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4, 4: 0.5, 7: 0.5, 8: 0.2, 10: 0.2})


def test_manual_step_warmup_from_a_zero_lr_single_group() -> None:
    lrs = lr_trace(lambda opt: ManualStepLR(opt, [(4, 0.4)], warmup=True), 5, lr=0.0)
    check(lrs, {0: 0.0, 2: 0.2, 4: 0.4, 5: 0.4})


def cosine_expected(s: int, base: float, total: int, warmup_lr: float, warmup: int, hold: int) -> float:
    """The spec's formula, applied in its order: cosine, then hold, then warm-up, then the end."""
    lr = 0.5 * base * (1 + math.cos(math.pi * (s - warmup - hold) / (total - warmup - hold)))
    if hold > 0 and s <= warmup + hold:
        lr = base
    if warmup > 0 and s < warmup:
        lr = warmup_lr + (base - warmup_lr) * s / warmup
    return 0.0 if s > total else lr


def test_cosine_decay_warmup_hold_decay_and_end() -> None:
    lrs = lr_trace(
        lambda opt: CosineDecayWithWarmup(
            opt, total_steps=20, warmup_learning_rate=0.01, warmup_steps=5, hold_base_rate_steps=3
        ),
        25,
    )
    check(lrs, {0: 0.01, 2: 0.046, 4: 0.082, 5: 0.1, 8: 0.1, 14: 0.05, 20: 0.0, 21: 0.0, 25: 0.0})
    check(lrs, {s: cosine_expected(s, 0.1, 20, 0.01, 5, 3) for s in range(26)})
    assert lrs[8] > lrs[9] > lrs[14] > lrs[19] > 0


def test_cosine_decay_without_warmup_or_hold() -> None:
    lrs = lr_trace(lambda opt: CosineDecayWithWarmup(opt, total_steps=10), 12)
    check(lrs, {0: 0.1, 5: 0.05, 10: 0.0, 11: 0.0})
    check(lrs, {s: cosine_expected(s, 0.1, 10, 0.0, 0, 0) for s in range(13)})


def test_cosine_decay_ending_with_the_warmup_gives_the_base_rate_not_nan() -> None:
    lrs = lr_trace(lambda opt: CosineDecayWithWarmup(opt, total_steps=4, warmup_steps=4), 5)
    check(lrs, {0: 0.0, 2: 0.05, 4: 0.1, 5: 0.0})


def test_polynomial_decay() -> None:
    lrs = lr_trace(lambda opt: PolynomialDecay(opt, total_steps=10, power=2.0, end_learning_rate=0.01), 15)
    check(lrs, {0: 0.1, 5: 0.0325, 10: 0.01, 15: 0.01})
    check(lrs, {s: (0.1 - 0.01) * (1 - min(s, 10) / 10) ** 2 + 0.01 for s in range(16)})


def test_polynomial_decay_defaults_to_linear_down_to_zero() -> None:
    lrs = lr_trace(lambda opt: PolynomialDecay(opt, total_steps=4), 6)
    check(lrs, {0: 0.1, 1: 0.075, 2: 0.05, 4: 0.0, 6: 0.0})


def test_transformer_rises_over_the_warmup_then_decays() -> None:
    lrs = lr_trace(lambda opt: TransformerLR(opt, hidden_size=16, warmup_steps=4), 10, lr=1.0)
    # d^−0.5 = 0.25, w^−1.5 = 0.125; the two branches meet at s + 1 = w.
    check(lrs, {0: 0.03125, 1: 0.0625, 3: 0.125, 4: 0.25 / math.sqrt(5), 8: 0.25 / 3})
    check(lrs, {s: 16**-0.5 * min((s + 1) * 4**-1.5, (s + 1) ** -0.5) for s in range(11)})
    assert max(lrs) == lrs[3]


def test_transformer_step_scaling_scales_step_and_warmup() -> None:
    lrs = lr_trace(lambda opt: TransformerLR(opt, hidden_size=64, warmup_steps=10, step_scaling_rate=0.5), 20)
    check(lrs, {s: 0.1 * 64**-0.5 * min((0.5 * s + 1) * 5**-1.5, (0.5 * s + 1) ** -0.5) for s in range(21)})


# One schedule of each option of conf/lr_schedule/, by option name.
ALL_SCHEDULES: dict[str, Factory] = {
    "constant": ConstantLR,
    "exponential_decay": lambda opt: ExponentialDecayWithBurnin(
        opt, decay_steps=3, decay_factor=0.5, burnin_learning_rate=0.01, burnin_steps=4, min_learning_rate=0.02
    ),
    "manual_step": lambda opt: ManualStepLR(opt, [(3, 0.3), (6, 0.05)], warmup=True),
    "cosine": lambda opt: CosineDecayWithWarmup(
        opt, total_steps=12, warmup_learning_rate=0.01, warmup_steps=3, hold_base_rate_steps=2
    ),
    "polynomial": lambda opt: PolynomialDecay(opt, total_steps=10, power=1.5, end_learning_rate=0.02),
    "transformer": lambda opt: TransformerLR(opt, hidden_size=8, warmup_steps=3),
}


def test_the_table_has_a_schedule_of_each_conf_option(compose_train):
    assert sorted(ALL_SCHEDULES) == options("lr_schedule")
    for option, factory in ALL_SCHEDULES.items():
        target = compose_train(f"lr_schedule={option}").lr_schedule._target_
        assert target == f"easyrec.optim.{type(factory(sgd(0.1))).__name__}", option


@pytest.mark.parametrize("factory", ALL_SCHEDULES.values(), ids=ALL_SCHEDULES.keys())
def test_param_groups_follow_group_0_and_keep_their_ratio(factory: Factory) -> None:
    # Absolute rates are group 0's; group i gets group 0's lr times lr_i / lr_0.
    single = lr_trace(factory, 14)
    grouped = trace(factory(sgd(0.1, 0.02, 0.4)), 14)
    for step, (first, second, third) in enumerate(grouped):
        assert first == single[step], f"s={step}"
        assert second == pytest.approx(first * 0.2, rel=1e-12, abs=1e-15), f"s={step}"
        assert third == pytest.approx(first * 4.0, rel=1e-12, abs=1e-15), f"s={step}"


def test_param_groups_scale_absolute_rates_with_group_0() -> None:
    grouped = trace(ManualStepLR(sgd(0.1, 0.02), [(2, 0.05)]), 2)
    assert grouped[0] == [0.1, 0.02]
    assert grouped[2] == [0.05, pytest.approx(0.01)]


def test_several_groups_need_a_positive_group_0_lr() -> None:
    with pytest.raises(ValueError, match="param group 0 lr=0.0"):
        ConstantLR(sgd(0.0, 0.1))


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda opt: ExponentialDecayWithBurnin(opt, decay_steps=0), r"decay_steps=0: must be > 0"),
        (lambda opt: ExponentialDecayWithBurnin(opt, decay_steps=5, decay_factor=0.0), r"decay_factor=0.0"),
        (lambda opt: ExponentialDecayWithBurnin(opt, decay_steps=5, burnin_steps=-1), r"burnin_steps=-1"),
        (lambda opt: ExponentialDecayWithBurnin(opt, 5, burnin_learning_rate=-0.1), r"burnin_learning_rate=-0.1"),
        (lambda opt: ExponentialDecayWithBurnin(opt, 5, min_learning_rate=-0.1), r"min_learning_rate=-0.1"),
        (lambda opt: ManualStepLR(opt, []), r"schedule=\[\]: must have at least one"),
        (lambda opt: ManualStepLR(opt, [(0, 0.01)]), r"the first step must be > 0"),
        (lambda opt: ManualStepLR(opt, [(-2, 0.01)]), r"the first step must be > 0"),
        (lambda opt: ManualStepLR(opt, [(5, 0.01), (5, 0.001)]), r"strictly increasing"),
        (lambda opt: ManualStepLR(opt, [(5, 0.01), (3, 0.001)]), r"strictly increasing"),
        (lambda opt: ManualStepLR(opt, [(2.5, 0.01)]), r"steps must be integers"),
        (lambda opt: ManualStepLR(opt, [(2, -0.01)]), r"learning rates must be >= 0"),
        (lambda opt: CosineDecayWithWarmup(opt, total_steps=0), r"total_steps=0: must be > 0"),
        (lambda opt: CosineDecayWithWarmup(opt, total_steps=5, warmup_steps=6), r"total_steps=5: must be >= warmup"),
        (lambda opt: CosineDecayWithWarmup(opt, 5, warmup_learning_rate=0.2), r"warmup_learning_rate=0.2: must be <="),
        (lambda opt: CosineDecayWithWarmup(opt, 5, hold_base_rate_steps=-1), r"hold_base_rate_steps=-1"),
        (lambda opt: PolynomialDecay(opt, total_steps=0), r"total_steps=0: must be > 0"),
        (lambda opt: PolynomialDecay(opt, total_steps=5, power=-1.0), r"power=-1.0"),
        (lambda opt: PolynomialDecay(opt, total_steps=5, end_learning_rate=-0.1), r"end_learning_rate=-0.1"),
        (lambda opt: TransformerLR(opt, hidden_size=0, warmup_steps=5), r"hidden_size=0: must be > 0"),
        (lambda opt: TransformerLR(opt, hidden_size=8, warmup_steps=0), r"warmup_steps=0: must be > 0"),
        (lambda opt: TransformerLR(opt, 8, 5, step_scaling_rate=0.0), r"step_scaling_rate=0.0"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(factory: Factory, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        factory(sgd(0.1))


@pytest.mark.parametrize("factory", ALL_SCHEDULES.values(), ids=ALL_SCHEDULES.keys())
def test_state_dict_round_trip_resumes_at_the_same_lr(factory: Factory) -> None:
    scheduler = factory(sgd(0.1, 0.05))
    trace(scheduler, 7)
    buffer = io.BytesIO()
    torch.save({"optimizer": scheduler.optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    # weights_only: the scheduler's state must be plain values.
    saved = torch.load(buffer, weights_only=True)

    # A fresh run at different lrs: loading must restore the base lrs and the step, not keep these.
    optimizer = sgd(0.7, 0.7)
    restored = factory(optimizer)
    optimizer.load_state_dict(saved["optimizer"])
    restored.load_state_dict(saved["scheduler"])
    assert restored.last_epoch == 7
    assert [group["lr"] for group in optimizer.param_groups] == scheduler.get_last_lr()
    assert trace(restored, 6) == trace(scheduler, 6)


# ---------------------------------------------------------------------- over the whole run (total_steps: null)


def test_build_schedules_gives_a_schedule_without_total_steps_the_runs_planned_steps():
    optimizer = sgd(0.1)
    [cosine] = build_schedules(partial(CosineDecayWithWarmup, total_steps=None, warmup_steps=2), optimizer, 10)
    assert cosine.total_steps == 10
    lrs = trace(cosine, 10)
    assert lrs[2] == [pytest.approx(0.1)] and lrs[10] == [pytest.approx(0.0, abs=1e-12)]
    [fixed] = build_schedules(partial(PolynomialDecay, total_steps=4), sgd(0.1), 10)
    assert fixed.total_steps == 4  # a number given stays
    with pytest.raises(ValueError, match=r"total_steps=None: give a number of steps"):
        build_schedules(partial(PolynomialDecay, total_steps=None), sgd(0.1))


@pytest.mark.slow
def test_cosine_from_the_command_line_decays_to_zero_at_the_last_step(easyrec_main, tmp_path):
    """``lr_schedule=cosine`` with its default ``total_steps: null`` spans max_epochs x steps per epoch."""
    overrides = [*QUICK, "trainer.max_epochs=2", "lr_schedule=cosine", "logger=none", "trainer.progress_bar=false"]
    code, _, err = easyrec_main("train", *overrides, f"hydra.run.dir={tmp_path}")
    assert code == 0, err
    state = load_checkpoint(tmp_path, "latest")
    [schedule] = state["lr_schedulers"]
    assert schedule["total_steps"] == state["step"] == 2 * 22  # 5,400 train rows in steps of 256: 22 an epoch
    assert schedule["_last_lr"] == [pytest.approx(0.0, abs=1e-12)]
