"""The service's life under gunicorn: metrics across workers, hot reload, broken artifacts, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from app.modelstore import LocalModelStore, S3ModelStore, open_store
from app.modelstore.metadata import sha256_hex
from devharness import GunicornService, S3Server, wait_until
from jobs.train import train_and_publish
from tests.predict.helpers import instances, reference

pytestmark = pytest.mark.integration


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_summed_across_workers(store_copy: LocalModelStore, tmp_path: Path) -> None:
    srv = GunicornService(tmp_path / "svc", {"MODEL_STORE_URL": str(store_copy.root)}).wait_ready()
    try:
        ref = reference(store_copy, "iris")
        x = np.asarray(ref.meta.verification.inputs)[:3]
        body = {"instances": instances(ref, x)}
        n = 120
        # a new connection per request, so the kernel spreads them over both workers
        for _ in range(n):
            with httpx.Client() as c:
                assert c.post(srv.url + "/v1/models/iris/predict", json=body).status_code == 200
        pids = {m.group(1) for f in os.listdir(srv.multiproc_dir) if (m := re.search(r"_(\d+)\.db$", f))}
        assert len(pids) >= 2, f"only {pids} wrote metrics"
        text = httpx.get(srv.url + "/metrics").text
        route = "/v1/models/{name}/predict"
        assert metric_sum(text, "http_requests_total", route=route, status="200") == n
        assert metric_sum(text, "http_request_duration_seconds_count", route=route) == n
        assert metric_sum(text, "model_predictions_total", model="iris") == 3 * n
        assert metric_sum(text, "model_batch_size_rows_sum", model="iris") == 3 * n
        assert metric_sum(text, "model_info", model="iris", version=ref.version) == 1
        assert metric_sum(text, "models_ready") == 1

        # A dead worker's counts survive (counters never go down) and its live gauges are removed.
        worker = int(next(iter(pids - {str(srv.server.pid)})))
        os.kill(worker, signal.SIGKILL)
        # gunicorn reaps the killed worker, so its /proc entry goes away
        wait_until(lambda: not os.path.exists(f"/proc/{worker}"), 10, "worker exit")
        srv.wait_ready()
        time.sleep(1.0)
        text = httpx.get(srv.url + "/metrics").text
        assert metric_sum(text, "http_requests_total", route=route, status="200") == n
        assert not any(
            f.endswith(f"_{worker}.db") and f.startswith("gauge_live") for f in os.listdir(srv.multiproc_dir)
        )
    finally:
        srv.stop()


class Load:
    """Threads sending predictions until stopped; records every outcome."""

    def __init__(self, url: str, body: dict[str, Any], threads: int = 4) -> None:
        self.url, self.body = url, body
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.recent: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                try:
                    r = c.post(self.url, json=self.body)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text}")
                    else:
                        v = r.json()["version"]
                        self.versions[v] += 1
                        self.recent.append(v)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


@pytest.mark.timed
def test_hot_reload_under_load_and_broken_artifacts(
    store_copy: LocalModelStore, tmp_path: Path, started: ExitStack
) -> None:
    srv = started.enter_context(
        GunicornService(tmp_path / "svc", {"MODEL_STORE_URL": str(store_copy.root)}).wait_ready()
    )
    ref = reference(store_copy, "breast-cancer")
    load = Load(
        srv.url + "/v1/models/breast-cancer/predict",
        {"instances": instances(ref, np.asarray(ref.meta.verification.inputs)[:2])},
    )
    try:
        time.sleep(0.5)
        new = train_and_publish(
            store_copy,
            dataset="breast-cancer",
            name="breast-cancer",
            n_estimators=7,
            version="v-new",
        )
        wait_until(lambda: load.recent[-50:].count(new.version) == 50, 20, "all workers on the new version")

        # A broken artifact (valid digest, not a model) becomes latest: it must never be served.
        good_meta, _ = store_copy.read_version("breast-cancer", new.version)
        junk = b"definitely not a pickle"
        broken = good_meta.model_copy(
            update={"version": "v-broken", "sha256": sha256_hex(junk), "size_bytes": len(junk), "onnx": None}
        )
        store_copy.publish(broken, junk)
        wait_until(
            lambda: (
                metric_sum(
                    httpx.get(srv.url + "/metrics").text,
                    "model_load_failures_total",
                    model="breast-cancer",
                    version="v-broken",
                )
                >= 2
            ),
            20,
            "both workers reject the broken version",
        )
        time.sleep(1.0)
        assert load.recent[-50:].count(new.version) == 50
        assert httpx.get(srv.url + "/readyz").status_code == 200
    finally:
        load.stop()
        srv.stop()
    assert load.failures == [], load.failures[:5]
    assert load.versions["v-broken"] == 0
    assert load.versions[ref.version] > 0 and load.versions[new.version] > 0
    log = srv.server.log_text()
    assert "model version rejected" in log and "cannot unpickle" in log


def _raw_request(port: int, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/models/breast-cancer/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    s.sendall(head + body[: len(body) // 2])
    return s


def _read_response(s: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        rest += s.recv(65536)
    return int(head.split()[1]), rest


@pytest.mark.timed
def test_sigterm_drains_in_flight_requests(store_copy: LocalModelStore, tmp_path: Path, started: ExitStack) -> None:
    srv = started.enter_context(
        GunicornService(tmp_path / "svc", {"MODEL_STORE_URL": str(store_copy.root)}).wait_ready()
    )
    ref = reference(store_copy, "breast-cancer")
    body = orjson.dumps({"instances": instances(ref, np.asarray(ref.meta.verification.inputs))})
    # Requests whose bodies are still arriving when SIGTERM lands: in flight by any definition.
    sockets = [_raw_request(srv.port, body) for _ in range(16)]
    load = Load(srv.url + "/v1/models/breast-cancer/predict", orjson.loads(body), threads=2)
    time.sleep(0.5)
    srv.server.signal(signal.SIGTERM)
    time.sleep(1.0)
    for s in sockets:
        s.sendall(body[len(body) // 2 :])
    results = [_read_response(s) for s in sockets]
    load.stop()
    assert srv.server.wait(30) == 0
    assert [status for status, _ in results] == [200] * len(sockets)
    assert all(orjson.loads(b)["version"] == ref.version for _, b in results)
    # Keep-alive clients: requests sent before the listener closed all succeeded; afterwards the
    # only errors are refused/closed connections before a request was sent, never a 5xx.
    assert sum(load.versions.values()) > 0
    assert not [f for f in load.failures if f[:1].isdigit()], load.failures[:5]


@pytest.mark.timed
def test_starts_unready_on_empty_store_and_discovers_models(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    srv = GunicornService(tmp_path / "svc", {"MODEL_STORE_URL": str(root)}).wait_live()
    try:
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and "no models found" in r.json()["error"]
        train_and_publish(LocalModelStore(root), dataset="iris", name="iris", n_estimators=3)
        # Each worker discovers the model on its own poll: within one poll interval all of them serve it.
        wait_until(
            lambda: all(httpx.get(srv.url + "/v2/models/iris/ready").status_code == 200 for _ in range(20)),
            20,
            "every worker serves the new model",
        )
        assert httpx.get(srv.url + "/readyz").status_code == 200
    finally:
        srv.stop()


def test_configured_model_missing_keeps_pod_unready(trained_store: Path, tmp_path: Path) -> None:
    srv = GunicornService(
        tmp_path / "svc", {"MODEL_STORE_URL": str(trained_store), "PREDICT_MODELS": "iris,churn"}
    ).wait_live()
    try:
        time.sleep(1.0)
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and "churn" in r.json()["error"]
        assert httpx.get(srv.url + "/v2/models/churn/ready").status_code == 503
        assert httpx.get(srv.url + "/v2/models/iris/ready").status_code == 200
    finally:
        srv.stop()


def test_serves_from_s3(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket("serve-from-s3")
    url = f"s3://{bucket}/models"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    store = open_store(url, s3_endpoint_url=s3_server.endpoint, s3_region="us-east-1")
    train_and_publish(store, dataset="iris", name="iris", n_estimators=5)
    srv = GunicornService(
        tmp_path / "svc", {"MODEL_STORE_URL": url, "AWS_ENDPOINT_URL_S3": s3_server.endpoint}
    ).wait_ready()
    try:
        store = S3ModelStore(url, client=s3_server.client())
        ref = reference(store, "iris")
        r = httpx.post(
            srv.url + "/v1/models/iris/predict",
            json={"instances": instances(ref, np.asarray(ref.meta.verification.inputs)[:5])},
        )
        assert r.status_code == 200 and r.json()["version"] == store.latest("iris")
    finally:
        srv.stop()


def test_one_broken_model_never_takes_the_pod_out_of_service(store_copy: LocalModelStore, tmp_path: Path) -> None:
    """Issue 22: readiness per model. A model none of whose versions loads is named as failed in /readyz with its
    reason, its requests get 503, and the other models keep the pod ready; an explicit PREDICT_MODELS list makes
    each listed model required."""
    cancer = reference(store_copy, "breast-cancer")
    x = instances(cancer, np.asarray(cancer.meta.verification.inputs[:2]))
    for version in store_copy.list_versions("iris"):
        path = store_copy.root / "iris" / "versions" / version / "metadata.json"
        path.write_text(path.read_text().replace('"verification"', '"verification_"', 1))
    srv = GunicornService(tmp_path / "svc", {"MODEL_STORE_URL": str(store_copy.root)}).wait_ready()
    try:
        body = httpx.get(srv.url + "/readyz").json()
        assert body["models"]["breast-cancer"]["state"] == "ready"
        assert body["models"]["iris"]["state"] == "failed" and "invalid metadata" in body["models"]["iris"]["reason"]
        assert httpx.get(srv.url + "/v2/models/iris/ready").status_code == 503
        assert httpx.post(srv.url + "/v1/models/breast-cancer/predict", json={"instances": x}).status_code == 200
    finally:
        srv.stop()
    env = {"MODEL_STORE_URL": str(store_copy.root), "PREDICT_MODELS": "breast-cancer,iris"}
    srv = GunicornService(tmp_path / "listed", env).wait_live()
    try:
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and "required by PREDICT_MODELS: iris: failed" in r.json()["error"], r.text
    finally:
        srv.stop()
