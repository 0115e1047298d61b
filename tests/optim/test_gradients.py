"""GradientTreatment on hand-set gradients, and the trainer's handling of non-finite steps and group lrs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from easyrec.config import validate
from easyrec.data import InputSpec, SyntheticCTRData
from easyrec.errors import ConfigError, EasyrecError
from easyrec.loggers import Logger
from easyrec.losses import BinaryCrossEntropy
from easyrec.models import DeepFM, WideAndDeep
from easyrec.optim import ConstantLR, GradientTreatment, GroupedOptimizer, PolynomialDecay, build_schedules
from easyrec.optim.gradients import NonFiniteGradientError, global_norm
from easyrec.optim.sparse_rows import coalesced
from easyrec.trainer import Trainer
from tests.conftest import CRITEO_FEATURES


class Tiny(nn.Module):
    """``emb.weight (4, 2)``, ``lin.weight (1, 2)``, ``lin.bias (1,)``."""

    def __init__(self, sparse: bool = False) -> None:
        super().__init__()
        self.emb = nn.Embedding(4, 2, sparse=sparse)
        self.lin = nn.Linear(2, 1)


def prepared(model: nn.Module, **kwargs) -> GradientTreatment:
    treatment = GradientTreatment(**kwargs)
    treatment.prepare(model)
    return treatment


def set_grads(model: Tiny, lin_weight, lin_bias, emb=None) -> None:
    model.lin.weight.grad = torch.tensor([lin_weight])
    model.lin.bias.grad = torch.tensor([lin_bias])
    model.emb.weight.grad = torch.zeros(4, 2) if emb is None else torch.tensor(emb)


def sparse_backward(model: Tiny) -> None:
    """Row 1 looked up twice with gradients [1, 0] and [2, 4]: coalesced, row 1 gets [3, 4] (norm 5)."""
    (model.emb(torch.tensor([1, 1])) * torch.tensor([[1.0, 0.0], [2.0, 4.0]])).sum().backward()
    assert model.emb.weight.grad.is_sparse and not model.emb.weight.grad.is_coalesced()


def dense_rows(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_dense() if grad.is_sparse else grad


# ---------------------------------------------------------------------- clipping


def test_clip_norm_scales_every_gradient_by_clip_over_norm():
    model = Tiny()
    set_grads(model, [3.0, 0.0], 4.0, emb=[[0.0, 0.0]] * 4)
    report = prepared(model, clip_norm=1.0).apply(step=1)
    assert report.norm == 5.0 and report.apply
    assert torch.allclose(model.lin.weight.grad, torch.tensor([[0.6, 0.0]]))
    assert torch.allclose(model.lin.bias.grad, torch.tensor([0.8]))
    assert global_norm([p.grad for p in model.parameters()]) == pytest.approx(1.0)


@pytest.mark.parametrize("clip_norm", [5.0, 10.0, None])
def test_clip_norm_leaves_gradients_whose_norm_is_within(clip_norm):
    model = Tiny()
    set_grads(model, [3.0, 0.0], 4.0)
    report = prepared(model, clip_norm=clip_norm).apply(step=1)
    assert report.norm == 5.0
    assert torch.equal(model.lin.weight.grad, torch.tensor([[3.0, 0.0]]))
    assert torch.equal(model.lin.bias.grad, torch.tensor([4.0]))


def test_the_norm_counts_sparse_gradients_coalesced_and_clipping_scales_them():
    model = Tiny(sparse=True)
    sparse_backward(model)
    model.lin.weight.grad, model.lin.bias.grad = torch.zeros(1, 2), torch.tensor([12.0])
    report = prepared(model, clip_norm=6.5).apply(step=1)
    assert report.norm == pytest.approx(13.0)  # sqrt(3² + 4² + 12²); uncoalesced rows would give sqrt(1 + 4 + 16 + 144)
    grad = model.emb.weight.grad
    assert grad.is_sparse and grad.is_coalesced()
    assert torch.allclose(grad.to_dense(), torch.tensor([[0.0, 0.0], [1.5, 2.0], [0.0, 0.0], [0.0, 0.0]]))
    assert torch.allclose(model.lin.bias.grad, torch.tensor([6.0]))


def test_clip_value_clamps_dense_and_sparse_elements_after_clip_norm():
    model = Tiny(sparse=True)
    sparse_backward(model)
    model.lin.weight.grad, model.lin.bias.grad = torch.tensor([[-0.2, 0.3]]), torch.tensor([-4.0])
    report = prepared(model, clip_value=0.5).apply(step=1)
    assert report.norm == pytest.approx(math.sqrt(25 + 0.04 + 0.09 + 16))  # before clipping
    assert torch.allclose(model.lin.weight.grad, torch.tensor([[-0.2, 0.3]]))
    assert torch.allclose(model.lin.bias.grad, torch.tensor([-0.5]))
    assert torch.equal(model.emb.weight.grad.to_dense()[1], torch.tensor([0.5, 0.5]))
    # both: first by norm (13 -> 6.5 halves everything), then by value
    model = Tiny(sparse=True)
    sparse_backward(model)
    model.lin.weight.grad, model.lin.bias.grad = torch.zeros(1, 2), torch.tensor([12.0])
    prepared(model, clip_norm=6.5, clip_value=1.8).apply(step=1)
    assert torch.allclose(model.emb.weight.grad.to_dense()[1], torch.tensor([1.5, 1.8]))
    assert torch.allclose(model.lin.bias.grad, torch.tensor([1.8]))


# ---------------------------------------------------------------------- multipliers, noise, freeze


def test_multipliers_by_regex_multiply_exactly_the_matched_gradients_before_the_norm():
    model = Tiny()
    set_grads(model, [1.0, 2.0], 4.0, emb=[[1.0, 1.0]] + [[0.0, 0.0]] * 3)
    report = prepared(model, multipliers={r"^lin\.weight$": 3.0}).apply(step=1)
    assert torch.equal(model.lin.weight.grad, torch.tensor([[3.0, 6.0]]))
    assert torch.equal(model.lin.bias.grad, torch.tensor([4.0]))
    assert torch.equal(model.emb.weight.grad[0], torch.tensor([1.0, 1.0]))
    assert report.norm == pytest.approx(math.sqrt(9 + 36 + 16 + 2))


def test_the_embeddings_multiplier_multiplies_every_embedding_table():
    torch.manual_seed(0)
    model = WideAndDeep(InputSpec(("d",), ("a", "b"), (5, 7)), embedding_dim=2, hidden_units=[4])
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    original = {n: p.grad.clone() for n, p in model.named_parameters()}
    prepared(model, multipliers={"embeddings": 10.0}).apply(step=1)
    tables = {"wide.categorical.table.weight", "deep.embedding.table.weight"}
    for name, param in model.named_parameters():
        expected = original[name] * 10.0 if name in tables else original[name]
        assert torch.equal(param.grad, expected), name


def test_sparse_gradients_are_multiplied_too():
    model = Tiny(sparse=True)
    sparse_backward(model)
    prepared(model, multipliers={"embeddings": 2.0}).apply(step=1)
    assert torch.equal(model.emb.weight.grad.to_dense()[1], torch.tensor([6.0, 8.0]))


def test_noise_has_the_expected_std_and_zero_noise_leaves_gradients():
    model = nn.Linear(200, 100)
    torch.manual_seed(0)
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    prepared(model, noise_scale=0.1).apply(step=1)
    noise = model.weight.grad
    assert noise.std().item() == pytest.approx(0.1, rel=0.03)
    assert abs(noise.mean().item()) < 0.005
    assert model.bias.grad.abs().sum() > 0
    grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    for name, param in model.named_parameters():
        param.grad = grads[name].clone()
    prepared(model, noise_scale=0.0).apply(step=1)
    assert all(torch.equal(p.grad, grads[n]) for n, p in model.named_parameters())


def test_noise_on_sparse_gradients_touches_only_the_looked_up_rows():
    model = Tiny(sparse=True)
    sparse_backward(model)
    model.lin.weight.grad, model.lin.bias.grad = torch.zeros(1, 2), torch.zeros(1)
    torch.manual_seed(0)
    prepared(model, noise_scale=0.5).apply(step=1)
    grad = model.emb.weight.grad
    assert grad.is_sparse and grad._indices().tolist() == [[1]]
    assert not torch.equal(grad._values()[0], torch.tensor([3.0, 4.0]))


def test_freeze_turns_off_the_matched_parameters_and_leaves_them_out_of_the_norm():
    model = Tiny()
    treatment = prepared(model, freeze=[r"^lin\."], clip_norm=1.0)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == {
        "emb.weight": True,
        "lin.weight": False,
        "lin.bias": False,
    }
    set_grads(model, [30.0, 0.0], 40.0, emb=[[0.0, 2.0]] + [[0.0, 0.0]] * 3)
    report = treatment.apply(step=1)
    assert report.norm == 2.0
    assert torch.equal(model.lin.bias.grad, torch.tensor([40.0]))  # frozen: neither counted nor clipped
    assert torch.equal(model.emb.weight.grad[0], torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"freeze": ["^lin", "nomatch"]}, "gradients.freeze: 'nomatch' matches no parameter of Tiny"),
        ({"multipliers": {"nomatch": 2.0}}, "gradients.multipliers: 'nomatch' matches no parameter of Tiny"),
    ],
)
def test_unmatched_regexes_raise_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        prepared(Tiny(), **kwargs)
    assert str(caught.value) == message


def test_the_embeddings_multiplier_needs_an_embedding_table():
    with pytest.raises(ConfigError, match="^gradients.multipliers: 'embeddings' matches no parameter of Linear$"):
        prepared(nn.Linear(2, 1), multipliers={"embeddings": 2.0})


# ---------------------------------------------------------------------- non-finite gradients


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_gradient_skips_the_step_and_is_counted(bad):
    model = Tiny()
    treatment = prepared(model, clip_norm=1.0, clip_value=0.1)
    set_grads(model, [3.0, 0.0], bad)
    report = treatment.apply(step=1)
    assert not report.apply and not math.isfinite(report.norm)
    assert treatment.skipped_steps == 1
    assert torch.equal(model.lin.weight.grad, torch.tensor([[3.0, 0.0]]))  # not clipped
    set_grads(model, [3.0, 0.0], 4.0)
    assert treatment.apply(step=2).apply and treatment.skipped_steps == 1
    set_grads(model, [bad, 0.0], 4.0)
    assert not treatment.apply(step=3).apply and treatment.skipped_steps == 2


def test_a_non_finite_gradient_raises_with_non_finite_error():
    model = Tiny()
    treatment = prepared(model, non_finite="error")
    set_grads(model, [float("nan"), 0.0], 4.0)
    with pytest.raises(NonFiniteGradientError, match=r"^step 7: the gradient norm is nan;") as caught:
        treatment.apply(step=7)
    assert isinstance(caught.value, EasyrecError)
    assert treatment.skipped_steps == 0


def test_an_unknown_non_finite_policy_is_a_config_error():
    with pytest.raises(ValueError, match="^non_finite=ignore: must be one of: skip, error$"):
        GradientTreatment(non_finite="ignore")


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override,message",
    [
        ("gradients.clip_norm=-1", "gradients.clip_norm=-1.0: must be > 0"),
        ("gradients.clip_value=0", "gradients.clip_value=0.0: must be > 0"),
        ("gradients.noise_scale=-0.1", "gradients.noise_scale=-0.1: must be >= 0"),
        ("gradients.non_finite=ignore", "gradients.non_finite=ignore: must be one of: skip, error"),
    ],
)
def test_config_validation_names_the_gradients_key(compose_train, override, message):
    with pytest.raises(ConfigError) as caught:
        validate(compose_train(override))
    assert str(caught.value) == message


def test_the_gradients_config_builds_the_treatment(compose_train):
    cfg = compose_train(
        "gradients.clip_norm=5", "++gradients.multipliers={embeddings: 10}", 'gradients.freeze=["^linear"]'
    )
    validate(cfg)
    treatment = instantiate(cfg.gradients, _convert_="all")
    assert (treatment.clip_norm, treatment.multipliers, treatment.freeze) == (5.0, {"embeddings": 10.0}, ["^linear"])
    model = DeepFM(InputSpec(("d",), ("a", "b"), (5, 7)), embedding_dim=2, hidden_units=[4])
    treatment.prepare(model)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {
        "linear.categorical.table.weight",
        "linear.dense.weight",
        "linear.dense.bias",
    }
    assert [factor for _, factor in treatment._scaled] == [10.0]  # the frozen table is not scaled


# ---------------------------------------------------------------------- in the trainer


class RecordingLogger(Logger):
    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.calls.append((step, dict(metrics)))

    def train_metrics(self) -> dict[int, dict[str, float]]:
        return {step: metrics for step, metrics in self.calls if "train/loss" in metrics}


class NaNOnCall:
    """BCE whose ``nan_call``-th training call returns NaN; keeps the model's weights as each training call sees
    them (evaluation's calls, for ``eval/loss``, run without gradients and count for nothing)."""

    def __init__(self, model: nn.Module, nan_call: int) -> None:
        self.model, self.nan_call, self.bce = model, nan_call, BinaryCrossEntropy()
        self.weights_seen: list[list[torch.Tensor]] = []

    def __call__(self, logits, labels, weights=None):
        if not torch.is_grad_enabled():
            return self.bce(logits, labels, weights)
        self.weights_seen.append([p.detach().clone() for p in self.model.parameters()])
        loss = self.bce(logits, labels, weights)
        return loss * float("nan") if len(self.weights_seen) == self.nan_call else loss


@pytest.fixture(scope="module")
def data() -> SyntheticCTRData:
    data = SyntheticCTRData(CRITEO_FEATURES, num_rows=2000, batch_size=256, seed=0)
    data.setup()
    return data


def small_deepfm(data) -> DeepFM:
    torch.manual_seed(0)
    return DeepFM(data.input_spec, embedding_dim=2, hidden_units=[4])


def test_the_trainer_skips_a_nan_step_and_logs_it(data, tmp_path):
    model = small_deepfm(data)
    loss = NaNOnCall(model, nan_call=3)
    logger = RecordingLogger()
    trainer = Trainer(
        model=model,
        data=data,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        loss=loss,
        output_dir=tmp_path,
        logger=logger,
        max_steps=5,
        log_every_n_steps=1,
        progress_bar=False,
        device="cpu",
    )
    metrics = trainer.fit()
    seen = loss.weights_seen  # seen[k]: the weights after k steps

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    assert len(seen) == 5
    assert not same(seen[1], seen[2]) and not same(seen[3], seen[4])  # steps 2 and 4 applied
    assert same(seen[2], seen[3])  # step 3 skipped
    train = logger.train_metrics()
    assert [train[s]["train/skipped_steps"] for s in range(1, 6)] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert math.isnan(train[3]["train/grad_norm"]) and math.isfinite(train[4]["train/grad_norm"])
    assert trainer.step == 5 and math.isfinite(metrics["eval/logloss"])


def test_the_trainer_logs_the_lr_of_every_group(data, tmp_path):
    model = small_deepfm(data)
    optimizer = GroupedOptimizer(
        model,
        {
            "embeddings": {
                "params": "embeddings",
                "sparse_gradients": True,
                "optimizer": partial(torch.optim.Adagrad, lr=0.1),
                "lr_schedule": partial(PolynomialDecay, total_steps=8),
            },
            "dense": {"params": "rest", "optimizer": partial(torch.optim.Adam, lr=1e-3)},
        },
    )
    logger = RecordingLogger()
    trainer = Trainer(
        model=model,
        data=data,
        optimizer=optimizer,
        loss=BinaryCrossEntropy(),
        output_dir=tmp_path,
        logger=logger,
        lr_schedulers=build_schedules(ConstantLR, optimizer),
        max_steps=4,
        log_every_n_steps=1,
        progress_bar=False,
        device="cpu",
    )
    trainer.fit()
    train = logger.train_metrics()
    assert sorted(train) == [1, 2, 3, 4]
    for step, metrics in train.items():
        assert metrics["train/lr/embeddings"] == pytest.approx(0.1 * (1 - step / 8))
        assert metrics["train/lr/dense"] == 1e-3
        assert metrics["train/lr"] == metrics["train/lr/embeddings"]  # the first param group's
        assert metrics["train/skipped_steps"] == 0.0
    assert model.embedding.table.weight.grad.is_sparse


@pytest.mark.parametrize("dims", [(16,), (1,), (2, 3)])
def test_coalesced_sums_duplicate_rows_as_torch_does(dims):
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 50, (400,), generator=generator)  # many duplicates
    grad = torch.sparse_coo_tensor(rows[None], torch.randn(400, *dims, generator=generator), (60, *dims))
    mine, torchs = coalesced(grad), grad.coalesce()
    assert mine.is_coalesced() and torch.equal(mine.indices(), torchs.indices())
    torch.testing.assert_close(mine.values(), torchs.values())
    assert torch.equal(coalesced(torchs).values(), torchs.values())  # already coalesced: unchanged


def test_gradients_of_one_step_with_the_same_ids_share_their_unique_rows():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (400,), generator=generator)
    other = torch.randint(0, 50, (400,), generator=generator)  # same shape, other ids: not reused
    grads = [
        torch.sparse_coo_tensor(index[None].clone(), torch.randn(400, width, generator=generator), (60, width))
        for index, width in ((ids, 16), (ids, 1), (other, 16))
    ]
    last: dict = {}
    kept = []
    for grad in grads:
        mine, torchs = coalesced(grad, last), grad.coalesce()
        assert torch.equal(mine.indices(), torchs.indices())
        torch.testing.assert_close(mine.values(), torchs.values())
        kept.append(last["ids"].data_ptr())
    first, second, third = (grad._indices().data_ptr() for grad in grads)
    assert kept == [first, first, third]  # the second gradient reused the first's unique rows
