"""Feature store jobs: seed, features, materialize, materialize-incremental; the lakehouse's
migrate-offline and table-history; point-in-time training data (historical) on a chosen engine."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from app.features.definitions import FeatureView, load_repo
from app.features.historical import ENGINES, get_historical_features, join_view
from app.features.materialize import MaterializeReport, materialize, materialize_incremental
from app.features.pit_duckdb import DuckDBConfig
from app.features.stores import offline_store, online_store
from examples.fraud import features_sql, scenario  # seed and features: the reference scenario's data jobs
from examples.fraud.repo import TRANSACTIONS, user_stats
from jobs import pushmetrics
from jobs.settings import JobSettings

FEATURE_ENGINES = ("numpy", "duckdb", "spark")


_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _when(value: str) -> datetime:
    """ISO date or datetime (naive means UTC), ``today`` / ``today-Nd`` (UTC midnight of today, N days back)
    or ``now`` / ``now-N{s,m,h,d}``: what a scheduled run and a walkthrough want, their windows moving with
    the calendar (the chart's featureJob, the README's snippets on any day)."""
    relative = re.fullmatch(r"today(?:-(\d+)d)?", value.strip())
    if relative:
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight - timedelta(days=int(relative.group(1) or 0))
    recent = re.fullmatch(r"now(?:-(\d+)([smhd]))?", value.strip())
    if recent:
        back = int(recent.group(1) or 0) * _UNIT_S[recent.group(2) or "s"]
        return datetime.now(UTC) - timedelta(seconds=back)
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO date/time, nor today or today-Nd: {value!r} (nor now or now-N with s, m, h or d)"
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], settings: JobSettings) -> None:
    p = sub.add_parser("seed", help="generate the reference scenario's labeled transactions (deterministic)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument(
        "--start", type=_when, default="today-29d", help="first day, UTC: an ISO date or today-Nd (default: today-29d)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=seed)

    p = sub.add_parser("features", help="compute the user_stats feature view from the transactions")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument(
        "--start",
        type=_when,
        default="today-29d",
        help="first day of the window, UTC: an ISO date, or today-Nd (N days before today: a scheduled run's; "
        "default: today-29d)",
    )
    p.add_argument(
        "--engine",
        choices=FEATURE_ENGINES,
        default="numpy",
        help="numpy (default: in memory, and the fastest while the window's transactions fit one pod: 100k "
        "users x 30 days in 8.9 s, 2.2 GB peak RSS; see docs/benchmarks.md); duckdb (examples/fraud/"
        "features_sql.py: streams the table's files, cuts the users into chunks sized to --memory-limit and "
        "writes the rows chunk by chunk in one commit: 100k users x 30 days in 20.7 s and 0.58 GB peak RSS "
        "under 256MB, 17.0 s and 1.77 GB without a limit); spark (the same SQL on Spark, for data past one "
        "machine). All three give identical rows",
    )
    p.add_argument(
        "--memory-limit",
        default=None,
        help="DuckDB's memory limit, e.g. 256MB (at least ~64MB): the users are cut into chunks of half its worth",
    )
    p.add_argument("--spill-dir", default=None, help="where DuckDB spills (default: the temp directory)")
    p.add_argument("--spark-master", default=None, help="Spark master URL (default: SPARK_MASTER, else local[*])")
    p.set_defaults(handler=features)

    for name, helptext, handler in (
        ("materialize", "load a time window of a feature view into the online store", materialize_window),
        ("materialize-incremental", "load everything since the watermark (minus a lookback)", materialize_since),
    ):
        p = sub.add_parser(name, help=helptext)
        p.set_defaults(handler=handler)
        if name == "materialize":
            p.add_argument("start", type=_when, help="window start (inclusive), ISO date/time, UTC")
            p.add_argument("end", type=_when, help="window end (exclusive)")
        else:
            p.add_argument("--end", type=_when, default=None, help="default: now")
            p.add_argument("--lookback-minutes", type=float, default=None)
        p.add_argument("--view", default=user_stats.name)
        p.add_argument(
            "--shard", type=int, default=settings.job_completion_index, help="this shard (env JOB_COMPLETION_INDEX)"
        )
        p.add_argument(
            "--shards", type=int, default=settings.materialize_shards, help="of this many (env MATERIALIZE_SHARDS)"
        )
        p.add_argument(
            "--lock-wait-seconds",
            type=float,
            default=0.0,
            help="wait this long for a concurrent run's lock instead of failing",
        )
    add_lakehouse_parsers(sub)


def add_lakehouse_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "migrate-offline",
        help="make the pre-lakehouse Parquet datasets Delta tables in place (nothing copied; safe to re-run)",
    )
    p.add_argument("--dataset", action="append", help="only this dataset (repeatable); default: every one found")
    p.set_defaults(handler=migrate_offline)

    p = sub.add_parser("table-history", help="the commits (versions) of an offline-store table, newest first")
    p.add_argument("dataset")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(handler=table_history)

    p = sub.add_parser(
        "historical",
        help="point-in-time features for the entity rows of an offline dataset, written to another dataset",
    )
    p.add_argument("--entities", required=True, help="offline dataset of entity rows (join key + timestamp)")
    p.add_argument("--timestamp-column", default="timestamp")
    p.add_argument("--features", required=True, nargs="+", metavar="VIEW:FEATURE")
    p.add_argument("--output", required=True, help="offline dataset to write (its days replaced: re-runnable)")
    p.add_argument("--engine", choices=ENGINES, default="duckdb")
    p.add_argument("--memory-limit", default=None, help="DuckDB's memory limit, e.g. 2GB: past it, it spills")
    p.add_argument("--spill-dir", default=None, help="where DuckDB spills (default: the temp directory)")
    p.add_argument("--spark-master", default=None, help="Spark master URL (default: SPARK_MASTER, else local[*])")
    p.set_defaults(handler=historical)


def migrate_offline(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    off = offline_store(settings.features)
    names = args.dataset or off.legacy_datasets()
    converted, already = {}, []
    for name in names:
        version = off.convert(name)
        if version < 0:
            already.append(name)
        else:
            converted[name] = {"version": version, "partitions": len(off.partitions(name))}
    return {"converted": converted, "already_tables": already, "offline": settings.features.offline_url}


def table_history(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    off = offline_store(settings.features)
    return {
        "dataset": args.dataset,
        "version": off.version(args.dataset),
        "history": off.history(args.dataset, args.limit),
    }


def historical(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    s = settings.features
    off = offline_store(s)
    repo = load_repo(s.require_repo())
    started = datetime.now(UTC)
    entities = off.read_window(args.entities, args.timestamp_column, None, None)
    if args.engine == "spark" and args.spark_master:
        import os

        os.environ["SPARK_MASTER"] = args.spark_master
    joined = get_historical_features(
        entities,
        args.features,
        repo,
        off,
        timestamp_column=args.timestamp_column,
        engine=args.engine,
        duckdb_config=DuckDBConfig(memory_limit=args.memory_limit, temp_directory=args.spill_dir),
    )
    days = off.write_partitioned(args.output, joined, args.timestamp_column)
    return {
        "engine": args.engine,
        "rows": joined.num_rows,
        "output": args.output,
        "output_version": off.version(args.output),
        "partitions": len(days),
        "table_versions": off.versions_read,
        "entity_fingerprint": off.entity_fingerprint,
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 3),
    }


def seed(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    s = settings.features
    tx = scenario.generate_transactions(args.users, args.days, args.start, args.seed)
    stats = scenario.compute_user_stats(tx, args.start, args.days, args.users)
    joined = join_view(tx, "user_id", "timestamp", user_stats, stats, user_stats.feature_names)
    labels = scenario.label_transactions(tx, pa.table(joined), args.seed)
    tx = tx.append_column("is_fraud", pa.array(labels))
    days = offline_store(s).write_partitioned(TRANSACTIONS, tx, "timestamp")
    return {
        "rows": tx.num_rows,
        "users": args.users,
        "partitions": len(days),
        "fraud_rate": round(float(labels.mean()), 4),
        "offline": s.offline_url,
    }


def features(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    """The user_stats table for the window; its metrics go to the Pushgateway (job "features"), failed or not,
    for the chart's FeatureJobFailed and FeatureJobStale alerts."""
    with pushmetrics.pushed(settings.features.pushgateway_url, "features", {"view": user_stats.name}) as values:
        summary = _compute_features(args, settings)
        values.update(rows_written=summary["rows"], partitions_written=summary["partitions"])
    return summary


def _compute_features(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    s = settings.features
    off = offline_store(s)
    end = args.start + timedelta(days=args.days)
    started = datetime.now(UTC)
    cols = list(features_sql.COLUMNS)
    rows = 0
    if args.engine == "duckdb":
        scan = off.scan(TRANSACTIONS, "timestamp", args.start, end, cols)
        source: pa.Table | ds.Dataset = scan.dataset() if scan.files else scan.schema.empty_table().select(cols)
        config = DuckDBConfig(memory_limit=args.memory_limit, temp_directory=args.spill_dir)
        job = features_sql.plan_user_stats_duckdb(source, args.start, args.days, args.users, config)

        def counted() -> Iterator[pa.Table]:  # the rows go to the table chunk by chunk: never all in memory
            nonlocal rows
            for part in job.parts():
                rows += part.num_rows
                yield part

        days = off.write_partitioned_parts(
            user_stats.source, features_sql.SCHEMA, counted(), user_stats.event_timestamp_column, list(job.event_days)
        )
        return _features_summary(args, settings, rows, days, started) | {"chunks": len(job.chunks)}
    if args.engine == "numpy":
        tx = off.read_window(TRANSACTIONS, "timestamp", args.start, end, cols)
        features_sql.check_transactions(tx, args.users)
        stats = scenario.compute_user_stats(tx, args.start, args.days, args.users)
    else:
        from app.features import pit_spark  # pyspark: the spark extra, only here

        scan = off.scan(TRANSACTIONS, "timestamp", args.start, end, cols)
        spark = pit_spark.spark_session(args.spark_master)
        frame = pit_spark.scan_frame(spark, scan, off, cols, args.start, end, timestamp_column="timestamp")
        stats = features_sql.compute_user_stats_spark(frame, args.start, args.days, args.users, spark)
    days = off.write_partitioned(user_stats.source, stats, user_stats.event_timestamp_column)
    return _features_summary(args, settings, stats.num_rows, days, started)


def _features_summary(
    args: argparse.Namespace, settings: JobSettings, rows: int, days: list[str], started: datetime
) -> dict[str, Any]:
    return {
        "view": user_stats.name,
        "engine": args.engine,
        "rows": rows,
        "partitions": len(days),
        "offline": settings.features.offline_url,
        "duration_s": round((datetime.now(UTC) - started).total_seconds(), 3),
    }


def materialize_window(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    s = settings.features
    view = load_repo(s.require_repo()).view(args.view)
    return _pushing_metrics(
        args,
        settings,
        view,
        lambda: materialize(
            view,
            offline_store(s),
            online_store(s),
            args.start,
            args.end,
            shard=args.shard,
            shards=args.shards,
            lock_ttl_s=s.lock_ttl_seconds,
            lock_wait_s=args.lock_wait_seconds,
        ),
    )


def materialize_since(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    s = settings.features
    view = load_repo(s.require_repo()).view(args.view)
    lookback = timedelta(minutes=args.lookback_minutes) if args.lookback_minutes is not None else s.lookback
    return _pushing_metrics(
        args,
        settings,
        view,
        lambda: materialize_incremental(
            view,
            offline_store(s),
            online_store(s),
            lookback=lookback,
            end=args.end,
            shard=args.shard,
            shards=args.shards,
            lock_ttl_s=s.lock_ttl_seconds,
            lock_wait_s=args.lock_wait_seconds,
        ),
    )


def _pushing_metrics(
    args: argparse.Namespace, settings: JobSettings, view: FeatureView, load: Callable[[], MaterializeReport]
) -> dict[str, Any]:
    """Run a materialization and push its metrics to the Pushgateway, failed or not."""
    grouping = {"view": view.name, "shard": f"{args.shard}of{args.shards}"}
    with pushmetrics.pushed(settings.features.pushgateway_url, "materialize", grouping) as values:
        report = load()
        values.update(
            rows_read=report.rows_read,
            entities_written=report.written,
            entities_skipped_stale=report.skipped_stale,
            entities_expired=report.expired,
        )
        if report.watermark_after:
            values["watermark_timestamp_seconds"] = datetime.fromisoformat(report.watermark_after).timestamp()
    return report.as_dict()
