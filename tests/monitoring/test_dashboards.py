"""Every dashboard panel and alert rule against a real Prometheus scraping our real services under
traffic: each panel must return data. Prometheus and the Pushgateway come from Debian (installed by
.ci/run); elsewhere the test skips with the reason."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
import yaml

import devharness
from devharness import (
    ROOT,
    GunicornService,
    Pushgateway,
    RedisServer,
    Server,
    Stoppable,
    TritonServer,
    debian_binary,
    free_port,
    http_ok,
    wait_until,
)
from jobs.settings import REFERENCE_REPO
from tests.multimodal.trained import Trained
from tests.preprocess.conftest import trained, triton  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timed]


def dashboards() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("build", ROOT / "charts" / "ml-platform" / "dashboards" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.DASHBOARDS)


TRAFFIC_DEADLINE_S = 90

PANELS = [(uid, title, expr) for uid, (_, panels) in dashboards().items() for title, _, expr in panels]


class Prometheus(Stoppable):
    def __init__(self, workdir: Path, targets: dict[str, str]) -> None:
        binary = debian_binary("prometheus", "prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.at: float | None = None
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "honor_labels": job == "pushgateway", "static_configs": [{"targets": [t]}]}
                for job, t in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.server = Server(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            workdir / "prometheus.log",
        )
        try:
            wait_until(lambda: http_ok(self.url + "/-/ready"), 30, "prometheus", self.server.proc, self.server.log)
        except BaseException:
            self.server.stop()
            raise

    def query(self, expr: str) -> dict[str, Any]:
        """The expression at ``self.at`` (a fixed time, once the fixture has set it), else now."""
        params = {"query": expr, **({"time": f"{self.at:.3f}"} if self.at is not None else {})}
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            result: dict[str, Any] = json.load(r)
            return result

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def monitored_platform(
    work: Path, trained_store: Path, triton_url: str, triton_metrics: str, image: bytes, title: str
) -> Iterator[Prometheus]:
    """Redis, the Pushgateway, the three services and Prometheus scraping them all, after traffic on every
    path a panel looks at. Each server joins the ExitStack as it starts: whatever stops the setup (a failure,
    the skip for a missing binary, Ctrl-C) stops every one started before it."""
    from tests.features.conftest import T0

    with ExitStack() as started:
        rs = started.enter_context(RedisServer(work / "redis"))
        gw = started.enter_context(Pushgateway(work / "pgw"))
        env = {
            "FEATURES_REDIS_URL": rs.url,
            "FEATURES_OFFLINE_URL": str(work / "offline"),
            "FEATURES_PUSHGATEWAY_URL": gw.url,
        }
        start = (T0 - timedelta(days=3)).date().isoformat()
        for args in (
            ["seed", "--users", "50", "--days", "3", "--start", start],
            ["features", "--users", "50", "--days", "3", "--start", start],
            ["materialize-incremental"],
        ):
            subprocess.run(
                [sys.executable, "-m", "jobs", *args],
                cwd=ROOT,
                env={**os.environ, **env},
                check=True,
                capture_output=True,
            )
        predict = started.enter_context(GunicornService(work / "predict", {"MODEL_STORE_URL": str(trained_store)}))
        features = started.enter_context(
            GunicornService(
                work / "features",
                {"FEATURES_REDIS_URL": rs.url, "FEATURES_REPO": REFERENCE_REPO},
                app="app.featureserver.main:app",
            )
        )
        preprocess = started.enter_context(
            GunicornService(work / "preprocess", {"PREPROCESS_TRITON_URL": triton_url}, app="app.preprocess.main:app")
        )
        for s in (predict, features, preprocess):
            s.wait_ready()
        scorer_metrics = f"127.0.0.1:{free_port()}"
        started.enter_context(
            Server(
                [sys.executable, "-m", "app.stream"],
                work / "stream.log",
                env={
                    "MODEL_STORE_URL": str(trained_store),
                    "STREAM_REDIS_URL": rs.url,
                    "STREAM_MODEL": "iris",
                    "STREAM_METRICS_ADDRESS": "127.0.0.1",
                    "STREAM_METRICS_PORT": scorer_metrics.rsplit(":", 1)[1],
                },
            )
        )
        prom = started.enter_context(
            Prometheus(
                work / "prometheus",
                {
                    "predict": predict.url.removeprefix("http://"),
                    "featureserver": features.url.removeprefix("http://"),
                    "preprocess": preprocess.url.removeprefix("http://"),
                    "triton": triton_metrics,
                    "pushgateway": gw.url.removeprefix("http://"),
                    "stream": scorer_metrics,
                },
            )
        )
        # Traffic on every path a panel looks at, in rounds, until every panel has the samples it needs at one
        # fixed evaluation time (a rate needs two differing samples in its window; where the scrapes fall on a
        # loaded machine varies). The tests then query at that time, so each answer is fixed.
        names = httpx.get(predict.url + "/v1/models/iris").json()["features"]
        names_only = [f["name"] for f in names]
        stream = redis.Redis.from_url(rs.url)
        row = {f["name"]: 1.0 for f in names}
        deadline = time.monotonic() + TRAFFIC_DEADLINE_S
        for n in itertools.count():
            httpx.post(predict.url + "/v1/models/iris/predict", json={"instances": [row] * 3})
            httpx.post(
                predict.url + "/v2/models/iris/infer",
                json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]},
            )
            httpx.post(
                features.url + "/v1/features",
                json={"entities": {"user_id": [1, 2, 999]}, "features": ["user_stats:txn_count_7d"]},
            )
            httpx.post(preprocess.url + "/v1/classify", files={"image": ("a.jpg", image)}, data={"text": title})
            httpx.post(preprocess.url + "/v1/classify", files={"image": ("a.jpg", b"nope")}, data={"text": "x"})
            event: dict[Any, Any] = {"event_id": f"m{n}", "event_time_ms": int(time.time() * 1000), "user_id": 1}
            stream.xadd("transactions:{0}", {**event, "amount": 5.0, **dict.fromkeys(names_only, 1.0)})
            stream.xadd("transactions:{0}", {"event_id": f"bad{n}"})  # malformed: a dead letter
            time.sleep(1.0)
            # Samples older than two scrape intervals are all written: an answer at that time stays the same.
            prom.at = time.time() - 2.0
            if n >= 2 and all(panel_has_data(prom, expr) for _, _, expr in PANELS):
                break
            if time.monotonic() > deadline:
                break  # the tests name the panels still without data
        yield prom


@pytest.fixture(scope="session")
def monitoring_binaries() -> None:
    """Skips (fails under CI) before a model is trained or a server started, when Debian's binaries are missing."""
    debian_binary("prometheus", "prometheus")
    debian_binary("prometheus-pushgateway", "prometheus-pushgateway")


@pytest.fixture(scope="module")
def prometheus(
    monitoring_binaries: None,
    trained_store: Path,
    triton: TritonServer,  # noqa: F811
    trained: Trained,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Prometheus]:
    listing = trained.held_out[0]
    with monitored_platform(
        tmp_path_factory.mktemp("monitoring"),
        trained_store,
        triton.url,
        f"127.0.0.1:{triton.metrics_port}",
        listing.image,
        listing.title,
    ) as prom:
        yield prom


def test_a_skip_while_starting_leaves_nothing_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: Redis starts first, then the second server's binary is missing and the test skips; the Redis
    must not outlive the skip. (A missing Pushgateway no longer skips: the harness starts its stand-in.)"""
    monkeypatch.delenv("CI", raising=False)  # under CI a missing binary fails instead of skipping

    def missing(*args: object) -> None:
        debian_binary("no-such-pushgateway", "prometheus-pushgateway")

    monkeypatch.setattr(sys.modules[__name__], "Pushgateway", missing)
    since = devharness.last_seq()
    with (
        pytest.raises(pytest.skip.Exception, match="no-such-pushgateway not installed"),
        monitored_platform(tmp_path, tmp_path / "store", "127.0.0.1:1", "127.0.0.1:1", b"", ""),
    ):
        pytest.fail("the platform started without a Pushgateway")
    started = devharness.history(since)
    assert [Path(s.argv[0]).name for s in started] == ["valkey-server"], started  # the path, taken
    assert devharness.registered(since) == []
    assert [s for s in started if devharness.group_members(s.pid)] == []


@pytest.mark.parametrize(("dashboard", "panel", "expr"), PANELS, ids=[f"{d}:{t}" for d, t, _ in PANELS])
def test_every_panel_returns_data(prometheus: Prometheus, dashboard: str, panel: str, expr: str) -> None:
    out = prometheus.query(expr)
    assert out["status"] == "success", out
    values = [float(r["value"][1]) for r in out["data"]["result"]]
    # quantiles of series idle in the window are NaN (Grafana draws a gap); the panel needs real numbers
    assert any(np.isfinite(v) for v in values), (
        f"{dashboard} / {panel}: no data at {prometheus.at} for {expr}: {values}"
    )


def panel_has_data(prometheus: Prometheus, expr: str) -> bool:
    out = prometheus.query(expr)
    return out["status"] == "success" and any(np.isfinite(float(r["value"][1])) for r in out["data"]["result"])


def test_alert_rules_evaluate(prometheus: Prometheus) -> None:
    """Each alert expression of the charts is valid PromQL against the real series (the firing ones may be empty)."""
    p = subprocess.run(
        [
            str(Path(sys.executable).parent / "helm"),
            "template",
            "mlp",
            str(ROOT / "charts" / "ml-platform"),
            *("--api-versions", "monitoring.coreos.com/v1"),  # the rules render only where the CRD exists
            # the Materialization* and FeatureJob* rules render only where the jobs push somewhere (issue 25)
            *("--set", "featurestore.materialize.pushgatewayUrl=http://pushgateway:9091"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rules = [
        r
        for d in yaml.safe_load_all(p.stdout)
        if d and d["kind"] == "PrometheusRule"
        for g in d["spec"]["groups"]
        for r in g["rules"]
    ]
    assert len(rules) >= 13  # predict, featurestore, multimodal, stream, and the monitoring rules
    for rule in rules:
        out = prometheus.query(rule["expr"])
        assert out["status"] == "success", (rule["alert"], out)


def test_ctrl_c_while_prometheus_starts_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules[__name__], "wait_until", interrupted)
    since = devharness.last_seq()
    with pytest.raises(KeyboardInterrupt):
        Prometheus(tmp_path / "prometheus", {})
    [started] = devharness.history(since)  # it did start ...
    assert devharness.registered(since) == [] and devharness.group_members(started.pid) == []  # ... and stopped
