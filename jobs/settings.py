"""Settings of ``python -m jobs``: environment variables without a prefix (the names Kubernetes and the
chart give a Job), plus the feature store's ``FEATURES_`` variables (app/features/config.py).

The jobs CLI is the reference scenario's (``seed``, ``features`` and ``train --dataset fraud`` generate
and train on examples/fraud): where the platform has no default feature repository, the jobs default
``FEATURES_REPO`` to that scenario's, :data:`REFERENCE_REPO`. Set it to your own ``module:function``;
set it empty and the jobs that need a repository fail, naming ``FEATURES_REPO``.

Command-line flags override these per run (``--store``, ``--s3-endpoint-url``, ``--shard``,
``--shards``, ``--namespace``); the settings are their defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from app.common.settings import ModelStoreSettings
from app.features.config import FeatureStoreSettings

if TYPE_CHECKING:
    import argparse


REFERENCE_REPO = "examples.fraud.repo:reference_repo"


class JobFeatureStoreSettings(FeatureStoreSettings):
    """The feature store's settings as the jobs read them: the reference scenario's repository by default."""

    model_config = SettingsConfigDict(env_prefix="FEATURES_", use_attribute_docstrings=True, extra="ignore")

    repo: str | None = REFERENCE_REPO
    """Feature definitions as code (``module:function``); unset: the reference scenario's
    (examples.fraud.repo:reference_repo); empty: none, and the jobs that need one fail naming FEATURES_REPO."""


class JobSettings(ModelStoreSettings):
    """The model store and its key come from ModelStoreSettings (``MODEL_STORE_URL``, ``--store`` overrides
    it; ``MODEL_STORE_HMAC_KEY``, the key published artifacts are signed with), the S3 endpoint and region
    from S3Settings (``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``): the names the prediction service and
    the AWS SDK read too."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True, extra="ignore")

    log_level: str = "WARNING"
    """Root log level (JSON lines on stderr; stdout carries only the summary line)."""

    job_completion_index: int = Field(default=0, ge=0)
    """This pod's shard: set by Kubernetes in an Indexed Job (``--shard`` overrides it)."""

    materialize_shards: int = Field(default=1, ge=1)
    """How many shards a materialization is split into (the Indexed Job's completions; ``--shards``)."""

    pod_namespace: str = "default"
    """Namespace of the Deployment ``rollout`` rolls (the chart sets the pod's own; ``--namespace``)."""

    @cached_property
    def features(self) -> FeatureStoreSettings:
        """The feature store's settings, from their own ``FEATURES_`` variables. Read when a job first
        needs them, so that a bad ``FEATURES_`` value fails the feature jobs (with a summary line), not
        ``train --dataset iris``."""
        return JobFeatureStoreSettings()


# What each subcommand's parser carries as ``handler`` (``set_defaults(handler=...)``): it gets the parsed
# arguments and the settings, and returns the fields of the summary line.
Handler = Callable[["argparse.Namespace", JobSettings], dict[str, Any]]
