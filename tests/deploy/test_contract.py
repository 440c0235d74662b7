"""The deployment contract, for every profile in charts/ml-platform/ci/ and every container of every workload
(Deployments, StatefulSets, Jobs, CronJobs, helm test pods, init containers):

- the rendered environment parses through the service's settings class, and no variable is silently ignored;
- every rendered ``python -m jobs ...`` line parses;
- every Service host and port that a container names exists in the render (or beside it, in k8s/).

Whether the entry point imports with only what its image installs is tests/images/test_image_imports.py."""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from unittest import mock

import pytest
from pydantic_settings import BaseSettings

from devharness import ROOT
from jobs.__main__ import build_parser
from tests.deploy.render import NAMESPACE, PROFILES, Container, k8s_manifests, render

# Read by libraries and runtimes, not by our code: the AWS SDK (botocore, and Triton's S3 client), Python
# itself, prometheus_client's multiprocess mode, gunicorn.
RUNTIME_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "PATH",
    "HOME",
    "LANG",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPATH",
    "PROMETHEUS_MULTIPROC_DIR",
    "GUNICORN_CMD_ARGS",
    "WEB_CONCURRENCY",
}


def env_reads(*roots: Path) -> set[str]:
    """Names our code reads straight from the environment (os.environ[...], .get, .setdefault, os.getenv)."""
    names: set[str] = set()
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                    f = ast.unparse(node.func)
                    if f in {"os.environ.get", "os.getenv", "os.environ.setdefault", "os.environ.pop"}:
                        names.add(str(node.args[0].value))
                elif (
                    isinstance(node, ast.Subscript)
                    and ast.unparse(node.value) == "os.environ"
                    and isinstance(node.slice, ast.Constant)
                ):
                    names.add(str(node.slice.value))
    return names


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """A field's variable is its alias when it has one (AWS_ENDPOINT_URL_S3: no prefix), else prefix + name."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return {
        (f.validation_alias if isinstance(f.validation_alias, str) else prefix + name).upper()
        for name, f in cls.model_fields.items()
    }


@cache
def settings_class(app_module: str) -> type[BaseSettings]:
    """app.<service>.main:app -> app.<service>.core.config.Settings (one settings class per service)."""
    import importlib

    service = app_module.split(".")[1]
    cls: type[BaseSettings] = importlib.import_module(f"app.{service}.core.config").Settings
    assert issubclass(cls, BaseSettings)
    return cls


def jobs_settings() -> list[type[BaseSettings]]:
    from app.features.config import FeatureStoreSettings
    from jobs.settings import JobSettings

    return [JobSettings, FeatureStoreSettings]


def gunicorn_app(c: Container) -> str | None:
    """The app.<service> module a container runs: gunicorn's app, or ``python -m app.<service>`` (the
    stream scorer); each reads app.<service>.core.config.Settings."""
    argv = c.argv
    if argv and Path(argv[0]).name == "gunicorn":
        return argv[-1]
    if argv[:2] == ["python", "-m"] and len(argv) > 2 and argv[2].startswith("app."):
        return argv[2]
    return None


def traced_jobs_lines(c: Container, tmp: Path) -> list[list[str]]:
    """Every `python -m jobs ...` the container runs, as the shell would pass it (quotes, $(date ...) and
    variables expanded): a shell script runs with `python` on PATH replaced by a recorder."""
    argv = c.argv
    if argv[:3] == ["python", "-m", "jobs"]:
        return [argv[3:]]
    if not argv or Path(argv[0]).name not in {"sh", "bash"}:
        return []
    recorder = tmp / "bin" / "python"
    recorder.parent.mkdir(parents=True, exist_ok=True)
    log = tmp / "calls"
    recorder.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done >> {log}\nprintf "\\n\\0" >> {log}\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    env = {**c.env, "PATH": f"{recorder.parent}:/usr/bin:/bin"}
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, f"{c.ref}: its script fails before any job runs: {p.stderr}"
    calls: list[list[str]] = [[]]
    for part in log.read_text().split("\0")[:-1] if log.exists() else []:
        if part == "\n":
            calls.append([])
        else:
            calls[-1].append(part)
    return [call[2:] for call in calls if call[:2] == ["-m", "jobs"]]


def containers() -> Iterator[tuple[str, Container]]:
    for profile in PROFILES:
        for c in render(profile).containers():
            yield profile, c


CASES = list(containers())
IDS = [f"{p}:{c.ref}" for p, c in CASES]
OUR_CODE_READS = env_reads(ROOT / "app", ROOT / "jobs")


MONITORED_SERVICES = {"predict", "stream"}  # serve through the model registry, which builds a monitor per version


def readers(c: Container, tmp: Path) -> tuple[list[type[BaseSettings]], set[str]]:
    """The settings classes that read a container's environment, and the names our code reads directly."""
    app_module = gunicorn_app(c)
    if app_module is not None:
        service = app_module.split(".")[1]
        classes = [settings_class(app_module)]
        if service in MONITORED_SERVICES:
            from app.monitoring.settings import MonitoringSettings

            classes.append(MonitoringSettings)  # each worker's monitors read it as they load a version
        return classes, env_reads(ROOT / "app" / service, ROOT / "app" / "common")
    if traced_jobs_lines(c, tmp):
        return jobs_settings(), OUR_CODE_READS
    return [], set()  # a helm test pod: plain Python, no settings


def ignored_variables(c: Container, tmp: Path) -> list[str]:
    classes, reads = readers(c, tmp)
    known = RUNTIME_ENV | reads | set().union(*(settings_env_names(cls) for cls in classes))
    # A test pod runs plain Python in a service's image: that image's ENV is not for it.
    checked = {k for k, source in c.env_sources.items() if classes or source != "image"}
    return sorted(checked - known)


@pytest.mark.parametrize(("profile", "c"), CASES, ids=IDS)
def test_environment_parses_and_nothing_is_ignored(profile: str, c: Container, tmp_path: Path) -> None:
    """Each variable is read by the settings class, by our code, or by a runtime library; and the settings
    class accepts the values (an int that renders as 1.048576e+07 fails here)."""
    if c.image is None:
        return  # third-party image: its variables are its own (hosts are still checked below)
    ignored = ignored_variables(c, tmp_path)
    assert not ignored, f"{profile}: {c.ref} sets variables nothing reads: {ignored}"
    with mock.patch.dict(os.environ, c.env, clear=True):
        for cls in readers(c, tmp_path)[0]:
            cls()  # ValidationError names the variable and the value


def test_a_misspelt_or_unused_variable_is_reported(tmp_path: Path) -> None:
    """The check itself: pydantic-settings ignores PREDICT_MODLES (extra="ignore"); the contract does not."""
    (predict,) = [c for p, c in CASES if p == "kind" and c.ref.endswith("-predict/predict")]
    assert ignored_variables(predict, tmp_path) == []
    typo = replace(
        predict,
        env={**predict.env, "PREDICT_MODLES": "fraud"},
        env_sources={**predict.env_sources, "PREDICT_MODLES": "env"},
    )
    assert ignored_variables(typo, tmp_path) == ["PREDICT_MODLES"]
    bad = {**predict.env, "PREDICT_MAX_BATCH_SIZE": "6.4e+01"}
    with mock.patch.dict(os.environ, bad, clear=True), pytest.raises(ValueError, match="max_batch_size"):
        settings_class("app.predict.main:app")()


@pytest.mark.parametrize(("profile", "c"), CASES, ids=IDS)
def test_every_jobs_line_parses(profile: str, c: Container, tmp_path: Path) -> None:
    if c.image is None:
        return
    lines = traced_jobs_lines(c, tmp_path)
    if c.image.name.startswith("jobs"):
        assert lines, f"{profile}: {c.ref} runs the jobs image but no `python -m jobs` line"
    with mock.patch.dict(os.environ, c.env, clear=True):
        for argv in lines:
            try:
                build_parser().parse_args(argv)
            except SystemExit as e:
                pytest.fail(f"{profile}: {c.ref}: `python -m jobs {' '.join(argv)}` does not parse ({e})")


# host:port, where the host is a Service name (`name`, `name.ns`, `name.ns.svc[.cluster.local]`); a URL's
# user info (redis://:password@host:port) is skipped.
HOST_PORT = re.compile(r"(?:^|[\s/@=\"',])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9-]+)*):(\d{1,5})\b")


def named_services(text: str) -> set[tuple[str, str, int]]:
    out = set()
    for host, port in HOST_PORT.findall(text):
        parts = host.split(".")
        if host in {"localhost"} or re.fullmatch(r"[\d.]+", host):
            continue
        if len(parts) == 1:
            out.add((parts[0], NAMESPACE, int(port)))
        elif len(parts) == 2 or parts[2:] in (["svc"], ["svc", "cluster", "local"]):
            out.add((parts[0], parts[1], int(port)))
        # anything else is outside the cluster (AWS endpoints): not ours to check
    return out


@pytest.mark.parametrize(("profile", "c"), CASES, ids=IDS)
def test_every_service_a_container_names_exists(profile: str, c: Container) -> None:
    services = render(profile).services
    texts = [*c.env.values(), *c.argv]
    for name, ns, port in sorted(set().union(*(named_services(t) for t in texts))):
        assert (name, ns) in services, f"{profile}: {c.ref} names Service {name}.{ns}, which is not rendered"
        assert port in services[(name, ns)], (
            f"{profile}: {c.ref} uses {name}.{ns}:{port}; it serves {services[(name, ns)]}"
        )


def test_host_detection_finds_what_containers_write() -> None:
    """The detector itself: each way our containers spell a Service."""
    assert named_services("redis://:p4ss@mlp-featurestore-redis:6379/0") == {("mlp-featurestore-redis", "ml", 6379)}
    assert named_services("mlp-multimodal-triton:8000") == {("mlp-multimodal-triton", "ml", 8000)}
    assert named_services("http://s3.ml-platform.svc.cluster.local:8333") == {("s3", "ml-platform", 8333)}
    assert named_services('base = "http://mlp-predict:8080"') == {("mlp-predict", "ml", 8080)}
    assert named_services("rediss://x.abc123.cache.amazonaws.com:6379/0") == set()


def test_the_walkthroughs_services_are_what_k8s_defines() -> None:
    """EXTERNAL_SERVICES is not a wish list: the in-cluster S3 is k8s/s3.yaml's Service."""
    s3 = [d for d in k8s_manifests("s3") if d["kind"] == "Service"]
    assert [(d["metadata"]["name"], d["metadata"]["namespace"]) for d in s3] == [("s3", "ml-platform")]
    assert {p["port"] for p in s3[0]["spec"]["ports"]} == {8333}


def test_the_readmes_cronjob_runs_name_what_the_kind_profile_renders() -> None:
    """`kubectl create job --from=cronjob/NAME` in the README: NAME is a CronJob of the kind install."""
    named = set(re.findall(r"--from=cronjob/([\w-]+)", (ROOT / "README.md").read_text()))
    assert len(named) >= 2, named  # the materializer and the feature job
    cronjobs = {d["metadata"]["name"] for d in render("kind").docs if d["kind"] == "CronJob"}
    assert named <= cronjobs, (named, cronjobs)
