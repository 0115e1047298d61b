"""Checkpoints: atomic writes, the last K kept plus the best, safe loading, exact resume, best weights, fine-tune."""

from __future__ import annotations

import errno
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from easyrec.checkpoints import (
    FORMAT,
    UNCHECKED_FORMAT,
    Checkpoints,
    checksum,
    find_checkpoint,
    load_checkpoint,
    load_matching,
    write_atomically,
    write_json,
)
from easyrec.data import SyntheticCTRData
from easyrec.errors import CheckpointError, ConfigError, OutputError
from easyrec.losses import BinaryCrossEntropy
from easyrec.models import DeepFM
from easyrec.modules import FieldEmbedding
from easyrec.trainer import Trainer
from tests.conftest import CRITEO_FEATURES

pytestmark = pytest.mark.usefixtures("one_thread")
STEPS_PER_EPOCH = 27  # 13,500 train rows / 512


@pytest.fixture(scope="module")
def data() -> SyntheticCTRData:
    data = SyntheticCTRData(CRITEO_FEATURES, num_rows=15_000, batch_size=512, seed=3)
    data.setup()
    return data


def make_trainer(data, output_dir, **kwargs) -> Trainer:
    torch.manual_seed(0)
    model = DeepFM(data.input_spec, embedding_dim=4, hidden_units=[32], dropout=0.2)  # dropout draws random numbers
    defaults = {
        "progress_bar": False,
        "device": "cpu",
        "max_epochs": 2,
        "eval_every_n_steps": 10,
        "monitor": "eval/auc",
    }
    return Trainer(
        model=model,
        data=data,
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        loss=BinaryCrossEntropy(),
        output_dir=output_dir,
        lr_schedulers=[],
        **{**defaults, **kwargs},
    )


def parameters(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    trainer = make_trainer(data, tmp_path_factory.mktemp("whole"), checkpoint_every_n_steps=10, restore_best=False)
    return trainer, trainer.fit()


def test_checkpoints_every_n_steps_keep_the_last_k_and_the_best(uninterrupted):
    trainer, _ = uninterrupted
    names = sorted(p.name for p in (trainer.output_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "step-000000040.pt", "step-000000050.pt", "step-000000054.pt"]
    best = load_checkpoint(trainer.output_dir / "checkpoints" / "best.pt")
    assert best["best"]["step"] == max(trainer.history, key=lambda s: trainer.history[s]["eval/auc"])


def test_resume_from_a_mid_epoch_checkpoint_equals_the_uninterrupted_run(data, uninterrupted, tmp_path):
    whole, metrics = uninterrupted
    # a first attempt that "dies" after step 33 (mid-epoch 1); its last checkpoint is step 30
    first = make_trainer(data, tmp_path, checkpoint_every_n_steps=10, restore_best=False, max_steps=33)
    first.fit()
    state = load_checkpoint(tmp_path / "checkpoints" / "step-000000030.pt")
    assert (state["step"], state["epoch"], state["rows_in_epoch"]) == (30, 1, 3 * data.batch_size)
    resumed = make_trainer(data, tmp_path / "again", checkpoint_every_n_steps=10, restore_best=False)
    resumed.load_state_dict(state)
    assert resumed.fit() == metrics
    assert resumed.history == whole.history and resumed.step == whole.step == 2 * STEPS_PER_EPOCH
    for a, b in zip(parameters(resumed), parameters(whole), strict=True):
        assert torch.equal(a, b)
    assert state["position"] == {"rows_in_epoch": 3 * data.batch_size}
    assert resumed.rows == whole.rows == 2 * len(data.train)  # train/rows counts the rows before the resume too


def test_a_checkpoint_from_before_streaming_resumes_at_its_row(data, uninterrupted, tmp_path):
    """A checkpoint written before the data's position and the run's rows were kept (``rows_in_epoch`` only)."""
    whole, metrics = uninterrupted
    state = load_checkpoint(whole.output_dir / "checkpoints" / "step-000000040.pt")
    del state["position"], state["rows"]
    resumed = make_trainer(data, tmp_path, checkpoint_every_n_steps=10, restore_best=False)
    resumed.load_state_dict(state)
    assert resumed.position == {"rows_in_epoch": 13 * data.batch_size}
    assert resumed.fit() == metrics
    for a, b in zip(parameters(resumed), parameters(whole), strict=True):
        assert torch.equal(a, b)
    assert resumed.rows == whole.rows


def test_best_weights_are_restored_evaluated_and_returned(data, tmp_path):
    trainer = make_trainer(data, tmp_path, monitor="eval/auc", eval_every_n_steps=5, max_epochs=1)
    # a learning rate far too high late in training makes the last evaluations worse than the best
    with torch.no_grad():
        trainer.optimizer.param_groups[0]["lr"] = 0.05
    metrics = trainer.fit()
    best_step = max(trainer.history, key=lambda s: trainer.history[s]["eval/auc"])
    assert trainer.best["step"] == best_step
    assert metrics == trainer.history[best_step]  # the restored weights reproduce the best evaluation exactly
    assert metrics["eval/auc"] >= trainer.history[max(trainer.history)]["eval/auc"]


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path, keep_last_n=2)
    checkpoints.save({"format": FORMAT, "step": 10}, 10)

    def crash(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", crash)
    target = tmp_path / "step-000000020.pt"
    with pytest.raises(OutputError, match=f"^cannot write {target}: No space left on device$"):
        checkpoints.save({"format": FORMAT, "step": 20}, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000010.pt"]  # no .partial left behind
    assert load_checkpoint(tmp_path)["step"] == 10


def test_a_disk_that_fills_up_inside_torch_save_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """torch.save raises a RuntimeError ("unexpected pos ...") over the OSError of the write that failed."""

    class FillsUp(io.BytesIO):
        def write(self, data: bytes) -> int:
            if self.tell() > 1000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return super().write(data)

    monkeypatch.setattr(Path, "open", lambda self, mode="r": FillsUp())
    target = tmp_path / "step-000000020.pt"
    with pytest.raises(OutputError, match=f"^cannot write {target}: No space left on device$"):
        write_atomically({"format": FORMAT, "table": torch.zeros(10_000)}, target)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_json_write_removes_its_partial_file_and_names_the_path(tmp_path, monkeypatch):
    def full(self, text):
        Path.write_bytes(self, text[:5].encode())
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError, match=f"^cannot write {tmp_path / 'metrics.json'}: No space left on device$"):
        write_json({"eval/auc": 0.5}, tmp_path / "metrics.json")
    assert list(tmp_path.iterdir()) == []


def test_every_checkpoint_carries_a_checksum_that_survives_a_round_trip(tmp_path):
    state = {"format": FORMAT, "step": 3, "model": {"w": torch.arange(6.0).reshape(2, 3).bfloat16()}, "x": (1, None)}
    path = Checkpoints(tmp_path).save(state, 3)
    loaded = torch.load(path, weights_only=True)  # still a plain checkpoint: no pickled code, no wrapper
    assert loaded["checksum"] == checksum(state) == checksum(loaded) and len(loaded["checksum"]) == 64
    assert load_checkpoint(path)["step"] == 3


def damage(path: Path) -> None:
    """Rewrite the checkpoint ``path`` with one number changed but its old checksum (a flipped bit in a tensor)."""
    state = torch.load(path, weights_only=True)
    state["model"]["w"][0] += 1
    torch.save(state, path)


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_readable_one(tmp_path, caplog):
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep_last_n=5)
    for step in (10, 20, 30, 40):
        checkpoints.save({"format": FORMAT, "step": step, "model": {"w": torch.zeros(3)}}, step)
    files = checkpoints.step_files()
    files[-1].write_bytes(files[-1].read_bytes()[:200])  # truncated
    damage(files[-2])  # readable, but its content no longer matches its checksum
    with caplog.at_level("WARNING", logger="easyrec.checkpoints"):
        assert load_checkpoint(tmp_path)["step"] == 20
    warnings = [r.getMessage() for r in caplog.records]
    assert f"skipping a damaged checkpoint: {files[-1]}: not a readable checkpoint" in warnings[0]
    assert (
        warnings[1] == f"skipping a damaged checkpoint: {files[-2]}: damaged (its content does not match its checksum)"
    )
    assert warnings[2] == f"using {files[-3]}, the newest readable checkpoint"


def test_a_damaged_file_named_alone_is_an_error_naming_it(tmp_path):
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    checkpoints.save({"format": FORMAT, "step": 10, "model": {"w": torch.zeros(3)}}, 10)
    best = checkpoints.save_best({"format": FORMAT, "step": 10, "model": {"w": torch.zeros(3)}, "kind": "weights"})
    damage(best)
    for location in (best, tmp_path):  # the file itself, or the run directory's best.pt: no fallback
        with pytest.raises(CheckpointError, match=f"^{best}: damaged"):
            load_checkpoint(location, "best")
    [only] = checkpoints.step_files()
    only.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"^{only}: not a readable checkpoint"):
        load_checkpoint(tmp_path)  # the only step checkpoint: nothing to fall back to


def test_every_step_checkpoint_damaged_is_one_error_naming_them_all(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    for step in (1, 2):
        checkpoints.save({"format": FORMAT, "step": step}, step).write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=f"^{tmp_path}: no readable checkpoint") as info:
        load_checkpoint(tmp_path)
    assert all(str(path) in str(info.value) for path in checkpoints.step_files())


def test_a_checkpoint_of_the_previous_format_without_a_checksum_still_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": UNCHECKED_FORMAT, "step": 7}, path)
    assert load_checkpoint(path)["step"] == 7
    torch.save({"format": FORMAT, "step": 7}, path)  # the current format must carry its checksum
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_missing_corrupt_and_foreign_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file or run directory"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in it"):
        load_checkpoint(tmp_path / "empty")
    corrupt = tmp_path / "checkpoints" / "step-000000005.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=f"{corrupt}: not a readable checkpoint"):
        load_checkpoint(tmp_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an easyrec checkpoint"):
        load_checkpoint(foreign)
    assert find_checkpoint(foreign) == foreign


def test_unsafe_pickles_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_fine_tuning_resizes_each_fields_rows_and_skips_what_does_not_fit():
    torch.manual_seed(0)
    old = FieldEmbedding([3, 5], dim=2)
    new = FieldEmbedding([4, 2], dim=2)  # field 0 grew, field 1 shrank
    state = {"table.weight": old.table.weight.detach().clone(), "extra": torch.zeros(1)}
    report = load_matching(new, state, cardinalities=([3, 5], [4, 2]))
    weight, before = new.table.weight.detach(), old.table.weight.detach()
    assert torch.equal(weight[:3], before[:3])  # field 0's three rows; its new 4th row keeps its initial value
    assert torch.equal(weight[4:6], before[3:5])  # field 1's first two rows
    assert report.resized == ["table.weight (8, 2) -> (6, 2)"] and report.skipped == {"extra": "not in this model"}


def test_loading_another_models_checkpoint_into_the_trainer_fails_clearly(data, uninterrupted, tmp_path):
    whole, _ = uninterrupted
    state = load_checkpoint(whole.output_dir)
    torch.manual_seed(0)
    wider = DeepFM(data.input_spec, embedding_dim=8, hidden_units=[32])
    trainer = Trainer(wider, data, torch.optim.Adam(wider.parameters()), BinaryCrossEntropy(), tmp_path, device="cpu")
    with pytest.raises(RuntimeError, match="size mismatch"):
        trainer.load_state_dict(state)


def test_checkpoints_every_n_seconds(data, tmp_path, monkeypatch):
    clock = iter(range(0, 10_000, 4))  # every call to the clock moves it 4 s on
    monkeypatch.setattr("easyrec.trainer.time.monotonic", lambda: next(clock))
    trainer = make_trainer(data, tmp_path, checkpoint_every_n_seconds=10, keep_last_n=100, max_epochs=1)
    trainer.fit()
    steps = [int(p.stem.split("-")[1]) for p in trainer.checkpoints.step_files()]
    # a step reads the clock once (after the check that saved, twice): a save every third step
    assert steps[:3] == [3, 6, 9] and steps[-1] == STEPS_PER_EPOCH


def test_keep_last_n_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_last_n=0: must be >= 1"):
        Checkpoints(tmp_path, keep_last_n=0)


def test_best_pt_holds_the_weights_only_and_is_not_resumable(uninterrupted):
    from easyrec.resume import check_resumable

    trainer, _ = uninterrupted
    best = load_checkpoint(trainer.output_dir / "checkpoints" / "best.pt")
    assert best["kind"] == "weights" and best["optimizer"] is None and best["model"]
    with pytest.raises(CheckpointError, match="holds the best weights only .* trainer.init_from="):
        check_resumable(best, best["config"], best["path"])


def test_a_resume_may_change_the_loader_workers_but_not_the_streaming_mode():
    """A stream deals the pieces not yet wholly trained again among other loader workers; a changed mode would
    read the epoch in another order."""
    from easyrec.resume import check_resumable

    saved = {"seed": 0, "data": {"streaming": True, "num_workers": 1, "batch_size": 64}}
    state = {"config": saved}
    check_resumable(state, {**saved, "data": {**saved["data"], "num_workers": 4}}, "step-9.pt")
    changed = {**saved, "data": {**saved["data"], "num_workers": 4, "streaming": False}}
    with pytest.raises(ConfigError, match=r"in data.streaming \(True -> False\); an exact resume keeps seed,"):
        check_resumable(state, changed, "step-9.pt")


def test_a_resume_may_share_a_step_over_other_workers_but_not_change_its_rows():
    """2 workers x 128 rows resume as 1 worker x 256 or 1 x 128 accumulating 2 (the same rows a step); not 1 x 128."""
    from easyrec.resume import check_resumable

    saved = {"seed": 0, "data": {"batch_size": 128}, "distributed": {"nproc_per_node": 2, "nnodes": 1}}
    state = {"config": saved}
    check_resumable(state, {**saved, "data": {"batch_size": 256}, "distributed": {"accumulate_steps": 1}}, "s.pt")
    check_resumable(state, {**saved, "distributed": {"accumulate_steps": 2}}, "s.pt")
    with pytest.raises(ConfigError, match=r"in data.batch_size \(128 -> 64\)"):
        check_resumable(state, {**saved, "data": {"batch_size": 64}}, "s.pt")


def test_a_checkpoint_written_before_a_data_option_existed_still_resumes():
    """Options added since (at their defaults) are no change; a removed or changed one still is."""
    from easyrec.resume import check_resumable

    old = {"seed": 0, "data": {"train_path": "train.csv", "batch_size": 64}}
    now = {"seed": 0, "data": {**old["data"], "streaming": "auto", "num_workers": 1, "on_bad_piece": "error"}}
    check_resumable({"config": old}, now, "step-9.pt")
    with pytest.raises(ConfigError, match=r"in data.batch_size \(64 -> None\)"):
        check_resumable({"config": old}, {"seed": 0, "data": {"train_path": "train.csv"}}, "step-9.pt")


def test_a_pickle_that_would_run_code_is_refused_without_running_it_or_advising_to(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self):
            return Path.write_text, (marker, "pwned")

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(evil)
    assert str(refused.value) == (
        f"{evil}: not a readable checkpoint (not a file torch.save wrote, or it holds more than tensors and plain "
        "values, which easyrec never loads)"
    )
    assert "weights_only" not in str(refused.value) and not marker.exists()
