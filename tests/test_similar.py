"""Similar items and users: the cosine of the model's vectors, the query excluded, filters."""

import numpy as np
import pytest

from recgrad.models import GMF, MF, TwoTower


def _cosine_ranking(vectors, query):
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ unit[query]
    scores[query] = -np.inf
    return np.argsort(-scores, kind="stable"), scores


@pytest.mark.parametrize("model", [MF(20, 50, dim=8, rng=0), MF(20, 50, dim=8, normalize=True, rng=1),
                                   TwoTower(20, 50, dim=8, hidden=(8,), rng=2)])
def test_similar_items_rank_by_cosine_without_the_query(model):
    order, scores = _cosine_ranking(model.item_factors().astype(np.float64), 7)
    ids, values = model.similar_items(7, N=10)
    np.testing.assert_array_equal(ids, order[:10])
    np.testing.assert_allclose(values, scores[order[:10]], rtol=1e-5, atol=1e-6)
    assert 7 not in model.similar_items(7, N=49)[0]


def test_a_batch_of_queries_equals_single_queries_and_filters_apply():
    model = MF(30, 60, dim=8, rng=3)
    ids, _ = model.similar_items(np.array([4, 9]), N=5)
    assert ids.shape == (2, 5)
    np.testing.assert_array_equal(ids[1], model.similar_items(9, N=5)[0])
    nearest = model.similar_items(4, N=3)[0]
    filtered, _ = model.similar_items(4, N=5, filter_items=nearest[:2])
    assert not np.isin(filtered, nearest[:2]).any() and filtered[0] == nearest[2]
    candidates = np.array([50, 1, 33, 4, 12])
    restricted, _ = model.similar_items(4, N=5, items=candidates)
    assert set(restricted[restricted >= 0]) == {50, 1, 33, 12} and restricted[-1] == -1  # the query is no answer


def test_similar_users_use_the_user_vectors():
    model = MF(30, 60, dim=8, rng=4)
    order, _ = _cosine_ranking(model.user_factors().astype(np.float64), 11)
    np.testing.assert_array_equal(model.similar_users(11, N=8)[0], order[:8])
    assert 3 not in model.similar_users(11, N=8, filter_users=[3])[0]


def test_bad_queries_raise_naming_the_argument():
    model = MF(5, 8, dim=4, rng=0)
    with pytest.raises(IndexError, match="itemid"):
        model.similar_items(8)
    with pytest.raises(ValueError, match="items"):
        model.similar_items(0, items=[1, 1])
    assert not hasattr(GMF(5, 8, dim=4, rng=0), "similar_items")  # no vector space to compare in
