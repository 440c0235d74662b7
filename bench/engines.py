"""The prediction service's engines, in one run on one machine (issue 15).

    python -m bench.engines [--duration 8] [--runs 2] [--connections 1 8 64] [--skip-mlserver] [--skip-pipelines]

1. The reference workload of docs/benchmarks.md (a 50-tree RandomForest, depth 8, 20 features), single-row v1
   JSON requests from wrk (bench/loadgen.py) at 1, 8 and 64 connections, against
   * ours with onnxruntime (this tree: the graph the train job stored),
   * ours with the hand-written compiled forest: the tree of the last commit that had app/predict/forest.py,
     extracted with ``git archive`` and run from this virtualenv, its model trained by that tree's own train
     job (same data, same seed: the same forest),
   * MLServer 1.7.1 with adaptive batching (32 rows, 5 ms), bench/serving.py's peer,
   * the HTTP floor (bench/floor_app.py): a constant answer behind the same server, which bounds any engine.
2. A StandardScaler + LogisticRegression pipeline and a 100-tree GradientBoostingClassifier on the same data,
   through the service at 8 connections: onnxruntime against the scikit-learn fallback (PREDICT_ENGINE=sklearn).

Every server runs as production runs ours (gunicorn, 2 uvicorn workers, micro-batching on). Prints markdown
tables with the ratios and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import wrk_post
from bench.serving import Point, ensure_mlserver
from devharness import Server, free_port, leaves_nothing_running, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FOREST_FILE = "app/predict/forest.py"
FLOOR_LABEL = "HTTP floor: constant answer, same server"


def forest_commit() -> str:
    """The last commit whose tree has the compiled forest: the parent of the commit that deleted it."""
    out = subprocess.run(
        ["git", "log", "-1", "--format=%H", "--diff-filter=D", "--", FOREST_FILE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not out:
        raise SystemExit(f"{FOREST_FILE} was never deleted: nothing to compare against")
    return out + "^"


def extract_tree(commit: str, dest: Path) -> Path:
    """``commit``'s app, jobs and examples in ``dest`` (git archive: the checkout is left alone)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "app", "jobs", "examples"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


@dataclass
class Target:
    """One server under test: its label and the single-row request it gets."""

    label: str
    url: str
    body: bytes


def measure(targets: list[Target], conns: list[int], duration: int, runs: int) -> list[Point]:
    """Interleaved: for each connection count, run 1 of every target, then run 2 of every target (order rotated), ...

    On a shared machine the background load drifts over minutes; interleaving spreads the drift over
    all targets instead of charging it to whichever ran last, so same-run ratios stay meaningful."""
    for t in targets:
        wrk_post(t.url, t.body, 8, 2)  # warm-up: both workers, every code path
    points = []
    for c in conns:
        samples: dict[str, list[tuple[float, ...]]] = {t.label: [] for t in targets}
        for r in range(runs):
            # The order rotates each round, and each server gets a second to drain what wrk left queued
            # (MLServer's batcher answers for a while after wrk stops): neither lands on the next server.
            for t in targets[r % len(targets) :] + targets[: r % len(targets)]:
                samples[t.label].append(astuple(wrk_post(t.url, t.body, c, duration)))
                time.sleep(1.0)
        for t in targets:
            got = samples[t.label]
            rps, p50, p99 = (statistics.median(s[i] for s in got) for i in range(3))
            p = Point(t.label, c, rps, p50, p99, int(sum(s[3] for s in got)))
            print(
                f"  {t.label:<46} c={c:<3} {p.rps:>8.0f} rps  p50 {p.p50_ms:7.2f} ms  p99 {p.p99_ms:7.2f} ms"
                f"  errors {p.errors}",
                flush=True,
            )
            points.append(p)
    return points


def serve(
    stack: ExitStack,
    work: Path,
    store: Path,
    model: str,
    row: list[float],
    features: list[str],
    label: str,
    *,
    env: dict[str, str] | None = None,
    tree: Path = ROOT,
    expect_engine: str,
) -> Target:
    """Our service from ``tree`` over ``store`` (stopped with ``stack``); refused unless ``model`` runs on
    ``expect_engine``."""
    import httpx

    port = free_port()
    full_env = {
        "MODEL_STORE_URL": str(store),
        "PREDICT_MODELS": model,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "PYTHONPATH": str(tree),  # ahead of the editable install's finder, which comes last
        **(env or {}),
    }
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "app.predict.main:app"]
    srv = stack.enter_context(Server(argv, work / f"ours-{port}.log", env=full_env, cwd=tree))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/readyz", srv)
    engine = {m["name"]: m["engine"] for m in httpx.get(base + "/v1/models").json()["models"]}[model]
    if engine != expect_engine:
        raise SystemExit(f"{label}: {model} is served by {engine}, expected {expect_engine}")
    body = json.dumps({"instances": [dict(zip(features, row, strict=True))]}).encode()
    return Target(label, f"{base}/v1/models/{model}/predict", body)


def start_floor(stack: ExitStack, work: Path, body: bytes) -> Target:
    """bench/floor_app.py under our server settings: what the HTTP path alone allows."""
    port = free_port()
    env = {"BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "bench.floor_app:app"]
    srv = stack.enter_context(Server(argv, work / f"floor-{port}.log", env=env, cwd=ROOT))
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/", srv)
    return Target(FLOOR_LABEL, base + "/", body)


def start_mlserver(stack: ExitStack, work: Path, store: Path, version: str, row: list[float]) -> Target:
    """MLServer 1.7.1 with adaptive batching (32 rows, 5 ms) on the same forest: bench/serving.py's peer."""
    import pickle

    import joblib

    from app.modelstore import open_store

    _, artifact = open_store(str(store)).read_version("reference", version)
    forest = pickle.loads(artifact).steps[-1][1]  # our own artifact, just written
    mdir = work / "mlserver-batching"
    (mdir / "reference").mkdir(parents=True)
    joblib.dump(forest, mdir / "reference" / "model.joblib")
    settings = {
        "name": "reference",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
        "max_batch_size": 32,
        "max_batch_time": 0.005,
    }
    (mdir / "reference" / "model-settings.json").write_text(json.dumps(settings))
    port = free_port()
    ports = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1"}
    (mdir / "settings.json").write_text(json.dumps(ports))
    srv = stack.enter_context(Server([str(ensure_mlserver()), "start", str(mdir)], work / "mlserver.log", cwd=mdir))
    wait_http(f"http://127.0.0.1:{port}/v2/models/reference/ready", srv)
    body = json.dumps(
        {
            "inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}],
            "outputs": [{"name": "predict_proba"}],
        }
    ).encode()
    return Target(
        "MLServer 1.7.1, adaptive batching (32, 5 ms)", f"http://127.0.0.1:{port}/v2/models/reference/infer", body
    )


def publish_pipelines(store: Path) -> dict[str, Any]:
    """LR and GB pipelines on the reference data, published as the train job publishes (graph included)."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from app.modelstore import TrainingRun, open_store, publish_sklearn

    x, y = make_classification(n_samples=20000, n_features=20, random_state=0)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    features = [f"f{i}" for i in range(20)]
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "gradient-boosting": GradientBoostingClassifier(n_estimators=100, random_state=0),
    }
    out = {}
    for name, est in models.items():
        est.fit(x_train, y_train)
        run = TrainingRun(
            feature_names=features,
            target_name="target",
            metrics={},
            source="make_classification(20000, 20, seed 0)",
            x_train=x_train,
            y_train=y_train,
            x_test=x_test,
            test_probabilities=est.predict_proba(x_test),
            params={},
        )
        meta = publish_sklearn(open_store(str(store)), est, name, run)
        if meta.onnx is None:
            raise SystemExit(f"{name} did not convert: {meta.onnx_unavailable}")
        out[name] = meta
    return out


def per_call_us(fn: Any, x: Any, budget_s: float = 0.5) -> float:
    """Median of 5 timings of ``fn(x)``, each the mean over as many calls as fit in budget_s / 5."""
    fn(x)
    start = time.perf_counter()
    fn(x)
    once = max(time.perf_counter() - start, 1e-6)
    n = max(1, int(budget_s / 5 / once))
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn(x)
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def in_process(store: Path, forest_tree: Path, pstore: Path | None) -> list[dict[str, Any]]:
    """The engines alone, one thread, in this process: predict_proba per call at 1, 8 and 64 rows."""
    import importlib.util

    from app.modelstore import open_store
    from app.runtime.model import SklearnModel

    spec = importlib.util.spec_from_file_location("old_forest", forest_tree / FOREST_FILE)
    assert spec is not None and spec.loader is not None
    old_forest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old_forest)

    rows: list[dict[str, Any]] = []
    stores = [(store, "reference")] + ([(pstore, "logistic"), (pstore, "gradient-boosting")] if pstore else [])
    for root, name in stores:
        st = open_store(str(root))
        version = st.latest(name)
        assert version is not None
        meta, artifact = st.read_version(name, version)
        ort_model = SklearnModel(meta)
        ort_model.load(artifact, onnx_graph=st.read_onnx(meta))
        engines: dict[str, Any] = {"onnxruntime": ort_model.predict_proba}
        compiled = old_forest.compile_estimator(ort_model.estimator)
        if compiled is not None:
            engines["compiled forest"] = compiled.predict_proba
        engines["scikit-learn"] = ort_model.estimator.predict_proba
        x = np.asarray(meta.verification.inputs * 2, dtype=np.float64)  # 64 held-out rows
        for engine, fn in engines.items():
            cells = {n: per_call_us(fn, x[:n]) for n in (1, 8, 64)}
            rows.append({"model": name, "engine": engine, "us": cells})
            print(f"  {name:<18} {engine:<16} " + "  ".join(f"{n} rows {v:8.1f} us" for n, v in cells.items()))
    return rows


def table(points: list[Point], conns: list[int]) -> None:
    print("\n| server | " + " | ".join(f"{c} conn" for c in conns) + " |")
    print("|---|" + "---|" * len(conns))
    for name in dict.fromkeys(p.server for p in points):
        cells = [
            f"{p.rps:,.0f} rps, p50 {p.p50_ms:.2f}, p99 {p.p99_ms:.1f}, err {p.errors}"
            for c in conns
            for p in points
            if p.server == name and p.connections == c
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


def ratio(points: list[Point], a: str, b: str, conns: int) -> float:
    pa = next(p for p in points if p.server == a and p.connections == conns)
    pb = next(p for p in points if p.server == b and p.connections == conns)
    return pa.rps / pb.rps


@leaves_nothing_running("bench.engines")
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ap.add_argument("--runs", type=int, default=2, help="wrk runs per point (medians reported)")
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--skip-mlserver", action="store_true")
    ap.add_argument("--skip-pipelines", action="store_true")
    ap.add_argument("--forest-commit", help="tree to run the compiled forest from (default: before its removal)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    from app.modelstore import open_store
    from jobs.train import train_and_publish

    work = ROOT / "var" / "bench-engines"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "store"
    meta = train_and_publish(open_store(str(store)), dataset="reference", name="reference")
    if meta.onnx is None:
        raise SystemExit(f"the reference forest did not convert: {meta.onnx_unavailable}")
    row = meta.verification.inputs[0]

    commit = args.forest_commit or forest_commit()
    sha = subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    forest_tree = extract_tree(commit, work / "forest-tree")
    forest_store = work / "forest-store"
    # That tree's own train job: its metadata schema, the same forest (same data, same seed).
    subprocess.run(
        [sys.executable, "-m", "jobs", "train", "--dataset", "reference", "--name", "reference"],
        cwd=forest_tree,
        env={**os.environ, "PYTHONPATH": str(forest_tree), "MODEL_STORE_URL": str(forest_store)},
        check=True,
        capture_output=True,
    )

    conns = args.connections
    ort_label = "ours, onnxruntime"
    forest_label = f"ours, compiled forest ({sha.strip()})"
    print("reference workload (interleaved runs): server  conns      rps   p50, p99", flush=True)
    with ExitStack() as stack:
        targets = [
            serve(stack, work, store, "reference", row, meta.feature_names, ort_label, expect_engine="onnxruntime"),
            serve(
                stack,
                work,
                forest_store,
                "reference",
                row,
                meta.feature_names,
                forest_label,
                tree=forest_tree,
                expect_engine="compiled-trees",
            ),
        ]
        if not args.skip_mlserver:
            targets.append(start_mlserver(stack, work, store, meta.version, row))
        targets.append(start_floor(stack, work, targets[0].body))
        points = measure(targets, conns, args.duration, args.runs)

    pipeline_points: list[Point] = []
    pstore = None if args.skip_pipelines else work / "pipelines"
    metas = publish_pipelines(pstore) if pstore is not None else {}
    print("\nin-process, one thread: predict_proba per call", flush=True)
    engine_rows = in_process(store, forest_tree, pstore)
    if pstore is not None:
        print("\npipelines at 8 connections (interleaved runs)", flush=True)
        for name, m in metas.items():
            x_row = m.verification.inputs[0]
            with ExitStack() as stack:
                pair = [
                    serve(
                        stack,
                        work,
                        pstore,
                        name,
                        x_row,
                        m.feature_names,
                        f"{name}, onnxruntime",
                        expect_engine="onnxruntime",
                    ),
                    serve(
                        stack,
                        work,
                        pstore,
                        name,
                        x_row,
                        m.feature_names,
                        f"{name}, scikit-learn",
                        env={"PREDICT_ENGINE": "sklearn"},
                        expect_engine="sklearn",
                    ),
                ]
                pipeline_points += measure(pair, [8], args.duration, args.runs)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"engines-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "forest_commit": sha.strip(),
                "points": [asdict(p) for p in points + pipeline_points],
                "in_process_us": engine_rows,
            },
            indent=2,
        )
    )
    table(points, conns)
    for c in conns:
        print(f"onnxruntime / compiled forest rps at {c} conn: {ratio(points, ort_label, forest_label, c):.2f}x")
    if pipeline_points:
        table(pipeline_points, [8])
        floor = next(p.rps for p in points if p.server == FLOOR_LABEL and p.connections == 8) if 8 in conns else None
        for name in ("logistic", "gradient-boosting"):
            r = ratio(pipeline_points, f"{name}, onnxruntime", f"{name}, scikit-learn", 8)
            print(f"{name}: onnxruntime / scikit-learn rps at 8 conn: {r:.1f}x", end="")
            if floor is not None:  # no engine can take a service past the floor
                fallback = next(p.rps for p in pipeline_points if p.server == f"{name}, scikit-learn")
                print(f" (the HTTP floor is {floor / fallback:.1f}x the fallback)", end="")
            print()
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
