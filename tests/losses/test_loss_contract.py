"""The Loss base class (easyrec/losses/base.py) is what the run and the trainer know of a loss: its defaults, a loss
of the user's own that does not subclass it, and no probing of losses or models anywhere else."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

import easyrec
import easyrec.losses
from easyrec.losses import BinaryCrossEntropy, Loss, MultiTaskLoss, OrderCalibrateLoss
from easyrec.losses.heads import LabelRule

PACKAGE = Path(easyrec.__file__).parent


def test_every_loss_easyrec_ships_is_a_loss():
    shipped = [cls for _, cls in inspect.getmembers(easyrec.losses, inspect.isclass) if cls is not Loss]
    # the order calibration is a part of MultiTaskLoss (probabilities against bounds), not a loss of labels
    assert [cls for cls in shipped if not issubclass(cls, Loss)] == [OrderCalibrateLoss]


def test_the_defaults_are_those_of_a_binary_loss():
    loss = BinaryCrossEntropy()
    assert (loss.task, loss.num_outputs, loss.task_outputs, loss.takes_sessions) == ("binary", 1, (1,), False)
    assert not loss.requires_sessions and not loss.multi_task and loss.log_values() == {}
    [head] = loss.heads(["click", "buy"])
    assert (head.name, head.task, head.label, head.columns) == ("", "binary", "click", None)
    torch.testing.assert_close(head.scores(torch.zeros(2)), torch.full((2,), 0.5))
    assert loss.label_rules(["click"]) == [LabelRule("click", "loss BinaryCrossEntropy", (0.0, 1.0))]
    assert loss.describe_outputs() == "its logits"


class RegressionOfMyOwn(nn.Module):
    """A user's loss that predates the base class: an nn.Module that declares what it is, with sessions."""

    task = "regression"
    label_range = (0.0, 10.0)

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, outputs, labels, weights=None, sessions=None):
        return ((outputs * self.scale - labels) ** 2).mean() + (0 if sessions is None else sessions.sum() * 0)


def test_a_loss_that_does_not_subclass_loss_is_wrapped_once_with_what_it_declares():
    mine = RegressionOfMyOwn()
    loss = Loss.of(mine)
    assert Loss.of(loss) is loss and Loss.of(BinaryCrossEntropy()).__class__ is BinaryCrossEntropy
    assert (loss.task, loss.takes_sessions, loss.num_outputs, loss.class_name) == (
        "regression",
        True,
        1,
        "RegressionOfMyOwn",
    )
    assert loss.label_rules(["ltv"]) == [LabelRule("ltv", "loss RegressionOfMyOwn", None, (0.0, 10.0))]
    assert [p is mine.scale for p in loss.parameters()] == [True]  # trained with the model, saved with the run
    outputs, labels = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])
    torch.testing.assert_close(loss(outputs, labels, None, sessions=torch.tensor([0, 1])), torch.tensor(2.0))
    torch.testing.assert_close(loss.heads(["ltv"])[0].scores(outputs), outputs)  # a regression's identity


def test_a_plain_function_is_a_loss_with_the_defaults():
    def halved_bce(logits, labels, weights):
        return BinaryCrossEntropy()(logits, labels, weights) / 2

    loss = Loss.of(halved_bce)
    assert (loss.task, loss.takes_sessions, list(loss.state_dict())) == ("binary", False, [])
    logits, labels = torch.randn(8), torch.randint(0, 2, (8,)).float()
    torch.testing.assert_close(loss(logits, labels), BinaryCrossEntropy()(logits, labels) / 2)


def test_multi_task_loss_wraps_a_task_loss_of_the_users_own():
    loss = MultiTaskLoss({"ctr": {"loss": BinaryCrossEntropy()}, "ltv": {"loss": RegressionOfMyOwn()}}, ["y"])
    assert [head.task for head in loss.heads()] == ["binary", "regression"] and loss.task_outputs == (1, 1)


def probes(path: Path, words: tuple[str, ...]) -> list[str]:
    """The ``getattr`` / ``hasattr`` calls and ``inspect.signature`` uses in ``path`` whose object's source names
    one of ``words``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = ast.unparse(node.func)
        subject = ast.unparse(node.args[0]).lower()
        if name in ("getattr", "hasattr", "inspect.signature") and any(word in subject for word in words):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    "contract,words", [("losses/base.py", ("loss", "term")), ("models/base.py", ("model", "factory"))]
)
def test_only_the_contract_probes_losses_and_models(contract, words):
    others = [path for path in PACKAGE.rglob("*.py") if path != PACKAGE / contract]
    assert [probe for path in others for probe in probes(path, words)] == []


def test_the_run_and_the_trainer_probe_nothing():
    for module in ("run.py", "recipe.py", "trainer.py", "saved_run.py"):
        assert probes(PACKAGE / module, ("loss", "model", "factory", "self")) == []
