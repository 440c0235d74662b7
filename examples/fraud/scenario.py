"""The fraud scenario's data: synthetic transactions and the ``user_stats`` pipeline.

Deterministic from a seed. Fraud labels come from a hidden rule over the same
point-in-time features a model can see (user_stats as of the previous day end,
plus the request-time transforms) and 2% label noise, so a model can learn it
only if training data is joined point-in-time correctly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from app.common.epoch import epoch_us
from examples.fraud import transforms
from examples.fraud.repo import user_stats

DAY_US = 86_400_000_000
CREATED_DELAY = timedelta(minutes=10)  # the feature job lands 10 minutes after the day closes


def generate_transactions(n_users: int, days: int, start: datetime, seed: int = 0) -> pa.Table:
    """Transactions of ``n_users`` users over ``days`` days from ``start`` (UTC midnight), unlabeled."""
    if n_users < 1 or days < 1:
        raise ValueError("n_users and days must be >= 1")
    rng = np.random.default_rng(seed)
    rate = rng.gamma(shape=2.0, scale=0.75, size=n_users)  # transactions per day
    base = rng.normal(3.5, 0.7, size=n_users)  # log-amount
    pref = rng.integers(0, transforms.N_CATEGORIES, size=(n_users, 3))
    counts = rng.poisson(rate[:, None], size=(n_users, days))
    total = int(counts.sum())
    user_idx = np.repeat(np.repeat(np.arange(n_users), days), counts.reshape(-1))
    day_idx = np.repeat(np.tile(np.arange(days), n_users), counts.reshape(-1))
    amount = np.round(np.exp(base[user_idx] + rng.normal(0, 0.6, total)), 2)
    burst = rng.random(total) < 0.03  # occasional unusual purchases
    amount[burst] *= rng.uniform(3, 12, burst.sum())
    category = np.where(
        rng.random(total) < 0.8,
        pref[user_idx, rng.integers(0, 3, total)],
        rng.integers(0, transforms.N_CATEGORIES, total),
    )
    offset = rng.integers(0, DAY_US, total)
    ts = epoch_us(start) + day_idx.astype(np.int64) * DAY_US + offset
    order = np.argsort(ts, kind="stable")
    return pa.table(
        {
            "transaction_id": pa.array(np.arange(total, dtype=np.int64)),
            "user_id": pa.array(user_idx[order].astype(np.int64) + 1),
            "amount": pa.array(amount[order]),
            "merchant_category": pa.array(category[order].astype(np.int64)),
            "timestamp": pa.array(ts[order], type=pa.timestamp("us", tz="UTC")),
        }
    )


def compute_user_stats(transactions: pa.Table, start: datetime, days: int, n_users: int) -> pa.Table:
    """One row per active user per day: aggregates of the transactions *before* the row's event time.

    The row for day ``d`` has event_timestamp = midnight ending day ``d`` and covers
    transactions of days ``d-29 .. d``; users with no transaction in the last 30 days
    get no row (their online value ages out through the view's TTL).
    """
    uid = transactions.column("user_id").to_numpy() - 1
    ts = transactions.column("timestamp").cast(pa.int64()).to_numpy()
    amount = transactions.column("amount").to_numpy()
    cat = transactions.column("merchant_category").to_numpy()
    day = (ts - epoch_us(start)) // DAY_US
    shape = (n_users, days)
    flat = uid * days + day

    def daily(values: NDArray[np.float64] | None) -> NDArray[Any]:
        out = np.bincount(flat, weights=values, minlength=n_users * days)
        return out.reshape(shape)

    cnt = daily(None)
    tot = daily(amount)
    sq = daily(amount**2)
    mx = np.full(n_users * days, -np.inf)
    np.maximum.at(mx, flat, amount)
    mx = mx.reshape(shape)
    cats = np.zeros(n_users * days, dtype=np.int64)
    np.bitwise_or.at(cats, flat, (1 << cat).astype(np.int64))
    cats = cats.reshape(shape)

    def rolling_sum(a: NDArray[Any], w: int) -> NDArray[Any]:
        c: NDArray[Any] = np.cumsum(np.pad(a, ((0, 0), (1, 0))), axis=1)
        out: NDArray[Any] = c[:, 1:] - c[:, np.maximum(np.arange(days) + 1 - w, 0)]
        return out

    def rolling(a: NDArray[Any], w: int, fn: np.ufunc, fill: float) -> NDArray[Any]:
        padded = np.pad(a, ((0, 0), (w - 1, 0)), constant_values=fill)
        win = np.lib.stride_tricks.sliding_window_view(padded, w, axis=1)
        out: NDArray[Any] = fn.reduce(win, axis=2)
        return out

    c1, c7, c30 = cnt, rolling_sum(cnt, 7), rolling_sum(cnt, 30)
    s7, s30, sq30 = rolling_sum(tot, 7), rolling_sum(tot, 30), rolling_sum(sq, 30)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean7 = np.where(c7 > 0, s7 / np.maximum(c7, 1), np.nan)
        mean30 = np.where(c30 > 0, s30 / np.maximum(c30, 1), np.nan)
        var30 = np.where(c30 > 0, sq30 / np.maximum(c30, 1) - mean30**2, np.nan)
    max30 = rolling(mx, 30, np.maximum, -np.inf)
    max30 = np.where(np.isfinite(max30), max30, np.nan)
    merch = rolling(cats, 30, np.bitwise_or, 0)
    distinct = np.zeros(shape, dtype=np.int64)
    for b in range(transforms.N_CATEGORIES):
        distinct += (merch >> b) & 1
    # account age: first transaction in the data is the account's opening
    first = np.where(cnt > 0, np.arange(days)[None, :], days).min(axis=1)
    age = (np.arange(days)[None, :] + 1 - first[:, None]).astype(np.float64)

    users, ds_ = np.nonzero(c30 > 0)
    event = epoch_us(start) + (ds_.astype(np.int64) + 1) * DAY_US
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(users.astype(np.int64) + 1),
        user_stats.event_timestamp_column: pa.array(event, type=pa.timestamp("us", tz="UTC")),
        user_stats.created_timestamp_column: pa.array(
            event + int(CREATED_DELAY.total_seconds() * 1_000_000), type=pa.timestamp("us", tz="UTC")
        ),
    }
    values = {
        "txn_count_1d": c1,
        "txn_count_7d": c7,
        "txn_count_30d": c30,
        "amount_sum_7d": s7,
        "amount_mean_7d": mean7,
        "amount_mean_30d": mean30,
        "amount_max_30d": max30,
        "amount_std_30d": np.sqrt(np.maximum(var30, 0)),
        "distinct_merchants_30d": distinct,
        "account_age_days": age,
    }
    for f in user_stats.features:
        arr = values[f.name][users, ds_].astype(f.dtype)
        cols[f.name] = pa.array(arr, from_pandas=True)  # NaN -> null for floats
    return pa.table(cols)


def label_transactions(transactions: pa.Table, stats_at_txn: pa.Table, seed: int = 0) -> NDArray[np.int64]:
    """The hidden fraud rule, on point-in-time features joined to each transaction."""
    rng = np.random.default_rng(seed + 1)
    amount = transactions.column("amount").to_numpy()
    cat = transactions.column("merchant_category").to_numpy()

    def col(name: str) -> NDArray[np.float64]:
        return np.asarray(stats_at_txn.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    d = transforms.derive(amount, cat, col("amount_mean_30d"), col("amount_max_30d"))
    c1 = np.nan_to_num(col("txn_count_1d"))
    c7 = np.nan_to_num(col("txn_count_7d"))
    score = (
        1.6 * (d["amount_to_mean_30d"] > 3.0)
        + 1.0 * d["is_risky_category"]
        + 0.8 * (c1 >= 4)
        + 0.6 * (c7 == 0)
        + 0.5 * (d["amount_to_max_30d"] > 1.0)
    )
    fraud = score >= 2.0
    flip = rng.random(len(amount)) < 0.02
    labels: NDArray[np.int64] = (fraud ^ flip).astype(np.int64)
    return labels


def utc_midnight(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)
