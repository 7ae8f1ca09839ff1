"""Answer concurrent requests for known users together: one scan of the item table for a batch.

Scoring one user reads the whole item table (Gowalla: 41k x 64 float32, 10 MB, about 1.7 ms on one
core, bound by memory), so answering 16 waiting users one by one reads it 16 times; as one matrix
product it is read once. `RecommendBatcher` collects the GET /recommend requests that arrive while a
batch is being scored and scores them as the next batch (dynamic batching, as Ray Serve's
`@serve.batch` or TorchServe's batch_size do, without a waiting timeout: a lone request is answered
at once, a batch forms only when requests queue up). Each answer is the row of the batch's answer,
which equals the single-user answer up to the rounding of the batched product
(`Recommender.recommend`); the requests of one batch are served under the model lock.
"""

import asyncio

__all__ = ["RecommendBatcher"]


class RecommendBatcher:
    """await batcher.recommend(user, n, exclude_seen) -> (ids, scores) of one internal user id.

    served: a `recgrad.serving.run.ServedRun`; lock: the lock every model call takes; max_batch:
    the most users scored in one product.
    """

    def __init__(self, served, lock, max_batch=64):
        self.served, self.lock, self.max_batch = served, lock, max_batch
        self.waiting = []  # (user, n, exclude_seen, future)
        self.draining = False

    async def recommend(self, user, n, exclude_seen):
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((user, n, exclude_seen, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self):
        try:
            while self.waiting:
                await asyncio.sleep(0)  # the requests already read reach their handler and join the batch
                batch, self.waiting = self.waiting[:self.max_batch], self.waiting[self.max_batch:]
                for exclude_seen in (True, False):
                    group = [entry for entry in batch if entry[2] is exclude_seen]
                    if group:
                        self._answer(group, exclude_seen)
        finally:
            self.draining = False

    def _answer(self, group, exclude_seen):
        users = [user for user, _, _, _ in group]
        try:
            with self.lock:
                ids, scores = self.served.recommend(users, max(n for _, n, _, _ in group), exclude_seen=exclude_seen)
        except Exception as error:  # noqa: BLE001 - handed to every request of the batch, which raises it
            for *_, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        for row, (_, n, _, future) in enumerate(group):
            if not future.done():  # a client that went away cancelled its request
                future.set_result((ids[row, :n], scores[row, :n]))
