"""Adaptive micro-batching inside one worker's event loop.

Requests for the same model are queued; a flush runs on the next turn of the
event loop (or after ``max_wait``) and evaluates every queued row in one
vectorized call. With one request in flight the cost is one loop turn, not a
timer: the batch is whatever arrived while the previous call was running, so
batches grow with load and latency stays flat when idle (MLServer's adaptive
batching always waits for its timeout).

Predict runs inline on the loop: for models that take well under a millisecond
per batch a thread hop costs more than it saves, and the GIL serialises them
anyway; scale out with workers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

PredictFn = Callable[[NDArray[np.float64]], NDArray[np.float64]]
ObserveFn = Callable[[int, float], None]


class MicroBatcher:
    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.0,
        observe: ObserveFn | None = None,
    ) -> None:
        self._predict = predict
        self._max_rows = max_batch_size
        self._max_wait = max_wait_s
        self._observe = observe
        self._queue: deque[tuple[NDArray[np.float64], asyncio.Future[NDArray[np.float64]]]] = deque()
        self._queued_rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None

    async def submit(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[NDArray[np.float64]] = loop.create_future()
        self._queue.append((x, fut))
        self._queued_rows += len(x)
        if self._scheduled is None:
            if self._max_wait > 0 and self._queued_rows < self._max_rows:
                self._scheduled = loop.call_later(self._max_wait, self._flush)
            else:
                self._scheduled = loop.call_soon(self._flush)
        elif self._queued_rows >= self._max_rows and isinstance(self._scheduled, asyncio.TimerHandle):
            # A full batch does not wait for the timer.
            self._scheduled.cancel()
            self._scheduled = loop.call_soon(self._flush)
        return await fut

    def _take(self) -> list[tuple[NDArray[np.float64], asyncio.Future[NDArray[np.float64]]]]:
        taken: list[tuple[NDArray[np.float64], asyncio.Future[NDArray[np.float64]]]] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0][0]) <= self._max_rows):
            item = self._queue.popleft()
            rows += len(item[0])
            taken.append(item)
        self._queued_rows -= rows
        return taken

    def _flush(self) -> None:
        self._scheduled = None
        taken = [(x, f) for x, f in self._take() if not f.cancelled()]
        if self._queue:  # more than one batch queued: keep going next turn
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)
        if not taken:
            return
        if not self._answer(taken) and len(taken) > 1:
            # One request's rows failed the batch: each request again on its own, so that only the one that
            # fails gets the error and its neighbours their answers (issue 23).
            for item in taken:
                self._answer([item])

    def _answer(self, taken: list[tuple[NDArray[np.float64], asyncio.Future[NDArray[np.float64]]]]) -> bool:
        """Predict the requests' rows as one batch and route each its slice; False when the batch raised
        (a lone request then gets the error)."""
        xs = [x for x, _ in taken]
        start = time.perf_counter()
        try:
            out = self._predict(xs[0] if len(xs) == 1 else np.concatenate(xs))
        except Exception as exc:
            if len(taken) == 1 and not taken[0][1].done():
                taken[0][1].set_exception(exc)
            return False
        if self._observe is not None:
            self._observe(sum(len(x) for x in xs), time.perf_counter() - start)
        pos = 0
        for x, fut in taken:
            if not fut.done():
                fut.set_result(out[pos : pos + len(x)])
            pos += len(x)
        return True
