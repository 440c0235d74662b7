from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

import devharness
from app.modelstore import LocalModelStore
from devharness import RedisServer, S3Server
from jobs.train import train_and_publish

# tests/test_harness.py runs inner pytest sessions to prove the session-end check below fails a run.
pytest_plugins = ["pytester"]

_SESSION_START = pytest.StashKey[int]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION_START] = devharness.last_seq()


@pytest.hookimpl(trylast=True)  # after pytest's own sessionfinish, which tears the session fixtures down
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fails the run if a process the tests started (the harness's registry) is still running: names
    each one with its argv and log, and kills it. Also after Ctrl-C, which keeps its own exit status."""
    left = devharness.stop_leftovers(session.config.stash.get(_SESSION_START, 0))
    if not left:
        return
    report = devharness.report_leftovers("the tests", left)
    report += "\nThis fails the run: a fixture or test must stop what it starts on every path (see devharness)."
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.line("")  # the progress line may still be open
        reporter.write_sep("=", "processes left running", red=True)
        reporter.write_line(report)
    else:
        print(report, file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def started() -> Iterator[ExitStack]:
    """Servers a test starts itself: ``started.enter_context(RedisServer(...))`` stops it when the test ends,
    whichever way it ends, without a try/finally around the test's body."""
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One valkey for the session's tests that flush it first (the feature store's and the stream's)."""
    srv = RedisServer(tmp_path_factory.mktemp("valkey"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with two real models: breast-cancer (scaler + forest) and iris (3 classes)."""
    root = tmp_path_factory.mktemp("store")
    store = LocalModelStore(root)
    train_and_publish(store, dataset="breast-cancer", name="breast-cancer", n_estimators=20)
    train_and_publish(store, dataset="iris", name="iris", n_estimators=10, max_depth=4)
    return root


@pytest.fixture
def store_copy(trained_store: Path, tmp_path: Path) -> LocalModelStore:
    """A private, writable copy of the trained store for tests that publish or break things."""
    import shutil

    dst = tmp_path / "store"
    shutil.copytree(trained_store, dst)
    return LocalModelStore(dst)
