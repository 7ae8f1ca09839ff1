"""Negative samplers: empirical distributions against the documented ones, exclusion, determinism, state."""

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.samplers import PopularitySampler, UniformSampler, epoch_batches, epoch_order


def random_csr(n_users=40, n_items=25, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user has a positive
    return sp.csr_matrix(dense.astype(np.float32))


def chi_square(counts, probabilities):
    """Pearson's statistic over the cells with nonzero expected count."""
    expected = counts.sum() * probabilities
    mask = expected > 0
    return float(np.sum((counts[mask] - expected[mask]) ** 2 / expected[mask])), int(mask.sum()) - 1


def assert_fits(counts, probabilities):
    # For d degrees of freedom the statistic has mean d and sd sqrt(2d); 6 sd is far in the tail
    # (a fixed seed makes the test deterministic; the margin is what lets it fail for a wrong q).
    statistic, dof = chi_square(counts, probabilities)
    assert statistic < dof + 6 * np.sqrt(2 * dof), (statistic, dof)
    assert np.all(counts[probabilities == 0] == 0)


def test_uniform_without_exclusion_is_uniform():
    train = random_csr()
    sampler = UniformSampler(train, exclude_positives=False, seed=1)
    items = sampler.sample(np.zeros(20000, dtype=np.int64), 5)
    assert items.shape == (20000, 5) and items.dtype == np.int64
    assert_fits(np.bincount(items.ravel(), minlength=25), np.full(25, 1 / 25))


def test_uniform_with_exclusion_is_uniform_over_non_positives():
    train = random_csr()
    sampler = UniformSampler(train, seed=2)
    for user in (0, 7):
        items = sampler.sample(np.full(20000, user), 3)
        positives = train.indices[train.indptr[user]:train.indptr[user + 1]]
        q = np.ones(25)
        q[positives] = 0
        assert_fits(np.bincount(items.ravel(), minlength=25), q / q.sum())


def test_uniform_fit_check_can_fail():
    # The chi-square check rejects the unexcluded distribution for a user with many positives.
    train = random_csr(density=0.5)
    items = UniformSampler(train, exclude_positives=False, seed=3).sample(np.full(20000, 0), 3)
    positives = train.indices[train.indptr[0]:train.indptr[1]]
    q = np.ones(25)
    q[positives] = 0
    statistic, dof = chi_square(np.bincount(items.ravel(), minlength=25), q / q.sum())
    assert statistic > dof + 6 * np.sqrt(2 * dof)


def test_popularity_distribution_is_count_to_the_alpha():
    train = random_csr(n_users=200, density=0.15)
    counts = np.asarray((train > 0).sum(axis=0)).ravel()
    for alpha in (0.0, 0.75, 1.0):
        sampler = PopularitySampler(train, alpha=alpha, exclude_positives=False, seed=4)
        q = counts.astype(float) ** alpha
        q /= q.sum()
        np.testing.assert_allclose(np.exp(sampler.log_q(np.arange(25))), q, rtol=1e-12)
        items = sampler.sample(np.arange(200).repeat(100), 4)
        assert_fits(np.bincount(items.ravel(), minlength=25), q)


def test_popularity_with_exclusion_is_renormalised_restriction():
    train = random_csr(n_users=200, density=0.3)
    sampler = PopularitySampler(train, alpha=1.0, seed=5)
    user = 3
    items = sampler.sample(np.full(30000, user), 2)
    q = np.exp(sampler.log_q(np.arange(25)))
    q[train.indices[train.indptr[user]:train.indptr[user + 1]]] = 0
    assert_fits(np.bincount(items.ravel(), minlength=25), q / q.sum())


def test_popularity_never_draws_unseen_items():
    dense = np.zeros((6, 8))
    dense[:, :3] = np.eye(6)[:, :3] + 1  # items 3..7 have no training user
    sampler = PopularitySampler(sp.csr_matrix(dense), alpha=0.75, exclude_positives=False, seed=0)
    items = sampler.sample(np.arange(6), 500)
    assert items.max() < 3
    assert np.isneginf(sampler.log_q(np.array([5])))[0]


@pytest.mark.parametrize("sampler_class", [UniformSampler, PopularitySampler])
def test_no_positive_is_drawn_with_exclusion(sampler_class):
    train = random_csr(n_users=300, n_items=50, density=0.4, seed=6)
    users = np.arange(300).repeat(20)
    items = sampler_class(train, seed=7).sample(users, 8)
    drawn = sp.csr_matrix((np.ones(items.size), (users.repeat(8), items.ravel())), shape=train.shape)
    assert drawn.multiply(train).nnz == 0


@pytest.mark.parametrize("sampler_class", [UniformSampler, PopularitySampler])
def test_nearly_full_user_reaches_the_exact_fallback(sampler_class):
    # User 0 liked 199 of 200 items: 3 re-draw rounds leave most entries for the exact fallback,
    # which must still return the one free item.
    dense = np.ones((2, 200))
    dense[0, 123] = 0
    dense[1, 100:] = 0
    dense[1, 123] = 1  # so that item 123 has a count (the popularity sampler can draw it)
    sampler = sampler_class(sp.csr_matrix(dense), seed=0, max_rounds=3)
    items = sampler.sample(np.array([0, 0, 0]), 50)
    assert np.all(items == 123)


@pytest.mark.parametrize("sampler_class", [UniformSampler, PopularitySampler])
def test_user_with_every_item_raises(sampler_class):
    dense = np.ones((3, 4))
    dense[1, 2] = 0
    sampler = sampler_class(sp.csr_matrix(dense), seed=0)
    assert np.all(sampler.sample(np.array([1]), 3) == 2)
    with pytest.raises(ValueError, match=r"user\(s\) \[0, 2\]"):
        sampler.sample(np.array([0, 1, 2]), 1)
    assert sampler_class(sp.csr_matrix(dense), exclude_positives=False, seed=0).sample(np.array([0]), 2).shape == (1, 2)


def test_popularity_user_holding_all_drawable_items_raises():
    dense = np.zeros((3, 5))
    dense[0, :2] = 1  # user 0 has every item that has a count
    dense[1, 1] = 1
    with pytest.raises(ValueError, match="no negative exists"):
        PopularitySampler(sp.csr_matrix(dense), seed=0).sample(np.array([0]), 1)


@pytest.mark.parametrize("sampler_class", [UniformSampler, PopularitySampler])
def test_seeded_determinism_and_state_round_trip(sampler_class):
    train = random_csr()
    users = np.arange(40)
    a = sampler_class(train, seed=11)
    b = sampler_class(train, seed=11)
    np.testing.assert_array_equal(a.sample(users, 4), b.sample(users, 4))
    state = a.state_dict()
    first = a.sample(users, 6)
    c = sampler_class(train, seed=999)
    c.load_state_dict(state)
    np.testing.assert_array_equal(c.sample(users, 6), first)
    assert not np.array_equal(a.sample(users, 6), first)


def test_state_of_another_bit_generator_is_refused():
    sampler = UniformSampler(random_csr(), seed=0)
    state = {"rng": np.random.Generator(np.random.MT19937(0)).bit_generator.state}
    with pytest.raises(ValueError, match="MT19937"):
        sampler.load_state_dict(state)


def test_bad_arguments_name_themselves():
    train = random_csr()
    sampler = UniformSampler(train, seed=0)
    with pytest.raises(ValueError, match="users"):
        sampler.sample(np.array([0, 40]), 1)
    with pytest.raises(ValueError, match="users"):
        sampler.sample(np.array([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match="k"):
        sampler.sample(np.array([0]), 0)
    with pytest.raises(ValueError, match="alpha"):
        PopularitySampler(train, alpha=-1.0)
    with pytest.raises(TypeError, match="train_csr"):
        UniformSampler(np.ones((2, 2)))


def test_unsorted_csr_gives_the_same_membership():
    train = random_csr()
    shuffled = train.copy()
    for user in range(train.shape[0]):  # reverse each row's column order
        lo, hi = shuffled.indptr[user], shuffled.indptr[user + 1]
        shuffled.indices[lo:hi] = shuffled.indices[lo:hi][::-1].copy()
    shuffled.has_sorted_indices = False
    items = UniformSampler(shuffled, seed=0).sample(np.arange(40).repeat(50), 4)
    drawn = sp.csr_matrix((np.ones(items.size), (np.arange(40).repeat(200), items.ravel())), shape=train.shape)
    assert drawn.multiply(train).nnz == 0


def test_epoch_batches_cover_every_interaction_once_in_a_seeded_order():
    train = random_csr()
    batches = list(epoch_batches(train, 16, np.random.default_rng(0)))
    assert all(users.size == 16 for users, _ in batches[:-1]) and 0 < batches[-1][0].size <= 16
    users = np.concatenate([u for u, _ in batches])
    items = np.concatenate([i for _, i in batches])
    seen = sp.csr_matrix((np.ones(users.size), (users, items)), shape=train.shape)
    assert seen.nnz == train.nnz and (seen != (train > 0)).nnz == 0 and seen.max() == 1
    again = list(epoch_batches(train, 16, np.random.default_rng(0)))
    np.testing.assert_array_equal(np.concatenate([u for u, _ in again]), users)
    other = np.concatenate([u for u, _ in epoch_batches(train, 16, np.random.default_rng(1))])
    assert not np.array_equal(other, users)
    resumed = list(epoch_batches(train, 16, np.random.default_rng(0), start_batch=3))
    np.testing.assert_array_equal(resumed[0][1], batches[3][1])
    assert len(resumed) == len(batches) - 3


def test_epoch_order_by_users_draws_a_uniform_user_then_a_uniform_positive():
    """LightGCN's sampler: user frequencies flat over active users, items uniform within a user."""
    train = sp.csr_matrix(np.array([[1, 1, 1, 1, 0, 0],
                                    [0, 0, 0, 0, 0, 0],   # no interactions: never drawn
                                    [0, 0, 0, 0, 1, 0],
                                    [0, 1, 0, 0, 0, 1]], dtype=np.float32))
    repeats = 20000
    users, items = [], []
    rng = np.random.default_rng(0)
    for _ in range(repeats):
        u, i = epoch_order(train, rng, "users")
        users.append(u)
        items.append(i)
    users, items = np.concatenate(users), np.concatenate(items)
    assert users.size == repeats * train.nnz
    assert train[users, items].min() == 1  # every pair is a training positive
    user_share = np.bincount(users, minlength=4) / users.size
    np.testing.assert_allclose(user_share, [1 / 3, 0, 1 / 3, 1 / 3], atol=0.005)
    item_share_of_user0 = np.bincount(items[users == 0], minlength=6)[:4] / np.count_nonzero(users == 0)
    np.testing.assert_allclose(item_share_of_user0, 0.25, atol=0.01)
    again = epoch_order(train, np.random.default_rng(0), "users")
    np.testing.assert_array_equal(again[0], users[:train.nnz])


def test_epoch_order_by_interactions_is_epoch_batches_order_and_bad_values_are_named():
    train = random_csr()
    users, items = epoch_order(train, np.random.default_rng(3))
    batched = list(epoch_batches(train, 7, np.random.default_rng(3)))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batched]), users)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batched]), items)
    with pytest.raises(ValueError, match="epoch_sampling"):
        epoch_order(train, np.random.default_rng(0), "items")
    empty_users, empty_items = epoch_order(sp.csr_matrix((3, 4)), np.random.default_rng(0), "users")
    assert empty_users.size == 0 and empty_items.size == 0
