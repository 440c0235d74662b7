"""``make demo``: the platform end to end on this machine, on embedded defaults.

Trains and publishes two models, starts the prediction service exactly as the
container does (gunicorn + uvicorn workers), queries both APIs, publishes a new
version and watches the service hot-reload it, prints the metrics, and stops
the service with SIGTERM as Kubernetes would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "var" / "demo"
SHOWN_METRICS = ("http_requests_total", "model_predictions_total", "model_info", "models_ready")


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def jobs(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "jobs", "--store", str(WORK / "model-store"), *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    print("   ", out.strip())
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    say("train: scikit-learn pipelines on data that ships with scikit-learn, published to the model store")
    jobs("train", "--dataset", "breast-cancer")
    jobs("train", "--dataset", "reference")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    say(f"serve: gunicorn + uvicorn workers (the container's command) on {url}")
    env = {
        **os.environ,
        "PREDICT_MODEL_STORE_URL": str(WORK / "model-store"),
        "PREDICT_POLL_INTERVAL_SECONDS": "1",
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(WORK / "prometheus"),
    }
    log = open(WORK / "service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:app.common.gunicorn_conf", "app.predict.main:app"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        for _ in range(300):
            try:
                status, ready = http("GET", url + "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            print((WORK / "service.log").read_text()[-3000:])
            raise SystemExit("service did not become ready")
        print("    GET /readyz ->", json.dumps(ready))

        _, meta = http("GET", url + "/v1/models/breast-cancer")
        features = [f["name"] for f in meta["features"]]
        store_meta = json.loads(
            next((WORK / "model-store" / "breast-cancer" / "versions").glob("*/metadata.json")).read_text()
        )
        rows = store_meta["verification"]["inputs"][:2]
        instances = [dict(zip(features, r, strict=True)) for r in rows]

        say("query: readable JSON (v1) with named features")
        print(f"    POST /v1/models/breast-cancer/predict  ({len(features)} named features x 2 instances)")
        status, body = http("POST", url + "/v1/models/breast-cancer/predict", {"instances": instances})
        print("   ", status, json.dumps(body))

        say("query: Open Inference Protocol (KServe V2), as tritonclient/MLServer/KServe clients send it")
        v2 = {"inputs": [{"name": "input-0", "shape": [2, len(features)], "datatype": "FP64", "data": rows}]}
        status, body = http("POST", url + "/v2/models/breast-cancer/infer", v2)
        print("   ", status, json.dumps(body))

        say("bad input gets a clear 4xx naming the problem")
        bad = {"instances": [{**instances[0], "mean_radius": "big"}]}
        print("   ", *http("POST", url + "/v1/models/breast-cancer/predict", bad))

        say("hot reload: publish a new version; the service swaps it in without a restart")
        new = jobs("train", "--dataset", "breast-cancer", "--n-estimators", "80")
        for _ in range(100):
            _, body = http("POST", url + "/v1/models/breast-cancer/predict", {"instances": instances[:1]})
            if body.get("version") == new["version"]:
                break
            time.sleep(0.1)
        print(f"    now serving version {body['version']}")

        say("metrics: one scrape sums every worker (GET /metrics, excerpt)")
        _, text = http("GET", url + "/metrics")
        for line in str(text).splitlines():
            if line.startswith(SHOWN_METRICS):
                print("   ", line)
    finally:
        say("stop: SIGTERM, as a rolling update sends it; in-flight requests finish")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
        print(f"    service exited with {code}; its JSON log is {WORK / 'service.log'}")
    say("demo complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
