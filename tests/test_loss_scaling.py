"""trainer.precision=fp16: the loss scale by hand (on the CPU, where torch's GradScaler also runs), its refusal on
the CPU in the trainer, and a short fp16 run where a GPU is."""

from __future__ import annotations

import pytest
import torch

from easyrec.errors import ConfigError
from easyrec.loss_scaling import LossScale
from easyrec.optim.gradients import GradientTreatment
from easyrec.trainer import used_precision


def one_weight(value: float = 1.0) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    weight = torch.nn.Parameter(torch.tensor([value]))
    return weight, torch.optim.SGD([weight], lr=1.0)


def test_off_it_is_the_plain_backward_and_step():
    weight, optimizer = one_weight()
    scale = LossScale(enabled=False)
    scale.backward(3.0 * weight.sum())
    assert weight.grad.item() == 3.0 and scale.unscaled(optimizer)
    scale.step(optimizer)
    assert weight.item() == -2.0 and scale.log_values() == {}


def test_gradients_are_unscaled_before_clipping_sees_them():
    weight, optimizer = one_weight()
    scale = LossScale(enabled=True, device="cpu", init_scale=4.0)
    scale.backward(3.0 * weight.sum())
    assert weight.grad.item() == 12.0  # 3 x the scale 4
    assert scale.unscaled(optimizer)
    assert weight.grad.item() == 3.0
    clipping = GradientTreatment(clip_norm=1.5)
    clipping.prepare(torch.nn.ParameterList([weight]))
    assert clipping.apply(1).norm == 3.0  # the true norm, clipped to 1.5
    scale.step(optimizer)
    assert weight.item() == -0.5
    assert scale.log_values() == {"train/loss_scale": 4.0, "train/overflow_steps": 0.0}


def test_an_overflow_skips_the_step_and_halves_the_scale_and_a_resume_keeps_both():
    weight, optimizer = one_weight()
    scale = LossScale(enabled=True, device="cpu", init_scale=4.0)
    scale.backward(weight.sum() * float("inf"))
    assert not scale.unscaled(optimizer)
    scale.skip()
    assert weight.item() == 1.0
    assert scale.log_values() == {"train/loss_scale": 2.0, "train/overflow_steps": 1.0}
    restored = LossScale(enabled=True, device="cpu")
    restored.load_state_dict(scale.state_dict())
    assert restored.log_values() == scale.log_values()


def test_fp16_on_the_cpu_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^trainer.precision=fp16: needs a CUDA GPU, and the device is cpu .*fp32$"):
        used_precision("fp16", torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 trains on a CUDA GPU only")
def test_fp16_trains_on_a_gpu_with_a_scale_that_is_checkpointed(tmp_path):
    from easyrec.checkpoints import load_checkpoint
    from easyrec.data import SyntheticCTRData
    from easyrec.losses import BinaryCrossEntropy
    from easyrec.models import DeepFM
    from easyrec.trainer import Trainer
    from tests.conftest import CRITEO_FEATURES

    data = SyntheticCTRData(CRITEO_FEATURES, num_rows=15_000, batch_size=512, seed=3)
    data.setup()
    torch.manual_seed(0)
    model = DeepFM(data.input_spec, embedding_dim=4, hidden_units=[32])
    trainer = Trainer(
        model,
        data,
        torch.optim.Adam(model.parameters(), lr=3e-3),
        BinaryCrossEntropy(),
        tmp_path,
        gradients=GradientTreatment(clip_norm=1.0),
        precision="fp16",
        device="cuda",
        progress_bar=False,
        log_every_n_steps=5,
    )
    trainer.gradients.prepare(model)
    metrics = trainer.fit()
    assert trainer.precision == "fp16" and metrics["eval/auc"] > 0.6
    state = load_checkpoint(tmp_path)
    assert state["loss_scale"]["scaler"]["scale"] == trainer.loss_scale.scaler.get_scale()
