"""`python -m jobs` reads its environment through JobSettings: the flags' defaults, and a clear error."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from unittest import mock

from app.features.config import FeatureStoreSettings
from jobs.__main__ import build_parser
from jobs.settings import REFERENCE_REPO, JobSettings
from tests.jobs.test_cli import run_jobs


def test_environment_gives_the_flags_defaults() -> None:
    env = {
        "MODEL_STORE_URL": "s3://models/prod",
        "AWS_ENDPOINT_URL_S3": "http://s3.test:8333",
        "JOB_COMPLETION_INDEX": "2",
        "MATERIALIZE_SHARDS": "4",
        "POD_NAMESPACE": "ml",
        "MODEL_STORE_HMAC_KEY": "k3y",
    }
    with mock.patch.dict(os.environ, env, clear=True):
        settings = JobSettings()
        args = build_parser().parse_args(["materialize-incremental"])
        rollout = build_parser().parse_args(["rollout", "--deployment", "d", "--reason", "r"])
    assert (args.store, args.s3_endpoint_url) == ("s3://models/prod", "http://s3.test:8333")
    assert (args.shard, args.shards) == (2, 4)
    assert rollout.namespace == "ml"
    assert settings.hmac_key == b"k3y"
    # flags still win over the environment
    with mock.patch.dict(os.environ, env, clear=True):
        args = build_parser().parse_args(["--store", "/tmp/m", "materialize-incremental", "--shard", "0"])
    assert (args.store, args.shard) == ("/tmp/m", 0)


def test_every_subcommand_has_a_handler() -> None:
    parser = build_parser(JobSettings.model_construct())
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, p in sub.choices.items():
        assert callable(p.get_default("handler")), name


def test_a_bad_variable_is_one_summary_line_naming_it() -> None:
    code, out = run_jobs("list-models", env={"MATERIALIZE_SHARDS": "four"})
    assert code == 1 and out["job"] == "list-models" and out["status"] == "error"
    assert "materialize_shards" in out["error"]


def test_the_jobs_default_to_the_reference_scenarios_repository_and_empty_means_none(tmp_path: Path) -> None:
    with mock.patch.dict(os.environ, {}, clear=True):
        assert JobSettings().features.repo == REFERENCE_REPO == "examples.fraud.repo:reference_repo"
    with mock.patch.dict(os.environ, {"FEATURES_REPO": "tests.features.custom_repo:custom_repo"}, clear=True):
        assert JobSettings().features.repo == "tests.features.custom_repo:custom_repo"
    # the platform's own settings name no repository: the reference scenario is the jobs' default only
    with mock.patch.dict(os.environ, {}, clear=True):
        assert FeatureStoreSettings().repo is None
    code, out = run_jobs(
        "materialize-incremental", env={"FEATURES_REPO": "", "FEATURES_OFFLINE_URL": str(tmp_path / "offline")}
    )
    assert code == 1 and out["job"] == "materialize-incremental" and out["status"] == "error"
    assert "no feature repository configured: set FEATURES_REPO" in out["error"]
