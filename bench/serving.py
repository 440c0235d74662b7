"""Load benchmark of the prediction service against MLServer, in one run on one machine.

    python -m bench.serving [--duration 15] [--runs 3] [--connections 1 8 64] [--skip-mlserver]

Both servers serve the reference workload of docs/benchmarks.md (a 50-tree
RandomForest, depth 8, on 20 features) and receive single-row requests from
wrk (Debian package ``wrk``) in its own process, one thread, keep-alive
connections. Ours runs as production runs it (gunicorn + 2 uvicorn workers,
gunicorn_conf.py); MLServer 1.7 runs from its own virtualenv
(bench/.venvs/mlserver, created on first use) with defaults and with adaptive
batching (32 rows, 5 ms). Prints a markdown table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

from bench.loadgen import wrk_post
from devharness import Server, free_port, leaves_nothing_running, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MLSERVER_VENV = ROOT / "bench" / ".venvs" / "mlserver"
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"]


@dataclass
class Point:
    server: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def measure(name: str, url: str, body: bytes, conns: list[int], duration: int, runs: int) -> list[Point]:
    wrk_post(url, body, 8, 2)  # warm-up
    points = []
    for c in conns:
        samples = [astuple(wrk_post(url, body, c, duration)) for _ in range(runs)]
        rps, p50, p99 = (statistics.median(s[i] for s in samples) for i in range(3))
        p = Point(name, c, rps, p50, p99, sum(s[3] for s in samples))
        print(
            f"  {name:<44} c={c:<3} {p.rps:>8.0f} rps  p50 {p.p50_ms:7.2f} ms  p99 {p.p99_ms:7.2f} ms"
            f"  errors {p.errors}",
            flush=True,
        )
        points.append(p)
    return points


def ensure_mlserver() -> Path:
    py = MLSERVER_VENV / "bin" / "python"
    if not (MLSERVER_VENV / "bin" / "mlserver").exists():
        import sklearn

        subprocess.run([sys.executable, "-m", "venv", str(MLSERVER_VENV)], check=True)
        # The same scikit-learn as ours, so both load the very same fitted forest.
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *MLSERVER_PINS, f"scikit-learn=={sklearn.__version__}"],
            check=True,
        )
    return MLSERVER_VENV / "bin" / "mlserver"


def run_ours(
    work: Path,
    store: Path,
    row: list[float],
    features: list[str],
    args: argparse.Namespace,
    extra_env: dict[str, str],
    label: str,
) -> list[Point]:
    port = free_port()
    env = {
        "MODEL_STORE_URL": str(store),
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        **extra_env,
    }
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "app.predict.main:app"]
    with Server(argv, work / f"ours-{port}.log", env=env, cwd=ROOT) as srv:
        wait_http(f"http://127.0.0.1:{port}/readyz", srv)
        base = f"http://127.0.0.1:{port}"
        v1 = json.dumps({"instances": [dict(zip(features, row, strict=True))]}).encode()
        v2 = json.dumps(
            {"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}
        ).encode()
        points = measure(
            f"{label}, v1 JSON",
            base + "/v1/models/reference/predict",
            v1,
            args.connections,
            args.duration,
            args.runs,
        )
        if not args.v1_only:
            points += measure(
                f"{label}, V2 JSON",
                base + "/v2/models/reference/infer",
                v2,
                args.connections,
                args.duration,
                args.runs,
            )
        return points


def run_mlserver(
    work: Path, estimator: object, row: list[float], args: argparse.Namespace, batching: bool
) -> list[Point]:
    import joblib

    mlserver = ensure_mlserver()
    mdir = work / ("mlserver-batching" if batching else "mlserver")
    shutil.rmtree(mdir, ignore_errors=True)
    (mdir / "reference").mkdir(parents=True)
    joblib.dump(estimator, mdir / "reference" / "model.joblib")
    ms: dict[str, object] = {
        "name": "reference",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if batching:
        ms.update({"max_batch_size": 32, "max_batch_time": 0.005})
    (mdir / "reference" / "model-settings.json").write_text(json.dumps(ms))
    port = free_port()
    (mdir / "settings.json").write_text(
        json.dumps(
            {
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "host": "127.0.0.1",
            }
        )
    )
    with Server([str(mlserver), "start", str(mdir)], work / f"mlserver-{port}.log", cwd=mdir) as srv:
        wait_http(f"http://127.0.0.1:{port}/v2/models/reference/ready", srv)
        body = json.dumps(
            {
                "inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}],
                "outputs": [{"name": "predict_proba"}],
            }
        ).encode()
        label = "MLServer 1.7.1, adaptive batching (32, 5 ms)" if batching else "MLServer 1.7.1, defaults"
        return measure(
            label,
            f"http://127.0.0.1:{port}/v2/models/reference/infer",
            body,
            args.connections,
            args.duration,
            args.runs,
        )


@leaves_nothing_running("bench.serving")
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--skip-mlserver", action="store_true")
    ap.add_argument("--v1-only", action="store_true")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    from app.modelstore import open_store
    from jobs.train import train_and_publish

    work = ROOT / "var" / "bench-serving"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "store"
    meta = train_and_publish(open_store(str(store)), dataset="reference", name="reference")
    _, artifact = open_store(str(store)).read_version("reference", meta.version)
    import pickle

    pipeline = pickle.loads(artifact)  # our own artifact, just written
    forest = pipeline.steps[-1][1]
    row = meta.verification.inputs[0]

    points: list[Point] = []
    print("server                                        conns      rps   p50, p99", flush=True)
    points += run_ours(work, store, row, meta.feature_names, args, {}, "ours (gunicorn, 2 workers)")
    points += run_ours(
        work, store, row, meta.feature_names, args, {"PREDICT_ACCESS_LOG": "false"}, "ours, access log off"
    )
    if not args.skip_mlserver:
        points += run_mlserver(work, forest, row, args, batching=False)
        points += run_mlserver(work, forest, row, args, batching=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "points": [asdict(p) for p in points]}, indent=2))
    print("\n| server | " + " | ".join(f"{c} conn" for c in args.connections) + " |")
    print("|---|" + "---|" * len(args.connections))
    for name in dict.fromkeys(p.server for p in points):
        cells = [
            f"{p.rps:,.0f} rps, p50 {p.p50_ms:.2f}, p99 {p.p99_ms:.1f}, err {p.errors}"
            for p in points
            if p.server == name
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
