"""Processes the harness starts: each in its own process group, with its log file, in a registry until it
is stopped and its whole process group is gone.

Every process started here is in a registry until it is stopped and its whole process group is gone:
the session-end check of tests/conftest.py, the demo and the benchmarks read it to prove that nothing
they started outlives them (see ``stop_leftovers`` and ``leaves_nothing_running``). Each server class is a
context manager, so a fixture that starts several can hold them in a ``contextlib.ExitStack``: a failure,
skip or KeyboardInterrupt while starting the next one still stops the ones before it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
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
from typing import Self

ROOT = Path(__file__).resolve().parent.parent  # the checkout: the harness is for development only
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


def wait_http(url: str, server: Server, timeout: float = 120) -> None:
    """Until ``url`` answers 200, failing early (with the log's tail) if ``server`` exits."""
    wait_until(lambda: http_ok(url), timeout, url, server.proc, server.log)


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
