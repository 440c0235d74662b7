"""Point-in-time joins over a lakehouse table, engine by engine, in one run on one machine.

    python -m bench.lakehouse [--feature-rows 10000000] [--users 1000000] [--days 30]
        [--entity-rows 1000000] [--engines numpy,duckdb-asof-ref,duckdb,spark] [--memory-limit 1GB]

The issue's workload at full size: a 10M-row feature table (1M users, 30 days, 4 float32 features)
joined to 1M entity rows. ``--feature-rows 100000000`` is the larger-than-memory case (with a DuckDB
``--memory-limit``). The table is written once as a Delta table (one commit per day) under
``--work`` (default var/bench-lakehouse/<rows>), the entity rows beside it.

Each engine runs in its own process (``--run ENGINE``): wall time of the join (reading included,
writing the result excluded), peak RSS of the process and its children (Spark's JVM), and the most
bytes seen in the engine's spill directory (polled every 50 ms). Every engine's output is compared
with the first engine's, row for row.

Engines: ``numpy`` (get_historical_features' in-memory path), ``duckdb-asof-ref`` (the issue's reference:
ASOF LEFT JOIN after a created-time dedup window, one query, the engine behind Feast's DuckDB offline
store), ``duckdb`` (ours: one ASOF on packed (event, created)), ``spark`` (local[*]).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from app.features.definitions import Entity, Feature, FeatureRepo, FeatureView
from app.features.offline import OfflineStore

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 10, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
FEATURES = ["f0", "f1", "f2", "f3"]
USER = Entity("user", "user_id")
VIEW = FeatureView(
    name="user_daily",
    entity=USER,
    source="features/user_daily",
    ttl=timedelta(days=2),
    features=tuple(Feature(f, "float32") for f in FEATURES),
)
ENGINES = ("numpy", "duckdb-asof-ref", "duckdb", "spark")


def build(work: Path, feature_rows: int, users: int, days: int, entity_rows: int) -> None:
    """The feature table (one commit per day, generated a day at a time) and the entity rows."""
    marker = work / "built.json"
    spec = {"feature_rows": feature_rows, "users": users, "days": days, "entity_rows": entity_rows}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    off = OfflineStore(str(work / "offline"))
    rng = np.random.default_rng(0)
    per_day = feature_rows // days
    t0 = int(START.timestamp() * 1e6)
    for d in range(days):
        n = per_day if d < days - 1 else feature_rows - per_day * (days - 1)
        ev = t0 + d * 86_400_000_000 + rng.integers(0, 86_400_000_000, n)
        ev = (ev // 1_000_000) * 1_000_000  # whole seconds: ties on event time happen
        cols: dict[str, Any] = {
            "user_id": pa.array(rng.integers(0, users, n), pa.int64()),
            "event_timestamp": pa.array(ev, TS),
            "created_timestamp": pa.array(ev + rng.integers(0, 3, n) * 1_000_000, TS),
        }
        for f in FEATURES:
            cols[f] = pa.array(rng.random(n, dtype=np.float32))
        off.append(VIEW.source, pa.table(cols), "event_timestamp")
    ent = pa.table(
        {
            "user_id": pa.array(rng.integers(0, users, entity_rows), pa.int64()),
            "event_timestamp": pa.array(t0 + rng.integers(0, days * 86_400_000_000, entity_rows), TS),
        }
    )
    pq.write_table(ent, work / "entities.parquet")
    marker.write_text(json.dumps(spec))


def _dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # a spill file removed while we walk
                total += os.path.getsize(os.path.join(dirpath, f))
    return total


def _tree_rss() -> int:
    """Resident bytes of this process and all its descendants (Spark's JVM and Python workers, which
    getrusage does not count while they live)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as fh:
                parent[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parent.items() if p == pid and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/statm") as fh:
            total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


class SpillWatch:
    """The most bytes seen under ``path``, and the largest resident size of the process tree, while the
    join runs."""

    def __init__(self, path: Path) -> None:
        self.path, self.peak, self.rss_peak, self._stop = path, 0, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, _dir_bytes(self.path))
            self.rss_peak = max(self.rss_peak, _tree_rss())

    def __enter__(self) -> SpillWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _reference_duckdb(off: OfflineStore, ent: pa.Table, memory_limit: str | None, spill: Path) -> pa.Table:
    """The issue's reference query: created-time dedup window, then ASOF LEFT JOIN, in one query."""
    import duckdb

    scan = off.scan(VIEW.source, "event_timestamp", None, None)
    config: dict[str, str | bool | int | float | list[str]] = {
        "temp_directory": str(spill),
        "preserve_insertion_order": False,
    }
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(config=config)
    con.register("src", scan.dataset())
    con.register("ent", ent.append_column("r", pa.array(np.arange(ent.num_rows))))
    cols = ", ".join(FEATURES)
    ttl_us = int(VIEW.ttl / timedelta(microseconds=1))
    picks = ", ".join(
        f"CASE WHEN f.event_timestamp >= e.event_timestamp - to_microseconds({ttl_us}) THEN f.{c} END AS {c}"
        for c in FEATURES
    )
    sql = f"""
        WITH f AS (
            SELECT user_id, event_timestamp, {cols} FROM src
            QUALIFY row_number() OVER (PARTITION BY user_id, event_timestamp ORDER BY created_timestamp DESC) = 1
        )
        SELECT e.user_id, e.event_timestamp, {picks}
        FROM ent e ASOF LEFT JOIN f ON e.user_id = f.user_id AND e.event_timestamp >= f.event_timestamp
        ORDER BY e.r
    """
    out = con.sql(sql).to_arrow_table()
    con.close()
    return out


def run_engine(engine: str, work: Path, memory_limit: str | None) -> dict[str, Any]:
    """One engine's join, in this process; its output is written beside the table for comparison."""
    from app.features.historical import get_historical_features
    from app.features.pit_duckdb import DuckDBConfig

    off = OfflineStore(str(work / "offline"))
    ent = pq.read_table(work / "entities.parquet")
    spill = work / f"spill-{engine}"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir()
    refs = [f"{VIEW.name}:{f}" for f in FEATURES]
    repo = FeatureRepo([USER], [VIEW])
    if engine == "spark":
        os.environ["SPARK_LOCAL_DIRS"] = str(spill)
        from app.features import pit_spark

        t = time.perf_counter()
        pit_spark.spark_session()
        startup = time.perf_counter() - t
    with SpillWatch(spill) as watch:
        t = time.perf_counter()
        if engine == "duckdb-asof-ref":
            out = _reference_duckdb(off, ent, memory_limit, spill)
        else:
            config = DuckDBConfig(memory_limit=memory_limit, temp_directory=str(spill))
            out = get_historical_features(ent, refs, repo, off, engine=engine, duckdb_config=config)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t
    pq.write_table(out, work / f"out-{engine}.parquet")
    result = {
        "engine": engine,
        "seconds": round(seconds, 3),
        "spill_peak_mb": round(watch.peak / 2**20, 1),
        "tree_rss_peak_mb": round(watch.rss_peak / 2**20, 1),  # sampled every 0.1 s, JVM included
        "rows": out.num_rows,
        "matched": out.num_rows - out.column(FEATURES[0]).null_count,
    }
    if engine == "spark":
        result["session_start_seconds"] = round(startup, 3)
    return result


def _run_child(engine: str, work: Path, memory_limit: str | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.lakehouse", "--run", engine, "--work", str(work)]
    if memory_limit:
        argv += ["--memory-limit", memory_limit]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    if p.returncode != 0:
        return {"engine": engine, "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feature-rows", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--entity-rows", type=int, default=1_000_000)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--memory-limit", default=None, help="DuckDB's memory limit (both DuckDB engines)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--run", choices=ENGINES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.work or ROOT / "var" / "bench-lakehouse" / f"{args.feature_rows}"
    if args.run:
        result = run_engine(args.run, work, args.memory_limit)
        result["peak_rss_mb"] = round(
            max(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            )
            / 1024,
            1,
        )
        print(json.dumps(result))
        return
    t = time.perf_counter()
    build(work, args.feature_rows, args.users, args.days, args.entity_rows)
    built = time.perf_counter() - t
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"unknown engine(s) {sorted(unknown)}; choose from {list(ENGINES)}")
    results = [_run_child(e, work, args.memory_limit) for e in engines]
    first = next((r["engine"] for r in results if "error" not in r), None)
    if first is not None:
        base = pq.read_table(work / f"out-{first}.parquet").select(FEATURES)
        for r in results:
            if "error" not in r:
                other = pq.read_table(work / f"out-{r['engine']}.parquet").select(FEATURES)
                r["identical_to_" + first] = bool(other.equals(base))
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "workload": {
            "feature_rows": args.feature_rows,
            "users": args.users,
            "days": args.days,
            "entity_rows": args.entity_rows,
            "memory_limit": args.memory_limit,
            "table_mb_on_disk": round(_dir_bytes(work / "offline") / 2**20, 1),
            "build_seconds": round(built, 1),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "results": results,
    }
    out = ROOT / "bench" / "results" / f"lakehouse-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
