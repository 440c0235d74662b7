"""Coverage of the models users bring (issue 22): typical scikit-learn pipelines on generated data at mixed scales
(1e-4 to 1e5, integer counts, epoch seconds, a small-integer category, missing values where the model takes
them), each published through `publish_model` as `python -m jobs publish` does, then measured in one run:

- the engine the publisher chose, and why;
- max |Δp| and label flips (away from ties) of the served engine against scikit-learn's predict_proba on the probe
  rows (every split threshold and its float64 and float32 neighbours, large values, NaN) and on fresh rows;
- in-process latency of both engines on 1 row (the publisher's own timing, median);
- the service's requests per second at 8 connections (wrk, one gunicorn serving every pipeline).

    python -m bench.coverage [--duration 3] [--no-service]

What it covers: these pipelines on this generated data. It says nothing of other data; the probe rows are what
make the parity figures hold beyond the rows drawn here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from bench.loadgen import wrk_post
from devharness import ROOT, Server, free_port, leaves_nothing_running, wait_http

RESULTS = ROOT / "bench" / "results"
FEATURES = ["tiny", "count", "amount", "ts", "z", "channel"]


def data(seed: int, rows: int, classes: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(0, 1e-4, rows),
            rng.integers(0, 50, rows).astype(np.float64),
            rng.lognormal(8, 1.5, rows).clip(max=1e5),
            rng.uniform(1.1e9, 1.8e9, rows).round(),
            rng.normal(size=rows),
            rng.integers(0, 4, rows).astype(np.float64),
        ]
    )
    score = x[:, 0] * 1e4 + x[:, 1] / 25 + (x[:, 3] > 1.45e9) + x[:, 4] + 0.3 * x[:, 5] + rng.normal(0, 0.5, rows)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])).astype(np.int64)
    return x, y


def pipelines() -> dict[str, tuple[Callable[[], Any], int, float]]:
    """name -> (unfitted estimator, classes, share of missing amounts)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        RandomForestClassifier,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    def columns(final: Any) -> Any:
        prep = ColumnTransformer(
            [("num", StandardScaler(), [0, 1, 2, 3, 4]), ("cat", OneHotEncoder(handle_unknown="ignore"), [5])]
        )
        return make_pipeline(prep, final)

    return {
        "random-forest": (lambda: RandomForestClassifier(50, max_depth=10, random_state=0), 2, 0.0),
        "extra-trees": (lambda: ExtraTreesClassifier(50, max_depth=10, random_state=0), 2, 0.0),
        "decision-tree": (lambda: DecisionTreeClassifier(max_depth=10, random_state=0), 2, 0.0),
        "gbm": (lambda: GradientBoostingClassifier(random_state=0), 2, 0.0),
        "gbm-4-classes": (lambda: GradientBoostingClassifier(n_estimators=50, random_state=0), 4, 0.0),
        "hist-gbm": (lambda: HistGradientBoostingClassifier(random_state=0), 2, 0.0),
        "hist-gbm-4-classes": (lambda: HistGradientBoostingClassifier(max_iter=50, random_state=0), 4, 0.0),
        "hist-gbm-missing": (lambda: HistGradientBoostingClassifier(random_state=0), 2, 0.1),
        "forest-missing": (lambda: RandomForestClassifier(50, max_depth=10, random_state=0), 2, 0.1),
        "standard-forest": (
            lambda: make_pipeline(StandardScaler(), RandomForestClassifier(50, max_depth=10, random_state=0)),
            2,
            0.0,
        ),
        "standard-extra-trees": (
            lambda: make_pipeline(StandardScaler(), ExtraTreesClassifier(50, random_state=0)),
            2,
            0.0,
        ),
        "minmax-gbm": (lambda: make_pipeline(MinMaxScaler(), GradientBoostingClassifier(random_state=0)), 2, 0.0),
        "robust-tree": (lambda: make_pipeline(RobustScaler(), DecisionTreeClassifier(random_state=0)), 2, 0.0),
        "impute-standard-forest": (
            lambda: make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), RandomForestClassifier(50)),
            2,
            0.1,
        ),
        "columns-forest": (lambda: columns(RandomForestClassifier(50, max_depth=10, random_state=0)), 2, 0.0),
        "columns-logistic": (lambda: columns(LogisticRegression(max_iter=1000)), 2, 0.0),
        "logistic": (lambda: LogisticRegression(max_iter=1000), 2, 0.0),
        "standard-logistic": (lambda: make_pipeline(StandardScaler(), LogisticRegression()), 2, 0.0),
        "multinomial-4-classes": (lambda: make_pipeline(StandardScaler(), LogisticRegression()), 4, 0.0),
        "impute-standard-logistic": (
            lambda: make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression()),
            2,
            0.1,
        ),
        "standard-svc": (lambda: make_pipeline(StandardScaler(), SVC(probability=True, random_state=0)), 2, 0.0),
        "standard-mlp": (
            lambda: make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=300, random_state=0)),
            2,
            0.0,
        ),
        "standard-calibrated": (
            lambda: make_pipeline(StandardScaler(), CalibratedClassifierCV(LogisticRegression(), cv=3)),
            2,
            0.0,
        ),
        "standard-knn": (lambda: make_pipeline(StandardScaler(), KNeighborsClassifier()), 2, 0.0),
        "gaussian-nb": (GaussianNB, 2, 0.0),
    }


def parity(
    est: Any, graph: bytes | None, rows: NDArray[np.float64], expected: NDArray[np.float64]
) -> tuple[float, int]:
    from app.onnx.parity import compare_probabilities
    from app.onnx.session import OnnxPredictor

    if graph is None or len(rows) == 0:
        return 0.0, 0  # scikit-learn serves: the engine is the oracle
    got = OnnxPredictor(graph, rows.shape[1], intra_op_threads=1, inter_op_threads=1).predict_proba(rows)
    report = compare_probabilities(got, expected, atol=1e-6)
    return report.max_abs_diff, report.label_flips


@leaves_nothing_running("bench.coverage")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds of wrk per pipeline")
    parser.add_argument("--no-service", action="store_true", help="skip the HTTP measurement")
    args = parser.parse_args()

    from app.modelstore import LocalModelStore
    from app.modelstore.own_models import publish_model
    from app.onnx.publishing import checked_rows

    work = ROOT / "var" / "bench-coverage" / time.strftime("%Y%m%dT%H%M%S")
    store = LocalModelStore(work / "store")
    results: list[dict[str, Any]] = []
    rows: dict[str, list[float]] = {}
    for i, (name, (make, classes, missing)) in enumerate(pipelines().items(), 1):
        x, y = data(i, 4000, classes)
        fresh, _ = data(1000 + i, 2000, classes)
        if missing:
            x[np.random.default_rng(i).random(len(x)) < missing, 2] = np.nan
            fresh[np.random.default_rng(i + 1).random(len(fresh)) < missing, 2] = np.nan
        est = make().fit(x[:3000], y[:3000])
        table = pa.table({**{f: x[3000:, j] for j, f in enumerate(FEATURES)}, "label": y[3000:]})
        t0 = time.perf_counter()
        published = publish_model(store, est, name=name, reference=table, target="label", categorical=["channel"])
        seconds = time.perf_counter() - t0
        meta = published.meta
        graph = store.read_onnx(meta) if meta.onnx is not None and published.engine == "onnxruntime" else None
        # fresh rows, then the probes built from the model (less those scikit-learn itself refuses: past float32)
        checked, expected, n_probes = checked_rows(est, fresh, est.predict_proba(fresh))
        probe_dp, probe_flips = parity(est, graph, checked[len(fresh) :], expected[len(fresh) :])
        fresh_dp, fresh_flips = parity(est, graph, checked[: len(fresh)], expected[: len(fresh)])
        timing = meta.engine_choice.seconds if meta.engine_choice else {}
        result = {
            "pipeline": name,
            "engine": published.engine,
            "why": published.engine_reason,
            "probe_rows": n_probes,
            "probe_max_abs_diff": probe_dp,
            "probe_label_flips": probe_flips,
            "fresh_max_abs_diff": fresh_dp,
            "fresh_label_flips": fresh_flips,
            "onnxruntime_us_1_row": timing.get("onnxruntime", {}).get(1, float("nan")) * 1e6,
            "sklearn_us_1_row": timing.get("sklearn", {}).get(1, float("nan")) * 1e6,
            "publish_seconds": round(seconds, 1),
        }
        results.append(result)
        rows[name] = [None if np.isnan(v) else float(v) for v in x[3000]]  # type: ignore[misc]
        print(
            f"{name:<26} {published.engine:<12} probes {n_probes:>6} |dp| {probe_dp:.1e} flips {probe_flips}  "
            f"fresh |dp| {fresh_dp:.1e}  ort {result['onnxruntime_us_1_row']:.0f} µs  "
            f"sklearn {result['sklearn_us_1_row']:.0f} µs",
            flush=True,
        )
    if not args.no_service:
        with ExitStack() as stack:
            port = free_port()
            env = {"MODEL_STORE_URL": str(store.root), "BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2"}
            argv = [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "app.predict.main:app"]
            srv = stack.enter_context(Server(argv, work / "service.log", env=env))
            wait_http(f"http://127.0.0.1:{port}/readyz", srv, timeout=300)
            for result in results:
                name = str(result["pipeline"])
                body = json.dumps({"instances": [dict(zip(FEATURES, rows[name], strict=True))]}).encode()
                url = f"http://127.0.0.1:{port}/v1/models/{name}/predict"
                wrk_post(url, body, 8, 1)  # warm
                got = wrk_post(url, body, 8, args.duration)
                result["rps_8_connections"] = got.rps
                result["errors"] = got.errors
                print(f"{name:<26} {got.rps:>8.0f} rps at 8 connections, errors {got.errors}", flush=True)
    on_ort = [r for r in results if r["engine"] == "onnxruntime"]
    summary = {
        "pipelines": len(results),
        "on_onnxruntime": len(on_ort),
        "share_on_onnxruntime": len(on_ort) / len(results),
        "outside_tolerance": [
            r["pipeline"]
            for r in results
            if max(r["probe_max_abs_diff"], r["fresh_max_abs_diff"]) > 1e-6 or r["probe_label_flips"]
        ],
    }
    print(json.dumps(summary))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"coverage-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps({"command": "python -m bench.coverage", "summary": summary, "results": results}, indent=1)
    )
    print(f"results: {out}")
    return 0 if not summary["outside_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
