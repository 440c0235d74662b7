from __future__ import annotations

import asyncio

import numpy as np
import pytest

from app.runtime.batcher import MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(len(x))
        if self.fail:
            raise ValueError("boom")
        return np.column_stack([x[:, 0] * 2, x[:, 0] * 3])


def _rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float64).reshape(n, 1)


async def test_concurrent_requests_are_coalesced_and_routed_back() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=1000)
    sizes = [1, 3, 2, 1, 5]
    starts = np.cumsum([0, *sizes[:-1]]) * 100
    results = await asyncio.gather(*(b.submit(_rows(int(s), n)) for s, n in zip(starts, sizes, strict=True)))
    assert rec.calls == [sum(sizes)]  # one vectorized call
    for s, n, out in zip(starts, sizes, results, strict=True):
        np.testing.assert_array_equal(out[:, 0], _rows(int(s), n)[:, 0] * 2)


async def test_max_batch_size_splits_batches() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=4)
    await asyncio.gather(*(b.submit(_rows(i, 1)) for i in range(10)))
    assert rec.calls == [4, 4, 2]


async def test_oversized_request_is_not_split() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=4)
    out = await b.submit(_rows(0, 9))
    assert rec.calls == [9] and out.shape == (9, 2)


async def test_single_request_is_not_delayed_without_max_wait() -> None:
    b = MicroBatcher(Recorder(), max_batch_size=64)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await b.submit(_rows(0, 1))
    assert loop.time() - t0 < 0.01


async def test_max_wait_gathers_late_arrivals() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=64, max_wait_s=0.05)

    async def late(i: int) -> np.ndarray:
        await asyncio.sleep(0.01 * i)
        return await b.submit(_rows(i, 1))

    await asyncio.gather(*(late(i) for i in range(3)))
    assert rec.calls == [3]


async def test_full_batch_does_not_wait_for_timer() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=2, max_wait_s=5.0)
    await asyncio.wait_for(asyncio.gather(b.submit(_rows(0, 1)), b.submit(_rows(1, 1))), timeout=1)
    assert rec.calls == [2]


async def test_errors_reach_every_caller() -> None:
    b = MicroBatcher(Recorder(fail=True))
    results = await asyncio.gather(b.submit(_rows(0, 1)), b.submit(_rows(1, 1)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)


async def test_cancelled_caller_does_not_break_others() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch_size=64, max_wait_s=0.02)
    t1 = asyncio.ensure_future(b.submit(_rows(0, 1)))
    t2 = asyncio.ensure_future(b.submit(_rows(7, 1)))
    await asyncio.sleep(0)
    t1.cancel()
    out = await t2
    assert out[0, 0] == 14.0
    with pytest.raises(asyncio.CancelledError):
        await t1
    assert rec.calls == [1]


async def test_one_poison_request_fails_alone() -> None:
    """Issue 23: an error on the combined batch is retried request by request; only the poison one fails."""

    def predict(x: np.ndarray) -> np.ndarray:
        if (np.abs(x) > 1e38).any():
            raise ValueError("Input X contains a value too large for dtype('float32')")
        return x * 2

    b = MicroBatcher(predict, max_batch_size=64, max_wait_s=0.01)
    rows = [_rows(i, 1) for i in range(10)]
    rows[4] = np.full((1, rows[0].shape[1]), 1e300)
    results = await asyncio.gather(*(b.submit(r) for r in rows), return_exceptions=True)
    assert isinstance(results[4], ValueError)
    for i, r in enumerate(results):
        if i != 4:
            np.testing.assert_array_equal(r, rows[i] * 2)
