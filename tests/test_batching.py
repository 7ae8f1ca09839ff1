"""The batcher of GET /recommend (recgrad.serving.batching): requests that wait together are scored
as one batch, and each gets the answer it would get alone."""

import asyncio
import threading

import numpy as np
import pytest
import scipy.sparse as sp

from recgrad.models import MF
from recgrad.serving.batching import RecommendBatcher


class Served:
    """The one method of `ServedRun` the batcher calls, over an MF model, recording each call."""

    def __init__(self, model, seen, fail=False):
        self.model, self.seen, self.fail, self.calls = model, seen, fail, []

    def recommend(self, users, n, exclude_seen=True):
        self.calls.append((list(users), n, exclude_seen))
        if self.fail:
            raise ValueError("the model cannot answer")
        users = np.asarray(users)
        return self.model.recommend(users, self.seen[users] if exclude_seen else None, N=n,
                                    filter_already_liked_items=exclude_seen)


@pytest.fixture
def served():
    seen = sp.random(6, 40, density=0.2, random_state=0, format="csr", dtype=np.float32)
    return Served(MF(6, 40, dim=8, rng=0), seen)


def gather(batcher, requests):
    async def all_at_once():
        return await asyncio.gather(*(batcher.recommend(*request) for request in requests),
                                    return_exceptions=True)

    return asyncio.run(all_at_once())


def test_waiting_requests_are_scored_together_and_each_gets_its_own_answer(served):
    requests = [(0, 7, True), (3, 2, False), (1, 5, True), (2, 40, True)]
    answers = gather(RecommendBatcher(served, threading.Lock()), requests)
    assert served.calls == [([0, 1, 2], 40, True), ([3], 2, False)]  # one product per kind of request
    for (user, n, exclude_seen), (ids, scores) in zip(requests, answers):
        alone_ids, alone_scores = served.model.recommend(user, served.seen[[user]] if exclude_seen else None, N=n,
                                                         filter_already_liked_items=exclude_seen)
        assert np.array_equal(ids, alone_ids)
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-6, atol=1e-7)  # a batched product rounds
        assert ids.shape == (n,)


def test_a_lone_request_is_answered_at_once_and_batches_stay_below_the_limit(served):
    batcher = RecommendBatcher(served, threading.Lock(), max_batch=2)
    gather(batcher, [(0, 3, True)])
    gather(batcher, [(user, 3, True) for user in range(5)])
    assert [len(users) for users, _, _ in served.calls] == [1, 2, 2, 1]
    assert not batcher.draining and not batcher.waiting


def test_a_failing_batch_fails_each_of_its_requests(served):
    served.fail = True
    batcher = RecommendBatcher(served, threading.Lock())
    answers = gather(batcher, [(0, 3, True), (1, 3, True)])
    assert all(isinstance(answer, ValueError) for answer in answers)
    assert not batcher.draining
