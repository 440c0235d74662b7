"""The stand-in Pushgateway (devharness/pushgateway_standin.py) against the real one as the oracle: the same
pushes, PUT, POST, DELETE, base64 grouping keys and a bad body, must leave the same samples behind."""

from __future__ import annotations

import base64
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devharness import Server, free_port, http_ok, wait_until
from devharness.servers import Pushgateway

FIRST = """# TYPE job_rows gauge
job_rows{table="a"} 10
job_rows{table="b"} 2.5e+06
# TYPE job_success gauge
job_success 1
"""
SECOND = """# TYPE job_rows gauge
job_rows{table="a"} 11
"""


def pushes(url: str) -> list[int]:
    """One scenario; returns each answer's status."""
    b64 = base64.urlsafe_b64encode(b"a/b").decode().rstrip("=")
    codes = []
    with httpx.Client(base_url=url) as c:
        for method, path, body in [
            ("PUT", "/metrics/job/features", FIRST),
            ("POST", "/metrics/job/features", SECOND),  # replaces job_rows only: job_success stays
            ("PUT", "/metrics/job/materialize/instance/x", FIRST),
            ("PUT", "/metrics/job/materialize/instance/x", SECOND),  # replaces the whole group
            ("PUT", f"/metrics/job/drift/path@base64/{b64}", SECOND),
            ("PUT", "/metrics/job/gone", FIRST),
            ("DELETE", "/metrics/job/gone", ""),
            ("PUT", "/metrics/job/features", "this is { not metrics"),  # refused, nothing changes
        ]:
            codes.append(c.request(method, path, content=body).status_code)
    return codes


def samples(url: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for fam in text_string_to_metric_families(text)
        if fam.name.startswith("job_")
        for s in fam.samples
    }


def standin(tmp_path: Path) -> Server:
    listen = f"127.0.0.1:{free_port()}"
    srv = Server([sys.executable, "-m", "devharness.pushgateway_standin", f"--listen={listen}"], tmp_path / "s.log")
    srv.url = f"http://{listen}"  # type: ignore[attr-defined]
    wait_until(lambda: http_ok(f"http://{listen}/-/ready"), 20, "stand-in", srv.proc, srv.log)
    return srv


def test_the_standin_keeps_what_the_pushgateway_keeps(tmp_path: Path) -> None:
    expected = {
        ("job_rows", (("instance", ""), ("job", "features"), ("table", "a")), 11.0),
        ("job_success", (("instance", ""), ("job", "features")), 1.0),
        ("job_rows", (("instance", "x"), ("job", "materialize"), ("table", "a")), 11.0),
        ("job_rows", (("instance", ""), ("job", "drift"), ("path", "a/b"), ("table", "a")), 11.0),
    }
    with standin(tmp_path) as s:
        codes = pushes(s.url)  # type: ignore[attr-defined]
        assert samples(s.url) == expected  # type: ignore[attr-defined]
    assert codes[:-1] == [200, 200, 200, 200, 200, 200, 202] and codes[-1] == 400
    if shutil.which("prometheus-pushgateway") is None:
        pytest.skip("prometheus-pushgateway not installed: the stand-in was checked against the expected samples")
    with Pushgateway(tmp_path / "real") as real:
        assert "devharness" not in " ".join(real.argv)
        assert pushes(real.url) == codes
        assert samples(real.url) == expected
