"""The process harness (devharness) stops what it starts on every path, and the session-end check of
tests/conftest.py, the demo and the benchmarks notice and kill what leaked (issue 16)."""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import devharness
from devharness import ROOT, Server

LEAK = "devharness.Server(['sleep', '600'], tmp_path / 'sleep.log')"


def gone(pid: int) -> bool:
    return devharness.group_members(pid) == []


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, body: str) -> pytest.RunResult:
    """An inner pytest session in a subprocess (its registry is its own) with our conftest's hooks."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # hypothesis & co. cost seconds, and are not needed
    pytester.makeconftest("from tests.conftest import pytest_sessionfinish, pytest_sessionstart  # noqa: F401")
    pytester.makepyfile(test_inner="import devharness\n\n" + textwrap.dedent(body))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider")


def leaked_pids(result: pytest.RunResult) -> list[int]:
    return [int(p) for p in re.findall(r"pid (\d+): sleep 600 \(log: \S+sleep\.log\)", result.stdout.str())]


def test_session_fails_when_a_test_leaks_a_process(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_inner(pytester, monkeypatch, f"def test_leaks(tmp_path):\n    {LEAK}\n")
    result.assert_outcomes(passed=1)  # the test itself passed: the check is what fails the run
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*processes left running*", "the tests: 1 process(es) *still running*"])
    [pid] = leaked_pids(result)
    assert gone(pid)


def test_session_passes_when_every_process_is_stopped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_inner(pytester, monkeypatch, f"def test_stops(tmp_path):\n    with {LEAK}:\n        pass\n")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "left running" not in result.stdout.str()


def test_interrupted_session_still_kills_and_names_leaks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_inner(pytester, monkeypatch, f"def test_ctrl_c(tmp_path):\n    {LEAK}\n    raise KeyboardInterrupt\n")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    [pid] = leaked_pids(result)
    assert gone(pid)


def test_a_skipping_fixture_stops_what_it_started_first(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pattern of the dashboards fixture: two servers in an ExitStack, the second start skips."""
    body = f"""
    import contextlib
    import pytest

    @pytest.fixture(scope="module")
    def two(tmp_path_factory):
        tmp_path = tmp_path_factory.mktemp("two")
        with contextlib.ExitStack() as started:
            started.enter_context({LEAK})
            pytest.skip("second binary missing")
            yield

    def test_uses(two):
        pass
    """
    result = run_inner(pytester, monkeypatch, body)
    result.assert_outcomes(skipped=1)
    assert result.ret == pytest.ExitCode.OK
    assert "left running" not in result.stdout.str()


def test_stop_also_stops_what_the_leader_left_behind(tmp_path: Path) -> None:
    srv = Server(["sh", "-c", "sleep 600 & echo started; wait"], tmp_path / "sh.log")
    devharness.wait_until(lambda: len(srv.alive()) == 2, 10, "sh and its sleep")
    orphan = next(p for p in srv.alive() if p != srv.pid)
    os.kill(srv.pid, signal.SIGKILL)  # the leader dies without passing anything on: its sleep stays
    srv.wait(5)
    assert srv.alive() == [orphan]
    assert srv in devharness.registered()  # exited, yet not done: part of it still runs
    srv.stop()
    assert srv.alive() == [] and srv not in devharness.registered()


def test_stop_leftovers_names_and_kills_only_what_was_started_since(tmp_path: Path) -> None:
    with Server(["sleep", "600"], tmp_path / "before.log") as before:
        since = devharness.last_seq()
        leak = Server(["sleep", "600"], tmp_path / "leak.log")
        left = devharness.stop_leftovers(since)
        assert [x.started for x in left] == [leak.started]
        assert str(left[0]) == f"pid {leak.pid}: sleep 600 (log: {tmp_path / 'leak.log'})"
        assert gone(leak.pid) and before.alive() == [before.pid]
    assert gone(before.pid)


def start_redis(tmp_path: Path) -> object:
    return devharness.RedisServer(tmp_path / "redis")


def start_pushgateway(tmp_path: Path) -> object:
    return devharness.Pushgateway(tmp_path / "pgw")


def start_s3(tmp_path: Path) -> object:
    return devharness.S3Server(tmp_path / "s3")


def start_triton(tmp_path: Path) -> object:
    (tmp_path / "repo").mkdir()
    return devharness.TritonServer(tmp_path / "triton", tmp_path / "repo")


def start_gunicorn(tmp_path: Path) -> object:
    return devharness.GunicornService(tmp_path / "svc", {}, app="app.predict.main:app").wait_ready()


@pytest.mark.parametrize("start", [start_redis, start_pushgateway, start_s3, start_triton, start_gunicorn])
def test_ctrl_c_while_starting_stops_the_process(
    start: Callable[[Path], object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(devharness.servers, "wait_until", interrupted)  # Ctrl-C while waiting for it to be ready
    monkeypatch.delenv("CI", raising=False)
    since = devharness.last_seq()
    with pytest.raises(KeyboardInterrupt):
        start(tmp_path)
    [started] = devharness.history(since)  # it did start a process ...
    assert devharness.registered(since) == [] and gone(started.pid)  # ... and stopped it


def test_a_server_that_fails_to_start_is_stopped(tmp_path: Path) -> None:
    since = devharness.last_seq()
    with pytest.raises(RuntimeError, match="exited with"):
        devharness.GunicornService(tmp_path / "svc", {}, app="app.nope:app").wait_ready()
    [started] = devharness.history(since)
    assert devharness.registered(since) == [] and gone(started.pid)


def leaks(tmp_path: Path) -> Callable[[], int]:
    def main() -> int:
        Server(["sleep", "600"], tmp_path / "sleep.log")
        return 0

    return main


def test_program_exit_check_kills_reports_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert devharness.leaves_nothing_running("bench.x")(leaks(tmp_path))() == 1
    err = capsys.readouterr().err
    assert "bench.x: 1 process(es) it started were still running at the end, now killed:\n  pid " in err
    [pid] = [int(p) for p in re.findall(r"pid (\d+): sleep 600", err)]
    assert gone(pid)


def test_program_exit_check_passes_clean_runs_and_keeps_their_code(tmp_path: Path) -> None:
    def clean() -> int:
        with Server(["sleep", "600"], tmp_path / "sleep.log"):
            return 3

    assert devharness.leaves_nothing_running("bench.x")(clean)() == 3


def test_program_exit_check_on_ctrl_c_sigterm_and_clean_sys_exit(tmp_path: Path) -> None:
    def interrupted() -> int:
        leaks(tmp_path)()
        raise KeyboardInterrupt

    since = devharness.last_seq()
    with pytest.raises(KeyboardInterrupt):
        devharness.leaves_nothing_running("demo")(interrupted)()
    assert all(gone(s.pid) for s in devharness.history(since))

    def terminated() -> int:
        leaks(tmp_path)()
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a CI timeout sends it: unwinds, kills, exits 143
        return 0

    since = devharness.last_seq()
    with pytest.raises(SystemExit) as exc:
        devharness.leaves_nothing_running("demo")(terminated)()
    assert exc.value.code == 128 + signal.SIGTERM and all(gone(s.pid) for s in devharness.history(since))
    assert signal.getsignal(signal.SIGTERM) is not devharness.processes._exit_on_sigterm  # restored

    def help_and_exit() -> int:
        leaks(tmp_path)()
        sys.exit(0)

    with pytest.raises(SystemExit) as exc:
        devharness.leaves_nothing_running("demo")(help_and_exit)()
    assert exc.value.code == 1  # exiting "cleanly" with something left running is no clean exit


@pytest.mark.parametrize("module", ["demo.__main__", "bench.serving", "bench.features", "bench.multimodal"])
def test_demo_and_benchmarks_check_at_exit(module: str) -> None:
    assert getattr(importlib.import_module(module).main, "leaves_nothing_running", False)
