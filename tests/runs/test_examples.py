"""The examples of ``examples/``, used as the README says: a loss of one's own is one Python file and one YAML under
``--config-dir``, with nothing in easyrec to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from easyrec.checkpoints import load_checkpoint
from easyrec.losses import BinaryCrossEntropy
from tests.conftest import QUICK
from tests.runs.test_cli import runs

CUSTOM_LOSS = Path(__file__).parents[2] / "examples" / "custom_loss"


@pytest.fixture
def my_loss(monkeypatch):
    """The example's ``my_loss`` module, importable as ``PYTHONPATH=.`` makes it in the README's command."""
    monkeypatch.syspath_prepend(str(CUSTOM_LOSS))
    import my_loss

    return my_loss


def test_the_example_loss_is_bce_with_heavier_positives(my_loss):
    logits, labels = torch.randn(64), torch.randint(0, 2, (64,)).float()
    weights = torch.rand(64)
    bce = BinaryCrossEntropy()
    torch.testing.assert_close(
        my_loss.PositiveWeightedBCE(pos_weight=1.0)(logits, labels, weights), bce(logits, labels, weights)
    )
    heavier = my_loss.PositiveWeightedBCE(pos_weight=3.0)(logits, labels)
    positives, negatives = bce(logits, labels, labels), bce(logits, labels, 1 - labels)
    torch.testing.assert_close(heavier, (3 * positives * labels.sum() + negatives * (64 - labels.sum())) / 64)
    with pytest.raises(ValueError, match="pos_weight=0: must be > 0"):
        my_loss.PositiveWeightedBCE(pos_weight=0)


@pytest.mark.slow
def test_easyrec_trains_with_the_example_loss_from_config_dir(
    my_loss, easyrec_main, mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # as a user runs it, with the default store tmp_path/mlflow.db
    code, out, err = easyrec_main(
        "train",
        "--config-dir",
        str(CUSTOM_LOSS / "conf"),
        "loss=positive_weighted_bce",
        "loss.pos_weight=3",
        *QUICK,
        "trainer.max_steps=3",
    )
    assert code == 0, err
    [run] = runs(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.params["loss"] == "my_loss.PositiveWeightedBCE" and run.data.params["loss.pos_weight"] == "3"
    assert "eval/auc" in run.data.metrics and run.data.metrics["train/loss"] > 0
    # the trainer trained and saved this very module: its buffer is in the checkpoint
    state = load_checkpoint(Path(run.data.tags["easyrec.output_dir"]), "latest")
    assert list(state["loss"]) == ["pos_weight"] and float(state["loss"]["pos_weight"]) == 3.0


def test_the_readme_shows_the_example_as_it_is():
    readme = (CUSTOM_LOSS.parents[1] / "README.md").read_text()
    for name in ("my_loss.py", "conf/loss/positive_weighted_bce.yaml"):
        shown = (CUSTOM_LOSS / name).read_text().rstrip()
        assert f"\n{shown}\n```" in readme, f"README.md does not show examples/custom_loss/{name} as it is"
