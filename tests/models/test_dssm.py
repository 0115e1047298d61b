"""FeatureVector (a tower's inputs) and the DSSM two-tower model: shapes, feature separation, errors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from easyrec.data.features import InputSpec
from easyrec.models.dssm import DSSM
from easyrec.modules.feature_vector import FeatureVector

pytestmark = pytest.mark.usefixtures("one_thread")  # small models: as fast, and not starved beside other jobs

INPUTS = InputSpec(("age", "income"), ("user", "city", "item", "brand"), (6, 3, 7, 4))
USER, ITEM = ["age", "user", "city"], ["income", "item", "brand"]
KNOWN = "age, income, user, city, item, brand"


def batch(size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``dense (size, 2)``, ``sparse (size, 4) int32`` within INPUTS' cardinalities."""
    generator = torch.Generator().manual_seed(seed)
    sparse = torch.stack([torch.randint(0, c, (size,), generator=generator) for c in INPUTS.cardinalities], dim=1)
    return torch.randn(size, 2, generator=generator), sparse.to(torch.int32)


def model(**kwargs) -> DSSM:
    torch.manual_seed(0)
    arguments = {"user_features": USER, "item_features": ITEM, "embedding_dim": 4, "hidden_units": [8]}
    return DSSM(INPUTS, **(arguments | kwargs))


# ---------------------------------------------------------------------- FeatureVector


def test_feature_vector_of_all_features_is_embeddings_then_dense():
    torch.manual_seed(0)
    vector = FeatureVector(INPUTS, embedding_dim=3)
    dense, sparse = batch()
    out = vector(dense, sparse)
    assert vector.out_features == 4 * 3 + 2
    assert out.shape == (8, 14)
    torch.testing.assert_close(out, torch.cat([vector.embedding(sparse).flatten(1), dense], dim=1))


def test_feature_vector_of_a_subset_reads_only_its_columns():
    torch.manual_seed(0)
    vector = FeatureVector(INPUTS, embedding_dim=3, features=["brand", "income", "city"])
    assert vector.embedding.table.weight.shape == (4 + 3, 3)  # its own table: brand's and city's rows
    dense, sparse = batch()
    out = vector(dense, sparse)
    assert out.shape == (8, 2 * 3 + 1)
    torch.testing.assert_close(out, torch.cat([vector.embedding(sparse[:, [3, 1]]).flatten(1), dense[:, [1]]], 1))


def test_feature_vector_of_dense_features_only():
    vector = FeatureVector(INPUTS, embedding_dim=3, features=["income"])
    assert vector.embedding is None
    dense, sparse = batch()
    torch.testing.assert_close(vector(dense, sparse), dense[:, [1]])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"features": ["age", "zip"]}, f"unknown feature 'zip'; the features are: {KNOWN}"),
        ({"features": ["item", "item"]}, "feature 'item' is named twice"),
        ({"features": []}, "no features: needs at least one dense, categorical or list feature"),
        ({"embedding_dim": 0}, "embedding_dim=0: must be > 0"),
    ],
)
def test_feature_vector_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FeatureVector(INPUTS, **({"embedding_dim": 3} | kwargs))


# ---------------------------------------------------------------------- DSSM


def test_dssm_returns_normalised_user_and_item_embeddings():
    net = model(output_dim=5)
    dense, sparse = batch()
    out = net(dense, sparse)
    assert out.shape == (8, 2, 5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(8, 2))
    torch.testing.assert_close(out[:, 0], net.user_embeddings(dense, sparse))
    torch.testing.assert_close(out[:, 1], net.item_embeddings(dense, sparse))
    assert DSSM.output_kind == net.output_kind == "pair_embeddings"


def test_dssm_without_normalisation_returns_the_tower_outputs():
    net = model(output_dim=5, normalize=False)
    dense, sparse = batch()
    out = net(dense, sparse)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(8, 2))
    torch.testing.assert_close(out[:, 0], net.user_tower(net.user_features(dense, sparse)))
    torch.testing.assert_close(F.normalize(out, dim=-1), model(output_dim=5)(dense, sparse))


@pytest.mark.parametrize("normalize", [True, False])
def test_each_tower_sees_only_its_own_features(normalize):
    net = model(normalize=normalize)
    dense, sparse = batch()
    before = net(dense, sparse)
    # change every item feature (income, item, brand): the user embedding stays, the item embedding moves
    item_changed_dense, item_changed_sparse = dense.clone(), sparse.clone()
    item_changed_dense[:, 1] += 1.0
    item_changed_sparse[:, 2:] = (item_changed_sparse[:, 2:] + 1) % torch.tensor([7, 4], dtype=torch.int32)
    after = net(item_changed_dense, item_changed_sparse)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    assert not torch.allclose(after[:, 1], before[:, 1])
    # and the other way round
    user_changed_dense, user_changed_sparse = dense.clone(), sparse.clone()
    user_changed_dense[:, 0] += 1.0
    user_changed_sparse[:, :2] = (user_changed_sparse[:, :2] + 1) % torch.tensor([6, 3], dtype=torch.int32)
    after = net(user_changed_dense, user_changed_sparse)
    torch.testing.assert_close(after[:, 1], before[:, 1], rtol=0, atol=0)
    assert not torch.allclose(after[:, 0], before[:, 0])


def test_dssm_sparse_embeddings():
    net = model(sparse_embeddings=True)
    net(*batch()).sum().backward()
    assert net.user_features.embedding.table.weight.grad.is_sparse
    assert net.item_features.embedding.table.weight.grad.is_sparse


def test_dssm_conf_split_fits_the_criteo_layout():
    criteo = InputSpec(tuple(f"I{i}" for i in range(1, 14)), tuple(f"C{i}" for i in range(1, 27)), tuple([10] * 26))
    user = [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 14)]
    item = [f"C{i}" for i in range(14, 27)]
    net = DSSM(criteo, user, item, embedding_dim=2, hidden_units=[4], output_dim=3)
    assert net.user_features.out_features == 13 * 2 + 13
    assert net.item_features.out_features == 13 * 2
    assert net(torch.randn(2, 13), torch.zeros(2, 26, dtype=torch.int32)).shape == (2, 2, 3)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"user_features": ["age", "zipcode"]}, f"user_features: unknown feature 'zipcode'; the features are: {KNOWN}"),
        ({"item_features": ["item", "colour"]}, f"item_features: unknown feature 'colour'; the features are: {KNOWN}"),
        ({"item_features": ["item", "city"]}, "item_features: 'city' is also in user_features"),
        ({"user_features": []}, "user_features=[]: must not be empty"),
        ({"item_features": []}, "item_features=[]: must not be empty"),
        ({"user_features": ["age", "age"]}, "user_features: feature 'age' is named twice"),
        ({"hidden_units": [8, 0]}, "hidden_units=[8, 0]: every element must be > 0"),
        ({"output_dim": 0}, "output_dim=0: must be > 0"),
        ({"dropout": 1.5}, "dropout=1.5: must be in [0, 1)"),
        ({"embedding_dim": 0}, "embedding_dim=0: must be > 0"),
    ],
)
def test_dssm_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        model(**kwargs)
    assert str(error.value) == message
