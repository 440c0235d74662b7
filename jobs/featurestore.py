"""Feature store jobs: seed, features, materialize, materialize-incremental."""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from app.features.config import FeatureStoreSettings
from app.features.definitions import load_repo
from app.features.historical import join_view
from app.features.materialize import MaterializeReport, materialize, materialize_incremental
from app.features.offline import OfflineStore
from app.features.online import OnlineStore, connect
from examples.fraud import scenario  # seed and features: the reference scenario's data jobs
from examples.fraud.repo import TRANSACTIONS, user_stats
from jobs import pushmetrics


def _when(value: str) -> datetime:
    """ISO date or datetime; naive means UTC."""
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def offline_store(s: FeatureStoreSettings) -> OfflineStore:
    return OfflineStore(s.offline_url, s3_endpoint_url=s.s3_endpoint_url, s3_region=s.s3_region)


def online_store(s: FeatureStoreSettings) -> OnlineStore:
    client = connect(s.redis_url, cluster=s.redis_cluster, timeout_s=s.redis_timeout_seconds)
    return OnlineStore(client, expiry_grace=s.expiry_grace)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("seed", help="generate the reference scenario's labeled transactions (deterministic)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start", type=_when, default=_when("2026-10-01"))
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("features", help="compute the user_stats feature view from the transactions")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start", type=_when, default=_when("2026-10-01"))

    shard_default = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
    for name, helptext in (
        ("materialize", "load a time window of a feature view into the online store"),
        ("materialize-incremental", "load everything since the watermark (minus a lookback)"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "materialize":
            p.add_argument("start", type=_when, help="window start (inclusive), ISO date/time, UTC")
            p.add_argument("end", type=_when, help="window end (exclusive)")
        else:
            p.add_argument("--end", type=_when, default=None, help="default: now")
            p.add_argument("--lookback-minutes", type=float, default=None)
        p.add_argument("--view", default=user_stats.name)
        p.add_argument("--shard", type=int, default=shard_default, help="this shard (env JOB_COMPLETION_INDEX)")
        p.add_argument("--shards", type=int, default=int(os.environ.get("MATERIALIZE_SHARDS", "1")))
        p.add_argument(
            "--lock-wait-seconds",
            type=float,
            default=0.0,
            help="wait this long for a concurrent run's lock instead of failing",
        )


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = FeatureStoreSettings()
    if args.command == "seed":
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
    if args.command == "features":
        off = offline_store(s)
        end = args.start + timedelta(days=args.days)
        tx = off.read_window(TRANSACTIONS, "timestamp", args.start, end)
        stats = scenario.compute_user_stats(tx, args.start, args.days, args.users)
        days = off.write_partitioned(user_stats.source, stats, user_stats.event_timestamp_column)
        return {
            "view": user_stats.name,
            "rows": stats.num_rows,
            "partitions": len(days),
            "offline": s.offline_url,
        }
    # materialize / materialize-incremental
    view = load_repo(s.repo).view(args.view)
    started = datetime.now(UTC)
    report: MaterializeReport | None = None
    try:
        if args.command == "materialize":
            report = materialize(
                view,
                offline_store(s),
                online_store(s),
                args.start,
                args.end,
                shard=args.shard,
                shards=args.shards,
                lock_ttl_s=s.lock_ttl_seconds,
                lock_wait_s=args.lock_wait_seconds,
            )
        else:
            lookback = timedelta(minutes=args.lookback_minutes) if args.lookback_minutes is not None else s.lookback
            report = materialize_incremental(
                view,
                offline_store(s),
                online_store(s),
                lookback=lookback,
                end=args.end,
                shard=args.shard,
                shards=args.shards,
                lock_ttl_s=s.lock_ttl_seconds,
                lock_wait_s=args.lock_wait_seconds,
            )
    finally:
        values: dict[str, float] = {"duration_seconds": (datetime.now(UTC) - started).total_seconds()}
        if report is not None:
            values.update(
                rows_read=report.rows_read,
                entities_written=report.written,
                entities_skipped_stale=report.skipped_stale,
                entities_expired=report.expired,
            )
            if report.watermark_after:
                values["watermark_timestamp_seconds"] = datetime.fromisoformat(report.watermark_after).timestamp()
        pushmetrics.push(
            s.pushgateway_url,
            "materialize",
            {"view": view.name, "shard": f"{args.shard}of{args.shards}"},
            values,
            report is not None,
        )
    return report.as_dict()
