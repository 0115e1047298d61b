"""trainer.init: the optimizer slots carried over by name (grown tables' new rows at the optimizer's start), the
restore filters and name map, and vocabularies that grow by the new ids."""

from __future__ import annotations

import functools
import logging
import re

import pyarrow as pa
import pytest
import torch
from torch import nn

from easyrec.config import validate
from easyrec.config.schema import InitOptions
from easyrec.data.features import CategoricalFeatures, grow_vocabulary
from easyrec.errors import ConfigError, DataError
from easyrec.optim import GroupedOptimizer
from easyrec.optim.build import build_optimizer
from easyrec.optim.ftrl import Ftrl
from easyrec.optim.lazy_adam import LazyAdam
from easyrec.optim.rmsprop import TFRMSProp
from easyrec.optim.row_wise_adagrad import RowWiseAdagrad
from easyrec.resume import fine_tune, init_optimizer, renamed, restore_optimizer

OLD_ROWS, NEW_ROWS = [3, 4], [5, 4]  # rows per field of the fused table: field 0 grew by two ids


class Tiny(nn.Module):
    """A fused table of two fields ``(sum(rows), 2)`` and a dense layer."""

    def __init__(self, rows: list[int]) -> None:
        super().__init__()
        self.table = nn.Embedding(sum(rows), 2)
        self.mlp = nn.Linear(2, 1)

    def forward(self) -> torch.Tensor:
        return self.mlp(self.table(torch.arange(self.table.num_embeddings))).square().sum()


SPARSE_DENSE = functools.partial(
    GroupedOptimizer,
    groups={
        "embeddings": {
            "params": "embeddings",
            "sparse_gradients": True,
            "optimizer": functools.partial(torch.optim.Adagrad, lr=0.1, initial_accumulator_value=1.0),
        },
        "dense": {"params": "rest", "optimizer": functools.partial(torch.optim.Adam, lr=0.01)},
    },
)
OPTIMIZERS = {
    "adagrad": functools.partial(torch.optim.Adagrad, lr=0.1, initial_accumulator_value=0.1),
    "adam": functools.partial(torch.optim.Adam, lr=0.01),
    "row_wise_adagrad": functools.partial(RowWiseAdagrad, lr=0.1, initial_accumulator_value=0.5),
    "lazy_adam": functools.partial(LazyAdam, lr=0.01),
    "ftrl": functools.partial(Ftrl, lr=0.1),
    "rmsprop": functools.partial(TFRMSProp, lr=0.01),
    "sparse_dense": SPARSE_DENSE,
}


def trained_checkpoint(factory, steps: int = 3) -> dict:
    """A day-1 checkpoint of Tiny(OLD_ROWS) after ``steps`` steps of ``factory``'s optimizer."""
    torch.manual_seed(0)
    model = Tiny(OLD_ROWS)
    optimizer = build_optimizer(factory, model)
    for _ in range(steps):
        optimizer.zero_grad()
        model().backward()
        optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "input_spec": {"cardinalities": OLD_ROWS},
        "path": "day1.pt",
    }


def slots_by_name(optimizer) -> dict[str, dict[str, torch.Tensor]]:
    inner = optimizer.optimizers.values() if hasattr(optimizer, "optimizers") else [optimizer]
    return {
        name: dict(part.state.get(param, {}))
        for part in inner
        for group in part.param_groups
        for name, param in zip(group["param_names"], group["params"], strict=True)
    }


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_slots_carry_over_by_name_and_grown_rows_take_the_optimizers_start(name):
    factory = OPTIMIZERS[name]
    day1 = trained_checkpoint(factory)
    before = slots_by_name(build_optimizer(factory, Tiny(OLD_ROWS)))  # to find the names of the saved slots
    model = Tiny(NEW_ROWS)
    tuned = fine_tune(model, day1, NEW_ROWS)
    start = slots_by_name(build_optimizer(factory, Tiny(NEW_ROWS)))  # the optimizer's state as built
    optimizer = build_optimizer(factory, model)
    assert restore_optimizer(optimizer, day1, model, tuned["sources"], (OLD_ROWS, NEW_ROWS)) == list(
        slots_by_name(optimizer)
    )
    saved = {}
    groups = [day1["optimizer"]] if "state" in day1["optimizer"] else list(day1["optimizer"].values())
    for part in groups:
        for group in part["param_groups"]:
            saved.update({n: part["state"][i] for i, n in zip(group["params"], group["param_names"], strict=True)})
    assert set(saved) == set(before) == {"table.weight", "mlp.weight", "mlp.bias"}
    restored = slots_by_name(optimizer)
    for key, value in saved["table.weight"].items():
        now = restored["table.weight"][key]
        if value.dim() == 0:  # Adam's step, Adagrad's
            assert torch.equal(now, value)
            continue
        assert torch.equal(now[:3], value[:3])  # field 0's old ids
        fresh = start["table.weight"].get(key, torch.zeros_like(now))[3:5]
        assert torch.equal(now[3:5], fresh)  # its two new ids: the optimizer's start (Adagrad's accumulator)
        assert torch.equal(now[5:], value[3:])  # field 1, shifted by field 0's growth
    for param in ("mlp.weight", "mlp.bias"):
        assert restored[param].keys() == saved[param].keys()
        for key, value in saved[param].items():
            assert torch.equal(restored[param][key], value)


def test_grown_adagrad_rows_start_at_its_initial_accumulator_by_hand():
    day1 = trained_checkpoint(OPTIMIZERS["adagrad"], steps=1)
    torch.manual_seed(0)
    first = Tiny(OLD_ROWS)
    first().backward()
    expected = 0.1 + first.table.weight.grad.square()  # Adagrad's s = s0 + g² after one step, s0 = 0.1
    model = Tiny(NEW_ROWS)
    optimizer = build_optimizer(OPTIMIZERS["adagrad"], model)
    restore_optimizer(optimizer, day1, model, fine_tune(model, day1, NEW_ROWS)["sources"], (OLD_ROWS, NEW_ROWS))
    accumulator = optimizer.state[model.table.weight]["sum"]
    torch.testing.assert_close(accumulator[[0, 1, 2, 5, 6, 7, 8]], expected, rtol=1e-6, atol=0)
    assert torch.equal(accumulator[3:5], torch.full((2, 2), 0.1))  # field 0's two new ids: s0


def test_slots_of_another_optimizer_or_a_weights_only_checkpoint_start_fresh(caplog):
    day1 = trained_checkpoint(OPTIMIZERS["adam"])
    model = Tiny(OLD_ROWS)
    sources = fine_tune(model, day1, OLD_ROWS)["sources"]
    adagrad = build_optimizer(OPTIMIZERS["adagrad"], model)
    assert restore_optimizer(adagrad, day1, model, sources) == []
    assert "table.weight starts with fresh slots: another optimizer trains it now" in caplog.text
    assert restore_optimizer(adagrad, {**day1, "optimizer": None}, model, sources) == []
    assert "day1.pt holds the weights only (best.pt): the optimizer starts fresh" in caplog.text


def test_exclude_and_rename_pick_what_is_loaded_and_restored():
    day1 = trained_checkpoint(OPTIMIZERS["adagrad"])
    day1["model"] = {name.replace("mlp.", "deep."): value for name, value in day1["model"].items()}
    for group in day1["optimizer"]["param_groups"]:
        group["param_names"] = [name.replace("mlp.", "deep.") for name in group["param_names"]]
    options = InitOptions(rename={r"^deep\.": "mlp."}, exclude=["bias$"])
    model = Tiny(OLD_ROWS)
    initial_bias = model.mlp.bias.detach().clone()
    tuned = fine_tune(model, day1, OLD_ROWS, options)
    assert tuned["sources"] == {"table.weight": "table.weight", "mlp.weight": "deep.weight"}
    assert tuned["skipped"]["mlp.bias"] == "excluded by trainer.init.exclude (kept its initial value)"
    assert torch.equal(model.mlp.weight, day1["model"]["deep.weight"])
    assert torch.equal(model.mlp.bias, initial_bias)
    optimizer = build_optimizer(OPTIMIZERS["adagrad"], model)
    assert restore_optimizer(optimizer, day1, model, tuned["sources"]) == ["table.weight", "mlp.weight"]
    assert torch.equal(optimizer.state[model.mlp.bias]["sum"], torch.full((1,), 0.1))


def test_renamed_takes_the_first_pattern_found_and_refuses_two_sources_for_one_name():
    options = InitOptions(rename={"^a": "x", "a": "y"}, exclude=["^z"])
    assert renamed(["ab", "ba", "zz"], options) == ({"xb": "ab", "by": "ba"}, ["zz"])
    with pytest.raises(ConfigError, match=r"trainer.init.rename: a and b both become c"):
        renamed(["a", "b"], InitOptions(rename={"^[ab]$": "c"}))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.init.exclude=['(']", "trainer.init.exclude: '(' is not a regular expression"),
        ("trainer.init.checkpoint=newest", "trainer.init.checkpoint=newest: must be one of"),
        (
            "+trainer.init.optimizers=false",
            "trainer.init.optimizers: not an option of easyrec.config.schema.InitOptions; its options are: optimizer, ",
        ),
    ],
)
def test_a_bad_init_option_is_one_line_naming_its_key(compose_train, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_train(override))


def group(max_vocab_size: int | None = None, min_count: int = 2) -> CategoricalFeatures:
    return CategoricalFeatures(["c"], min_count=min_count, max_vocab_size=max_vocab_size)


COUNTS = pa.table({"value": pa.array([3, 7, 9, 1], pa.int32()), "count": pa.array([4, 2, 5, 1], pa.int64())})


@pytest.mark.parametrize(
    ("bound", "expected"),
    [
        (None, [5, 3, 9, 7]),  # 9 (5 times) before 7 (2 times); 1 (once) is under min_count; 3 is kept where it was
        (3, [5, 3, 9]),
        (2, [5, 3]),
        (1, [5, 3]),  # a vocabulary beyond its bound keeps its ids
    ],
)
def test_a_kept_vocabulary_grows_by_the_new_ids_most_frequent_first_up_to_max_vocab_size(bound, expected):
    kept = pa.array([5, 3], pa.int64())  # id 5 is absent today: it keeps its row
    assert grow_vocabulary(kept, COUNTS, group(bound)).to_pylist() == expected


def test_an_empty_kept_vocabulary_is_fitted_and_another_id_type_is_refused():
    assert grow_vocabulary(pa.array([], pa.null()), COUNTS, group()).to_pylist() == [9, 3, 7]
    words = pa.table({"value": pa.array(["a"]), "count": pa.array([3], pa.int64())})
    with pytest.raises(DataError, match="column 'c' holds string ids, the vocabulary kept from trainer.init_from"):
        grow_vocabulary(pa.array([5, 3]), words, group(), "c")


def test_missing_ok_without_a_checkpoint_warns(tmp_path, caplog):
    from easyrec.resume import init_state

    caplog.set_level(logging.WARNING)
    assert init_state(tmp_path / "yesterday", InitOptions(missing_ok=True)) is None
    assert "starting from scratch (trainer.init.missing_ok=true)" in caplog.text
    assert init_state(None, InitOptions()) is None


def test_sharded_tables_on_either_side_restore_the_weights_only_with_a_warning(caplog):
    day1 = trained_checkpoint(OPTIMIZERS["adagrad"])
    model = Tiny(OLD_ROWS)
    sources = fine_tune(model, day1, OLD_ROWS)["sources"]
    optimizer = build_optimizer(OPTIMIZERS["adagrad"], model)
    assert init_optimizer(optimizer, day1, model, sources, OLD_ROWS, sharded=True) == []
    assert init_optimizer(optimizer, {**day1, "sharded": {}}, model, sources, OLD_ROWS) == []
    assert caplog.text.count("not restored to or from sharded tables (distributed=model_parallel)") == 2
    assert init_optimizer(optimizer, day1, model, sources, OLD_ROWS) == ["table.weight", "mlp.weight", "mlp.bias"]


def test_a_grown_table_of_fields_and_list_features_keeps_each_blocks_rows():
    """The fused table of DeepFM & co. holds the categorical fields' rows, then those of each list feature with a
    table of its own (InputSpec.table_rows, what a checkpoint keeps); when field 0 and the tags' vocabulary both
    grow, every block's old rows stay those of the same ids. A list feature that shares a field's rows adds none."""
    from easyrec.data.features import InputSpec, ListField
    from easyrec.modules import FieldEmbedding

    def spec(item_rows: int, tag_rows: int) -> InputSpec:
        tags = ListField("tags", "multi_value", 2, "mean", start=0, cardinality=tag_rows)
        history = ListField("history", "sequence", 3, "mean", start=2, cardinality=item_rows, table="item")
        return InputSpec((), ("item", "city"), (item_rows, 4), lists=(tags, history))

    old, new = spec(3, 5), spec(6, 7)
    assert old.table_rows == (3, 4, 5) and new.table_rows == (6, 4, 7)
    torch.manual_seed(0)
    day1 = FieldEmbedding.of_fields(old, 2)
    state = {"model": day1.state_dict(), "input_spec": {"cardinalities": list(old.table_rows)}, "path": "day1.pt"}
    model = FieldEmbedding.of_fields(new, 2)
    start = model.table.weight.detach().clone()
    fine_tune(model, state, list(new.table_rows))
    was, now = day1.table.weight.detach(), model.table.weight.detach()
    assert torch.equal(now[0:3], was[0:3]) and torch.equal(now[3:6], start[3:6])  # item: old ids, new ids as built
    assert torch.equal(now[6:10], was[3:7])  # city, shifted by item's growth
    assert torch.equal(now[10:15], was[7:12]) and torch.equal(now[15:17], start[15:17])  # tags' own rows
