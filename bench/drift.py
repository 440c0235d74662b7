"""Drift computation benchmark against Evidently, in one run on one machine.

    python -m bench.drift [--rows 1000000] [--ref-rows 200000] [--features 20] [--skip-evidently]
    python -m bench.drift --serving [--duration 10] [--runs 3]

The same data for both: a reference of ``--ref-rows`` x ``--features`` standard normals and a served set
of ``--rows`` rows where f3 is shifted by 0.5 std, as Parquet files (row groups of 100,000 rows).
Evidently (its latest release, with pandas < 3, which it needs) runs from its own virtualenv,
bench/.venvs/evidently, created on first use.

Measures, each side in its own process (wall time from reading the files to the drift values, peak RSS
of the process, imports excluded from the time but not from the RSS):

* ours: the reference profile computed from the reference file (column by column), the served file
  binned row group by row group (as serving bins requests: counts, never rows), all statistics of
  app/monitoring/drift.py;
* Evidently: ``Report([DataDriftPreset()])`` on the two DataFrames (its default test for numeric
  columns of this size is the normalized Wasserstein distance).

Agreement: the reference and the first served rows quantized to our bins (each value replaced by its
bin's representative), so both compute on the same binning; Evidently's own Jensen-Shannon and normalized
Wasserstein functions against ours (to 1e-6), and our PSI against the textbook sum written out in
Python. Detection: a 0.5 std shift of one feature in one 5,000-row window flagged on that feature alone,
and the false-alarm rate over 100 no-drift windows, at the default thresholds.

``--serving``: the cost of monitoring in the prediction service. The benchmark's reference model (20
features, 50 trees) under gunicorn with 2 workers, monitoring on (``MONITORING_ENABLED=true``, the
default) and off, alternated ``--runs`` times in the same run; wrk with 64 keep-alive connections posting
one v1 row for ``--duration`` seconds; requests per second and the workers' resident memory after the load.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
EVIDENTLY_VENV = ROOT / "bench" / ".venvs" / "evidently"
EVIDENTLY_PINS = ["evidently", "pandas<3"]  # the latest Evidently imports pandas internals pandas 3 removed
ROW_GROUP = 100_000
SHIFTED = "f3"

OURS = """
import json, resource, sys, time
import numpy as np, pyarrow.parquet as pq
from app.monitoring.drift import Histograms, compare
from app.monitoring.profile import ReferenceProfile, bin_rows, numeric_profile
ref_path, cur_path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
# The reference one column at a time (as a train job with a large training set would), then the served rows
# one row group at a time: only bin counts are kept, as in serving.
ref = pq.ParquetFile(ref_path)
names = ref.schema_arrow.names
features = {n: numeric_profile(ref.read(columns=[n], use_threads=False).column(0).to_numpy()) for n in names}
profile = ReferenceProfile(features=features, score=numeric_profile(np.zeros(1)))
served = pq.ParquetFile(cur_path)
counts = None
for i in range(served.metadata.num_row_groups):
    group = served.read_row_group(i, use_threads=False)
    x = np.column_stack([c.to_numpy() for c in group.columns])
    del group
    got = bin_rows(profile, x, None)
    counts = got if counts is None else {k: counts[k] + v for k, v in got.items()}
result = compare(profile, Histograms(counts))
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "drifted": [d.feature for d in result if d.drifted]}))
"""

EVIDENTLY = """
import json, resource, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref_path, cur_path = sys.argv[1], sys.argv[2]
t = time.perf_counter()
ref = pd.read_parquet(ref_path)
cur = pd.read_parquet(cur_path)
snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
values = snapshot.dict()
seconds = time.perf_counter() - t
drifted = []
for m in values["metrics"]:
    cfg = m["config"]
    if cfg.get("type", "").endswith("ValueDrift") and m["value"] >= cfg["threshold"]:
        drifted.append(cfg["column"])
import evidently
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "drifted": drifted, "version": evidently.__version__}))
"""

AGREEMENT = """
import json, sys
import pandas as pd
from evidently.legacy.core import ColumnType
from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
from evidently.legacy.calculations.stattests.wasserstein_distance_norm import _wasserstein_distance_norm
ref = pd.read_parquet(sys.argv[1])
cur = pd.read_parquet(sys.argv[2])
out = {}
for c in ref.columns:
    js, _ = _jensenshannon(ref[c], cur[c], ColumnType.Numerical, 0.1)
    w, _ = _wasserstein_distance_norm(ref[c], cur[c], ColumnType.Numerical, 0.1)
    out[c] = {"js": float(js), "wasserstein": float(w)}
print(json.dumps(out))
"""


def ensure_evidently() -> Path:
    py = EVIDENTLY_VENV / "bin" / "python"
    check = [str(py), "-c", "import evidently.presets, pandas; assert int(pandas.__version__.split('.')[0]) < 3"]
    if not py.exists() or subprocess.run(check, check=False, capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", str(EVIDENTLY_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *EVIDENTLY_PINS], check=True)
    return py


def write_data(work: Path, rows: int, ref_rows: int, features: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    ref_path, cur_path = work / "reference.parquet", work / "served.parquet"
    # Plain encoding: random doubles do not dictionary-encode, and the failed attempt costs every reader memory.
    ref = pa.table(dict(zip(names, rng.normal(size=(features, ref_rows)), strict=True)))
    pq.write_table(ref, ref_path, use_dictionary=False, row_group_size=ROW_GROUP)
    with pq.ParquetWriter(cur_path, pa.schema([(n, pa.float64()) for n in names]), use_dictionary=False) as w:
        for lo in range(0, rows, ROW_GROUP):
            part = rng.normal(size=(features, min(ROW_GROUP, rows - lo)))
            part[names.index(SHIFTED)] += 0.5
            w.write_table(pa.table(dict(zip(names, part, strict=True))))
    return ref_path, cur_path


def run_child(python: Path, code: str, *args: str) -> dict[str, Any]:
    p = subprocess.run([str(python), "-c", code, *args], check=False, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"{python} failed:\n{p.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return result


def agreement(work: Path, ref_path: Path, cur_path: Path, evidently_py: Path | None) -> dict[str, Any]:
    """Evidently's JS and Wasserstein on data quantized to our bins, against ours; PSI against the textbook."""
    from app.monitoring.drift import Histograms, compare
    from app.monitoring.profile import NumericProfile, bin_rows, compute_profile

    ref = pq.read_table(ref_path)
    names = ref.column_names
    x_ref = np.column_stack([c.to_numpy() for c in ref.columns])
    x_cur = np.column_stack([c.to_numpy() for c in pq.ParquetFile(cur_path).read_row_group(0).columns])
    profile = compute_profile(x_ref, names, np.zeros(1))
    ours = {d.feature: d.statistics for d in compare(profile, Histograms(bin_rows(profile, x_cur, None)))}

    textbook = 0.0
    for name in names:  # PSI written out bin by bin, floors as in drift.py
        fp = profile.features[name]
        assert isinstance(fp, NumericProfile)
        cur_counts = bin_rows(profile, x_cur, None)[name]
        psi = 0.0
        for e, a in zip(fp.counts, cur_counts.tolist(), strict=True):
            p, q = max(e / sum(fp.counts), 1e-4), max(a / len(x_cur), 1e-4)
            psi += (q - p) * math.log(q / p)
        textbook = max(textbook, abs(psi - ours[name]["psi"]))
    out: dict[str, Any] = {"psi_max_abs_diff_vs_textbook": textbook}
    if evidently_py is None:
        return out

    def quantize(x: np.ndarray) -> pa.Table:
        cols = {}
        for j, name in enumerate(names):
            fp = profile.features[name]
            assert isinstance(fp, NumericProfile)
            cols[name] = fp.representatives()[np.searchsorted(np.asarray(fp.edges), x[:, j], side="right")]
        return pa.table(cols)

    q_ref, q_cur = work / "q-reference.parquet", work / "q-served.parquet"
    pq.write_table(quantize(x_ref), q_ref)
    pq.write_table(quantize(x_cur), q_cur)
    theirs = run_child(evidently_py, AGREEMENT, str(q_ref), str(q_cur))
    for stat in ("js", "wasserstein"):
        out[f"{stat}_max_abs_diff_vs_evidently"] = max(abs(theirs[n][stat] - ours[n][stat]) for n in names)
    out["example"] = {SHIFTED: {"ours": ours[SHIFTED], "evidently": theirs[SHIFTED]}}
    return out


def detection(features: int, ref_rows: int, window: int = 5000, windows: int = 100, seed: int = 1) -> dict[str, Any]:
    from app.monitoring.drift import Histograms, compare
    from app.monitoring.profile import bin_rows, compute_profile

    rng = np.random.default_rng(seed)
    names = [f"f{i}" for i in range(features)]
    profile = compute_profile(rng.normal(size=(ref_rows, features)), names, np.zeros(1))
    shifted = rng.normal(size=(window, features))
    shifted[:, names.index(SHIFTED)] += 0.5
    flagged = [d.feature for d in compare(profile, Histograms(bin_rows(profile, shifted, None))) if d.drifted]
    alarms = 0
    for _ in range(windows):
        result = compare(profile, Histograms(bin_rows(profile, rng.normal(size=(window, features)), None)))
        alarms += any(d.drifted for d in result)
    return {
        "shift_window_rows": window,
        "shift_flagged": flagged,
        "shift_flagged_alone": flagged == [SHIFTED],
        "no_drift_windows": windows,
        "false_alarm_windows": alarms,
        "false_alarm_rate": alarms / windows,
    }


def _worker_rss_mb(master: int) -> list[float]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    out = []
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        out.append(int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:"))) / 1024)
    return out


def _worker_cpu_s(master: int) -> float:
    """User + system CPU seconds of the master's worker processes so far."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def serving(duration: int, runs: int, connections: int = 64) -> dict[str, Any]:
    import shutil
    import statistics

    from app.modelstore import open_store
    from bench.loadgen import wrk_post
    from devharness import Server, free_port, wait_http
    from jobs.train import train_and_publish

    work = ROOT / "var" / "bench-drift-serving"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "store"
    meta = train_and_publish(open_store(str(store)), dataset="reference", name="reference")
    body = json.dumps({"instances": [dict(zip(meta.feature_names, meta.verification.inputs[0], strict=True))]})
    points: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for run in range(runs):
        for mode in ("on", "off") if run % 2 == 0 else ("off", "on"):  # alternate: drifting load hits both
            port = free_port()
            env = {
                "MODEL_STORE_URL": str(store),
                "BIND": f"127.0.0.1:{port}",
                "WEB_CONCURRENCY": "2",
                "PREDICT_ACCESS_LOG": "false",
                "MONITORING_ENABLED": "true" if mode == "on" else "false",
            }
            argv = [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "app.predict.main:app"]
            with Server(argv, work / f"{mode}-{run}.log", env=env, cwd=ROOT) as srv:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/readyz", srv)
                url = base + "/v1/models/reference/predict"
                wrk_post(url, body.encode(), connections, 2)  # warm-up
                cpu = _worker_cpu_s(srv.proc.pid)
                r = wrk_post(url, body.encode(), connections, duration)
                # CPU per request: what a shared machine's contention changes least (rps moves with it)
                cpu_us = (_worker_cpu_s(srv.proc.pid) - cpu) / max(r.rps * duration, 1) * 1e6
                rss = _worker_rss_mb(srv.proc.pid)
                if mode == "on":
                    metrics = subprocess.run(
                        ["curl", "-s", base + "/metrics"], capture_output=True, text=True, check=False
                    )
                    assert "model_feature_bin_total" in metrics.stdout, "monitoring on but no bin counts"
            p = {
                "rps": r.rps,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "errors": r.errors,
                "worker_cpu_us_per_request": cpu_us,
                "worker_rss_mb": rss,
            }
            points[mode].append(p)
            print(
                f"monitoring {mode:<3} run {run}: {r.rps:,.0f} rps, p99 {r.p99_ms:.1f} ms, "
                f"{cpu_us:.0f} us CPU/request, workers {[round(x, 1) for x in rss]} MB",
                flush=True,
            )
    med = {m: statistics.median(p["rps"] for p in pts) for m, pts in points.items()}
    rss_med = {m: statistics.median(x for p in pts for x in p["worker_rss_mb"]) for m, pts in points.items()}
    cpu_med = {m: statistics.median(p["worker_cpu_us_per_request"] for p in pts) for m, pts in points.items()}
    return {
        "connections": connections,
        "duration_s": duration,
        "runs": runs,
        "points": points,
        "median_rps": med,
        "rps_on_over_off": med["on"] / med["off"],
        "median_worker_cpu_us_per_request": cpu_med,
        "cpu_per_request_on_over_off": cpu_med["on"] / cpu_med["off"],
        "median_worker_rss_mb": rss_med,
        "worker_rss_growth_mb": rss_med["on"] - rss_med["off"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--ref-rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--skip-evidently", action="store_true")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "results" / "drift-data")
    ap.add_argument("--serving", action="store_true", help="measure monitoring's cost in the service instead")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if args.serving:
        cost = serving(args.duration, args.runs)
        out = ROOT / "bench" / "results" / f"drift-serving-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cost, indent=1))
        print(json.dumps({k: v for k, v in cost.items() if k != "points"}, indent=1))
        print(f"written {out}")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    ref_path, cur_path = write_data(args.work, args.rows, args.ref_rows, args.features)
    evidently_py = None if args.skip_evidently else ensure_evidently()
    result: dict[str, Any] = {"rows": args.rows, "ref_rows": args.ref_rows, "features": args.features}
    result["ours"] = run_child(Path(sys.executable), OURS, str(ref_path), str(cur_path))
    print("ours", json.dumps(result["ours"]), flush=True)
    if evidently_py is not None:
        result["evidently"] = run_child(evidently_py, EVIDENTLY, str(ref_path), str(cur_path))
        print("evidently", json.dumps(result["evidently"]), flush=True)
        result["speedup"] = result["evidently"]["seconds"] / result["ours"]["seconds"]
        result["rss_ratio"] = result["evidently"]["peak_rss_mb"] / result["ours"]["peak_rss_mb"]
    result["agreement"] = agreement(args.work, ref_path, cur_path, evidently_py)
    result["detection"] = detection(args.features, args.ref_rows)
    out = ROOT / "bench" / "results" / f"drift-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("ours", "evidently")}, indent=1))
    print(f"written {out}")
    for f in (ref_path, cur_path, args.work / "q-reference.parquet", args.work / "q-served.parquet"):
        f.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
