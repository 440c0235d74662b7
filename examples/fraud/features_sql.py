"""The ``user_stats`` feature job as SQL: on DuckDB (embedded, over Arrow data) and on Spark.

The same rows as :func:`examples.fraud.scenario.compute_user_stats` (NumPy), bit for bit: the SQL
repeats NumPy's arithmetic, not only its definitions, because the float features depend on the order
of additions (windowed sums are differences of cumulative sums: DuckDB's windowed ``sum()`` gave 7-day
sums of -2.8e-14 where NumPy gives 0, and the standard deviation, ``E[x^2] - mean^2``, cancels too):

* a day's amounts (and squares) are summed one after another from 0.0, in input order (``np.bincount``):
  the ordered list folded left, not ``sum()``, whose order depends on the threads;
* windowed sums are differences of per-user cumulative sums over the days (``C(d) - C(d-w)``), the
  cumulative sums again folded in day order: on DuckDB one left fold per user over its days' list
  (its windowed ``sum()`` combines a segment tree: another order), on Spark a running ``sum() OVER``
  (its frame adds row by row);
* ``mean = s / n``, ``var = sq / n - mean * mean``, ``std = sqrt(max(var, 0))`` in float64, cast to
  float32 by NumPy afterwards, as the reference does.

Rows: one per user and day ``d`` with a transaction in days ``d-29 .. d`` of the window (a dense grid
from the user's first day to 29 days after the last, filtered), event time = midnight ending day ``d``,
created = 10 minutes later. Input order is the table's row order for a table in memory, time order for
files (the offline store writes them sorted by time: the same order).

Memory on DuckDB: the per-(user, day) ordered lists are built in a hash aggregate that cannot spill, so
a ``memory_limit`` below the whole job's need (~300 bytes per transaction) ran out of memory. A user's
rows depend on its own transactions only: :func:`plan_user_stats_duckdb` counts the transactions per
range of user ids and cuts the users into chunks of at most half the limit's worth, each one query (its
sorts and windows spill if need be); the job streams the chunks' rows to the offline store, which
commits them at the end as one Delta commit. DuckDB itself needs a few tens of MB whatever the chunk
(16 MB failed on 3,000 transactions a chunk; 64 MB is the test's limit).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from app.common.epoch import epoch_us
from app.features.pit_duckdb import DuckDBConfig, run_sql
from examples.fraud import transforms
from examples.fraud.repo import user_stats
from examples.fraud.scenario import CREATED_DELAY, DAY_US

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

COLUMNS = ("user_id", "amount", "merchant_category", "timestamp")
_INT = ("txn_count_1d", "txn_count_7d", "txn_count_30d", "distinct_merchants_30d")
_FLOAT = ("amount_sum_7d", "amount_mean_7d", "amount_mean_30d", "amount_max_30d", "amount_std_30d", "account_age_days")


class FeatureJobInputError(ValueError):
    """The transactions cannot be aggregated as asked (a bad id, category or null)."""


def _check_args(start: datetime, days: int, n_users: int) -> None:
    if start.tzinfo is None:
        raise FeatureJobInputError(f"start must be timezone-aware (UTC), got {start.isoformat()}")
    if days < 1 or n_users < 1:
        raise FeatureJobInputError(f"days and users must be >= 1, got days={days}, users={n_users}")


def _check_counts(result: pa.Table | dict[str, Any]) -> None:
    """The validation query's counts of bad rows, as one error naming each problem."""
    if isinstance(result, pa.Table):
        result = {k: result.column(k)[0].as_py() for k in result.column_names}
    counts = {k: int(v) for k, v in result.items() if k != "n_users"}
    n_users = result["n_users"]
    problems = []
    if counts["null_rows"]:
        problems.append(f"{counts['null_rows']} row(s) with a null {'/'.join(COLUMNS)}")
    if counts["bad_user"]:
        problems.append(f"{counts['bad_user']} row(s) with user_id outside 1..{n_users} (--users)")
    if counts["bad_category"]:
        problems.append(
            f"{counts['bad_category']} row(s) with merchant_category outside 0..{transforms.N_CATEGORIES - 1}"
        )
    if problems:
        raise FeatureJobInputError("transactions: " + "; ".join(problems))


def check_transactions(transactions: pa.Table, n_users: int) -> None:
    """The checks the SQL engines make, on a table in memory (the NumPy engine's input)."""
    missing = [c for c in COLUMNS if c not in transactions.column_names]
    if missing:
        raise FeatureJobInputError(f"transactions have no column(s) {missing}; they have {transactions.column_names}")
    _check_counts(run_sql(f"SELECT {_validation(n_users)} FROM src", {"src": transactions.select(list(COLUMNS))}))


def _validation(n_users: int) -> str:
    return f"""
        {n_users} AS n_users,
        count(*) FILTER (WHERE user_id IS NULL OR amount IS NULL OR merchant_category IS NULL) AS null_rows,
        count(*) FILTER (WHERE user_id < 1 OR user_id > {n_users}) AS bad_user,
        count(*) FILTER (WHERE merchant_category < 0 OR merchant_category >= {transforms.N_CATEGORIES}) AS bad_category
    """


def _to_table(out: pa.Table, start: datetime) -> pa.Table:
    """The engines' rows (user_id, day, int and float64 columns) as compute_user_stats's table."""
    day = np.asarray(out.column("d").to_numpy(), dtype=np.int64)
    event = epoch_us(start) + (day + 1) * DAY_US
    ts = pa.timestamp("us", tz="UTC")
    cols: dict[str, pa.Array] = {
        "user_id": out.column("u").combine_chunks().cast(pa.int64()),
        user_stats.event_timestamp_column: pa.array(event, type=ts),
        user_stats.created_timestamp_column: pa.array(event + int(CREATED_DELAY.total_seconds() * 1e6), type=ts),
    }
    for f in user_stats.features:
        values = out.column(f.name)
        if f.name in _FLOAT:  # float64 -> float32 by NumPy, as the reference rounds; null stays null
            arr = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64).astype(f.dtype)
            cols[f.name] = pa.array(arr, from_pandas=True)
        else:
            cols[f.name] = values.combine_chunks().cast(pa.from_numpy_dtype(np.dtype(f.dtype)))
    return pa.table(cols)


# --- DuckDB ------------------------------------------------------------------------------------------

_DUCKDB_SQL = """
WITH tx AS (
    SELECT user_id AS u, (epoch_us("timestamp") - {start_us}) // {day_us} AS d, amount AS a,
           merchant_category AS c, {order} AS o
    FROM src
    WHERE "timestamp" >= to_timestamp({start_s}) AND "timestamp" < to_timestamp({end_s})
      AND user_id >= {first_user} AND user_id < {end_user}
),
daily AS (  -- one ordered list per day (ordered aggregates are the costly part), folded twice
    SELECT u, d, n, list_reduce(l, lambda x, y: x + y, 0.0::DOUBLE) AS tot,
           list_reduce(list_transform(l, lambda x: x * x), lambda x, y: x + y, 0.0::DOUBLE) AS sq, mx, mask
    FROM (SELECT u, d, count(*) AS n, list(a ORDER BY o) AS l, max(a) AS mx, bit_or(1::BIGINT << c) AS mask
          FROM tx GROUP BY u, d)
),
users AS (SELECT u, min(d) AS first, max(d) AS last FROM daily GROUP BY u),
grid AS (SELECT u, first, unnest(range(first, least(last + 30, {days}))) AS d FROM users),
g AS (
    SELECT grid.u, grid.d, grid.first, coalesce(daily.n, 0) AS n, coalesce(daily.tot, 0.0) AS tot,
           coalesce(daily.sq, 0.0) AS sq, daily.mx, coalesce(daily.mask, 0) AS mask
    FROM grid LEFT JOIN daily ON grid.u = daily.u AND grid.d = daily.d
),
lists AS (  -- likewise one ordered list of (tot, sq) per user
    SELECT u, d0,
           list_reduce(list_transform(l, lambda x: x.t), lambda acc, x: list_append(acc, acc[-1] + x),
                       [0.0]::DOUBLE[]) AS ct,
           list_reduce(list_transform(l, lambda x: x.s), lambda acc, x: list_append(acc, acc[-1] + x),
                       [0.0]::DOUBLE[]) AS cs
    FROM (SELECT u, min(d) AS d0, list(struct_pack(t := tot, s := sq) ORDER BY d) AS l FROM g GROUP BY u)
),
cum AS (  -- the cumulative sums, one pass per user in day order, back to one row per day
    SELECT u, unnest(range(d0, d0 + len(ct) - 1)) AS d, unnest(ct[2:]) AS ctot, unnest(cs[2:]) AS csq FROM lists
),
w AS (
    SELECT g.u, g.d, g.first, g.n,
           sum(g.n) OVER (PARTITION BY g.u ORDER BY g.d ROWS 6 PRECEDING) AS c7,
           sum(g.n) OVER (PARTITION BY g.u ORDER BY g.d ROWS 29 PRECEDING) AS c30,
           cum.ctot, cum.csq,
           max(g.mx) OVER (PARTITION BY g.u ORDER BY g.d ROWS 29 PRECEDING) AS max30,
           bit_or(g.mask) OVER (PARTITION BY g.u ORDER BY g.d ROWS 29 PRECEDING) AS merch
    FROM g JOIN cum ON g.u = cum.u AND g.d = cum.d
),
s AS (
    SELECT *,
           ctot - lag(ctot, 7, 0.0) OVER (PARTITION BY u ORDER BY d) AS s7,
           ctot - lag(ctot, 30, 0.0) OVER (PARTITION BY u ORDER BY d) AS s30,
           csq - lag(csq, 30, 0.0) OVER (PARTITION BY u ORDER BY d) AS sq30
    FROM w
),
m AS (
    SELECT *, CASE WHEN c7 > 0 THEN s7 / c7::DOUBLE END AS mean7, s30 / c30::DOUBLE AS mean30
    FROM s WHERE c30 > 0
)
SELECT u, d,
       n AS txn_count_1d, c7::BIGINT AS txn_count_7d, c30::BIGINT AS txn_count_30d,
       s7 AS amount_sum_7d, mean7 AS amount_mean_7d, mean30 AS amount_mean_30d, max30 AS amount_max_30d,
       sqrt(greatest(sq30 / c30::DOUBLE - mean30 * mean30, 0.0)) AS amount_std_30d,
       bit_count(merch & {cat_mask})::BIGINT AS distinct_merchants_30d,
       (d + 1 - first)::DOUBLE AS account_age_days
FROM m
ORDER BY u, d
"""


def duckdb_sql(
    start: datetime, days: int, *, order: str = '"timestamp"', users: tuple[int, int] = (1, 2**63 - 1)
) -> str:
    """The DuckDB query over a relation ``src`` with the transactions' COLUMNS; ``order`` is the
    expression a day's amounts are summed in the order of; ``users`` the user ids ``[first, end)`` it
    computes (a user's rows depend on its transactions only)."""
    return _DUCKDB_SQL.format(
        start_us=epoch_us(start),
        start_s=epoch_us(start) // 1_000_000,
        end_s=epoch_us(start) // 1_000_000 + days * 86_400,
        day_us=DAY_US,
        days=days,
        order=order,
        cat_mask=(1 << transforms.N_CATEGORIES) - 1,
        first_user=users[0],
        end_user=users[1],
    )


BYTES_PER_TRANSACTION = 300
"""DuckDB's working memory per transaction of a chunk, about (measured: 100k users x 30 days, 4.5M
transactions, ~1.2 GB in one query). A day's ordered list aggregate cannot spill, so the job cuts the
users into chunks whose transactions fit half the memory limit; the sorts and windows spill past it."""
BATCH_ROWS = 64 * 1024
"""Rows per record batch DuckDB hands over."""
_BUCKETS = 1024
"""The user ids are counted in about this many ranges to cut the chunks."""


@dataclass(frozen=True)
class UserStatsJob:
    """The ``user_stats`` job on DuckDB, its input checked and its work cut into chunks of users: run
    :meth:`parts` to stream the rows (each chunk one query, bounded by the memory limit), or
    :meth:`table` to collect them. ``event_days`` are the UTC days the rows' event times fall on."""

    source: pa.Table | ds.Dataset
    order: str
    start: datetime
    days: int
    chunks: tuple[tuple[int, int], ...]
    """User id ranges ``[first, end)``, ascending: the rows come in (user, day) order."""
    event_days: tuple[str, ...]
    config: DuckDBConfig | None = None

    def parts(self) -> Iterator[pa.Table]:
        """The rows chunk after chunk (one query each, on one connection), one table per chunk: what the
        job holds at a time. DuckDB hands them over in record batches of BATCH_ROWS."""
        con = (self.config or DuckDBConfig()).connect()
        try:
            con.register("src", self.source)
            for users in self.chunks:
                query = con.sql(duckdb_sql(self.start, self.days, order=self.order, users=users))
                batches = [_to_table(pa.Table.from_batches([b]), self.start) for b in query.to_arrow_reader(BATCH_ROWS)]
                yield pa.concat_tables(batches) if batches else SCHEMA.empty_table()
        finally:
            con.close()

    def table(self) -> pa.Table:
        return pa.concat_tables([SCHEMA.empty_table(), *self.parts()])


def _schema() -> pa.Schema:
    ts = pa.timestamp("us", tz="UTC")
    fields = [
        pa.field("user_id", pa.int64()),
        pa.field(user_stats.event_timestamp_column, ts),
        pa.field(user_stats.created_timestamp_column, ts),
    ]
    return pa.schema(fields + [pa.field(f.name, pa.from_numpy_dtype(np.dtype(f.dtype))) for f in user_stats.features])


SCHEMA = _schema()
"""The schema of compute_user_stats's table (and of the job's batches)."""


def _memory_bytes(text: str) -> int:
    """DuckDB's rendering of a size (``244.1 MiB``, ``2.0 GB``, ``100 bytes``) in bytes."""
    number, _, unit = text.strip().partition(" ")
    scale = {"bytes": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    scale |= {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    if unit.strip() not in scale:
        raise ValueError(f"not a DuckDB memory size: {text!r}")
    return int(float(number) * scale[unit.strip()])


def _cut(buckets: list[tuple[int, int]], width: int, n_users: int, chunk_rows: int) -> tuple[tuple[int, int], ...]:
    """User id ranges of consecutive buckets (``(k, rows)``: ids ``k*width ..``) of at most ``chunk_rows``
    transactions each (a bucket over it is a chunk of its own), covering ids 1..n_users."""
    chunks: list[tuple[int, int]] = []
    first, rows = 1, 0
    for k, n in buckets:
        lo = max(1, k * width)
        if rows and rows + n > chunk_rows:
            chunks.append((first, lo))
            first, rows = lo, 0
        rows += n
    if rows:
        chunks.append((first, n_users + 1))
    return tuple(chunks)


def plan_user_stats_duckdb(
    transactions: pa.Table | ds.Dataset,
    start: datetime,
    days: int,
    n_users: int,
    config: DuckDBConfig | None = None,
    *,
    chunk_rows: int | None = None,
) -> UserStatsJob:
    """Check ``transactions`` in the window ``start .. start + days`` (in memory: summed in row order; a
    dataset of the table's files: streamed, time order) and cut the job into chunks of users of at most
    ``chunk_rows`` transactions (default: half DuckDB's memory limit over BYTES_PER_TRANSACTION)."""
    _check_args(start, days, n_users)
    missing = [c for c in COLUMNS if c not in transactions.schema.names]
    if missing:
        raise FeatureJobInputError(f"transactions have no column(s) {missing}; they have {transactions.schema.names}")
    if isinstance(transactions, pa.Table):
        src: pa.Table | ds.Dataset = transactions.select(list(COLUMNS)).append_column(
            "__r", pa.array(np.arange(transactions.num_rows, dtype=np.int64))
        )
        order = "__r"
    else:
        src, order = transactions, '"timestamp"'
    start_s = epoch_us(start) // 1_000_000
    window = f'"timestamp" >= to_timestamp({start_s}) AND "timestamp" < to_timestamp({start_s + days * 86_400})'
    width = max(1, -(-(n_users + 1) // _BUCKETS))
    survey = run_sql(
        f"""SELECT user_id // {width} AS k, count(*) AS n_rows, {_validation(n_users)},
                   list(DISTINCT (epoch_us("timestamp") - {epoch_us(start)}) // {DAY_US}) AS tx_days
            FROM src WHERE {window} GROUP BY k ORDER BY k""",
        {"src": src},
        config,
    ).to_pydict()
    _check_counts({k: sum(survey[k]) for k in ("null_rows", "bad_user", "bad_category")} | {"n_users": n_users})
    if chunk_rows is None:
        con = (config or DuckDBConfig()).connect()
        try:
            limit = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
        finally:
            con.close()
        chunk_rows = max(1, _memory_bytes(limit) // 2 // BYTES_PER_TRANSACTION)
    chunks = _cut(list(zip(survey["k"], survey["n_rows"], strict=True)), width, n_users, chunk_rows)
    # a row (user, day d) exists iff the user has a transaction in days d-29 .. d
    covered = {d for tx_days in survey["tx_days"] for t in tx_days for d in range(t, min(t + 30, days))}
    origin = start.astimezone(UTC).replace(tzinfo=None)
    event_days = tuple((origin + timedelta(days=d + 1)).strftime("%Y-%m-%d") for d in sorted(covered))
    return UserStatsJob(src, order, start, days, chunks, event_days, config)


def compute_user_stats_duckdb(
    transactions: pa.Table | ds.Dataset,
    start: datetime,
    days: int,
    n_users: int,
    config: DuckDBConfig | None = None,
) -> pa.Table:
    """compute_user_stats on DuckDB: ``transactions`` in memory (summed in row order) or a dataset of
    the table's files (streamed, time order), the window ``start .. start + days`` of it."""
    return plan_user_stats_duckdb(transactions, start, days, n_users, config).table()


# --- Spark -------------------------------------------------------------------------------------------

_SPARK_SQL = """
WITH tx AS (
    SELECT user_id AS u, (unix_micros(`timestamp`) - {start_us}) div {day_us} AS d,
           amount AS a, merchant_category AS c, {order} AS o
    FROM src
    WHERE unix_micros(`timestamp`) >= {start_us} AND unix_micros(`timestamp`) < {end_us}
),
daily AS (
    SELECT u, d, count(*) AS n,
           aggregate(array_sort(collect_list(struct(o, a))), CAST(0 AS DOUBLE), (acc, x) -> acc + x.a) AS tot,
           aggregate(array_sort(collect_list(struct(o, a))), CAST(0 AS DOUBLE), (acc, x) -> acc + x.a * x.a) AS sq,
           max(a) AS mx, bit_or(shiftleft(CAST(1 AS BIGINT), CAST(c AS INT))) AS mask
    FROM tx GROUP BY u, d
),
users AS (SELECT u, min(d) AS first, max(d) AS last FROM daily GROUP BY u),
grid AS (SELECT u, first, explode(sequence(first, least(last + 29, {last_day}))) AS d FROM users),
g AS (
    SELECT grid.u, grid.d, grid.first, coalesce(daily.n, 0) AS n, coalesce(daily.tot, CAST(0 AS DOUBLE)) AS tot,
           coalesce(daily.sq, CAST(0 AS DOUBLE)) AS sq, daily.mx, coalesce(daily.mask, CAST(0 AS BIGINT)) AS mask
    FROM grid LEFT JOIN daily ON grid.u = daily.u AND grid.d = daily.d
),
w AS (
    SELECT u, d, first, n,
           sum(n) OVER (PARTITION BY u ORDER BY d ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) AS c7,
           sum(n) OVER (PARTITION BY u ORDER BY d ROWS BETWEEN 29 PRECEDING AND CURRENT ROW) AS c30,
           sum(tot) OVER (PARTITION BY u ORDER BY d ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ctot,
           sum(sq) OVER (PARTITION BY u ORDER BY d ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS csq,
           max(mx) OVER (PARTITION BY u ORDER BY d ROWS BETWEEN 29 PRECEDING AND CURRENT ROW) AS max30,
           bit_or(mask) OVER (PARTITION BY u ORDER BY d ROWS BETWEEN 29 PRECEDING AND CURRENT ROW) AS merch
    FROM g
),
s AS (
    SELECT *,
           ctot - lag(ctot, 7, CAST(0 AS DOUBLE)) OVER (PARTITION BY u ORDER BY d) AS s7,
           ctot - lag(ctot, 30, CAST(0 AS DOUBLE)) OVER (PARTITION BY u ORDER BY d) AS s30,
           csq - lag(csq, 30, CAST(0 AS DOUBLE)) OVER (PARTITION BY u ORDER BY d) AS sq30
    FROM w
),
m AS (
    SELECT *, CASE WHEN c7 > 0 THEN s7 / CAST(c7 AS DOUBLE) END AS mean7, s30 / CAST(c30 AS DOUBLE) AS mean30
    FROM s WHERE c30 > 0
)
SELECT u, d,
       CAST(n AS BIGINT) AS txn_count_1d, CAST(c7 AS BIGINT) AS txn_count_7d, CAST(c30 AS BIGINT) AS txn_count_30d,
       s7 AS amount_sum_7d, mean7 AS amount_mean_7d, mean30 AS amount_mean_30d, max30 AS amount_max_30d,
       sqrt(greatest(sq30 / CAST(c30 AS DOUBLE) - mean30 * mean30, CAST(0 AS DOUBLE))) AS amount_std_30d,
       CAST(bit_count(merch & {cat_mask}) AS BIGINT) AS distinct_merchants_30d,
       CAST(d + 1 - first AS DOUBLE) AS account_age_days
FROM m
ORDER BY u, d
"""


def spark_sql(start: datetime, days: int, *, order: str = "unix_micros(`timestamp`)") -> str:
    """The Spark SQL query over a temporary view ``src`` with the transactions' COLUMNS."""
    return _SPARK_SQL.format(
        start_us=epoch_us(start),
        end_us=epoch_us(start) + days * DAY_US,
        day_us=DAY_US,
        last_day=days - 1,
        order=order,
        cat_mask=(1 << transforms.N_CATEGORIES) - 1,
    )


def compute_user_stats_spark(
    transactions: pa.Table | DataFrame,
    start: datetime,
    days: int,
    n_users: int,
    spark: SparkSession | None = None,
) -> pa.Table:
    """compute_user_stats on Spark: ``transactions`` in memory (summed in row order) or a DataFrame of
    the table's files (app.features.pit_spark.scan_frame: time order)."""
    from app.features.pit_spark import spark_session

    _check_args(start, days, n_users)
    spark = spark or spark_session()
    if isinstance(transactions, pa.Table):
        missing = [c for c in COLUMNS if c not in transactions.column_names]
        if missing:
            raise FeatureJobInputError(
                f"transactions have no column(s) {missing}; they have {transactions.column_names}"
            )
        table = transactions.select(list(COLUMNS)).append_column(
            "__r", pa.array(np.arange(transactions.num_rows, dtype=np.int64))
        )
        frame: Any = spark.createDataFrame(table)
        order = "__r"
    else:
        missing = [c for c in COLUMNS if c not in transactions.columns]
        if missing:
            raise FeatureJobInputError(f"transactions have no column(s) {missing}; they have {transactions.columns}")
        frame, order = transactions, "unix_micros(`timestamp`)"
    view = "src"
    frame.createOrReplaceTempView(view)
    start_us = epoch_us(start)
    window = f"unix_micros(`timestamp`) >= {start_us} AND unix_micros(`timestamp`) < {start_us + days * DAY_US}"
    check = spark.sql(f"SELECT {_validation(n_users)} FROM {view} WHERE {window}").collect()[0].asDict()
    _check_counts(check)
    out = spark.sql(spark_sql(start, days, order=order)).toArrow()
    return _to_table(out, start)
