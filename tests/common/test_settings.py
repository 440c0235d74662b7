"""One shape for configuration: the shared bases, one name per setting, the version from package metadata."""

from __future__ import annotations

import os
import tomllib
from typing import TypeVar
from unittest import mock

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from app.common.settings import ModelStoreSettings, S3Settings, ServiceSettings, package_version
from app.features.config import FeatureStoreSettings
from app.featureserver.core.config import Settings as FeatureServerSettings
from app.predict.core.config import Settings as PredictSettings
from app.preprocess.core.config import Settings as PreprocessSettings
from devharness import ROOT
from jobs.settings import JobSettings

S = TypeVar("S", bound=BaseSettings)
SERVICES: dict[str, type[ServiceSettings]] = {
    "PREDICT_": PredictSettings,
    "FEATURES_": FeatureServerSettings,
    "PREPROCESS_": PreprocessSettings,
}
S3_READERS: list[type[S3Settings]] = [PredictSettings, FeatureServerSettings, FeatureStoreSettings, JobSettings]
ALL: list[type[BaseSettings]] = [*SERVICES.values(), FeatureStoreSettings, JobSettings]


def settings_from(cls: type[S], env: dict[str, str]) -> S:
    with mock.patch.dict(os.environ, env, clear=True):
        return cls()


def test_the_version_is_written_once() -> None:
    """pyproject.toml's version is what the installed package, the apps, V2 metadata and the chart report."""
    from app.predict.api.routes.v2 import SERVER_VERSION

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert package_version() == project == SERVER_VERSION
    charts = sorted((ROOT / "charts" / "ml-platform").glob("**/Chart.yaml"))
    assert len(charts) == 6  # the umbrella chart and its five subcharts
    for chart in charts:
        assert yaml.safe_load(chart.read_text())["appVersion"] == project, chart


@pytest.mark.parametrize(("prefix", "cls"), list(SERVICES.items()))
def test_every_service_shares_the_base_under_its_prefix(prefix: str, cls: type[ServiceSettings]) -> None:
    assert issubclass(cls, ServiceSettings)
    s = settings_from(cls, {f"{prefix}LOG_LEVEL": "DEBUG", f"{prefix}ACCESS_LOG": "false"})
    assert isinstance(s, ServiceSettings) and s.log_level == "DEBUG" and s.access_log is False
    with pytest.raises(ValidationError, match="max_body_bytes"):
        settings_from(cls, {f"{prefix}MAX_BODY_BYTES": "10"})  # below the base's floor


@pytest.mark.parametrize("cls", S3_READERS, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_s3_has_one_name_everywhere(cls: type[S3Settings]) -> None:
    """AWS_ENDPOINT_URL_S3 and AWS_DEFAULT_REGION, as boto3 and Triton read them; the old spellings are gone."""
    s = settings_from(cls, {"AWS_ENDPOINT_URL_S3": "http://s3.test:8333", "AWS_DEFAULT_REGION": "eu-west-3"})
    assert (s.s3_endpoint_url, s.s3_region) == ("http://s3.test:8333", "eu-west-3")
    old = {
        "PREDICT_S3_ENDPOINT_URL": "http://old",
        "S3_ENDPOINT_URL": "http://old",
        "FEATURES_S3_ENDPOINT_URL": "http://old",
        "FEATURES_S3_REGION": "old-1",
    }
    s = settings_from(cls, old)
    assert (s.s3_endpoint_url, s.s3_region) == (None, None)


@pytest.mark.parametrize("cls", [PredictSettings, JobSettings], ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_the_model_store_has_one_name_for_the_service_and_the_jobs(cls: type[ModelStoreSettings]) -> None:
    """MODEL_STORE_URL and MODEL_STORE_HMAC_KEY: what the jobs publish and sign, the service reads and checks."""
    assert issubclass(cls, ModelStoreSettings)
    s = settings_from(cls, {"MODEL_STORE_URL": "s3://models/prod", "MODEL_STORE_HMAC_KEY": "k3y"})
    assert (s.model_store_url, s.hmac_key) == ("s3://models/prod", b"k3y")
    old = settings_from(cls, {"PREDICT_MODEL_STORE_URL": "s3://old/x", "PREDICT_ARTIFACT_HMAC_KEY": "old"})
    assert (old.model_store_url, old.hmac_key) == ("./var/model-store", None)


def test_the_online_store_has_one_name_for_every_reader() -> None:
    """FEATURES_REDIS_URL, FEATURES_REDIS_CLUSTER and FEATURES_REPO: the feature server, the jobs and the
    prediction service read the same variables; the prediction service's old PREDICT_ spellings are gone."""
    env = {"FEATURES_REDIS_URL": "redis://r:6379/1", "FEATURES_REDIS_CLUSTER": "true", "FEATURES_REPO": "m:f"}
    p = settings_from(PredictSettings, env)
    assert (p.features_redis_url, p.features_redis_cluster, p.features_repo) == ("redis://r:6379/1", True, "m:f")
    for cls in (FeatureServerSettings, FeatureStoreSettings):
        f = settings_from(cls, env)
        assert (f.redis_url, f.redis_cluster, f.repo) == ("redis://r:6379/1", True, "m:f")
    with mock.patch.dict(os.environ, env, clear=True):  # the jobs read FEATURES_ when a job needs them
        assert JobSettings().features.repo == "m:f"
    old = {
        "PREDICT_FEATURES_REDIS_URL": "redis://old",
        "PREDICT_FEATURES_REDIS_CLUSTER": "true",
        "PREDICT_FEATURES_REPO": "o:f",
    }
    p = settings_from(PredictSettings, old)
    assert (p.features_redis_url, p.features_redis_cluster, p.features_repo) == (None, False, None)


def test_preprocess_body_limit_follows_the_image_limit() -> None:
    """The operator sets the image's size; the body (an image base64-encoded in JSON) may be twice that."""
    s = settings_from(PreprocessSettings, {"PREPROCESS_MAX_IMAGE_BYTES": "2000000"})
    assert s.max_body_bytes == 4_000_000
    s = settings_from(
        PreprocessSettings, {"PREPROCESS_MAX_IMAGE_BYTES": "2000000", "PREPROCESS_MAX_BODY_BYTES": "3000000"}
    )
    assert s.max_body_bytes == 3_000_000
    small = {"PREPROCESS_MAX_IMAGE_BYTES": "2000000", "PREPROCESS_MAX_BODY_BYTES": "5000"}
    with pytest.raises(ValidationError, match=r"max_body_bytes \(5000\) is below max_image_bytes"):
        settings_from(PreprocessSettings, small)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_setting_is_documented_in_code_and_readme(cls: type[BaseSettings]) -> None:
    readme = (ROOT / "README.md").read_text()
    prefix = str(cls.model_config.get("env_prefix", ""))
    for name, field in cls.model_fields.items():
        assert field.description, f"{cls.__name__}.{name} has no docstring"
        env = field.validation_alias if isinstance(field.validation_alias, str) else prefix + name
        assert f"`{env.upper()}`" in readme, f"README.md's configuration tables do not list {env.upper()}"
