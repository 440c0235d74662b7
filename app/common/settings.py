"""The shape every settings class shares.

Each service has one settings class (``app/<service>/core/config.py``) with its own environment
prefix (``PREDICT_``, ``FEATURES_``, ``PREPROCESS_``); the jobs have ``jobs/settings.py``. What they
have in common is declared once here:

- :class:`ServiceSettings`: what every HTTP service has (log level, access log, body limit);
- :class:`S3Settings`: where S3 is. These two settings have one name everywhere, the AWS SDK's own
  (``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``): boto3 and Triton's S3 client read the same
  variables, so one value in the chart configures our code and the libraries alike.
- :class:`ModelStoreSettings`: where the model store is and the key its artifacts are signed with,
  ``MODEL_STORE_URL`` and ``MODEL_STORE_HMAC_KEY`` for the jobs that publish and the service that serves.

Settings that several programs read have one name, without a program's prefix: besides these, the
online feature store (``FEATURES_REDIS_URL``, ``FEATURES_REDIS_CLUSTER``, ``FEATURES_REPO``) is read
under the feature store's names by the feature server, the jobs and the prediction service.

Fields are documented with attribute docstrings (``use_attribute_docstrings``); the README's
configuration tables list them.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE = "ml-platform"


@cache
def package_version() -> str:
    """The installed ml-platform's version (pyproject.toml is the one place it is written)."""
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # a source tree on PYTHONPATH without `pip install`
        return "0+unknown"


class ServiceSettings(BaseSettings):
    """What every HTTP service reads; subclasses set ``env_prefix`` and may change the defaults."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True, extra="ignore")

    log_level: str = "INFO"
    """Root log level (JSON lines on stderr)."""

    access_log: bool = True
    """One JSON log line per request (method, path, status, duration, request id)."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest request body accepted, counted as it streams and after content decoding (413 above it)."""


class S3Settings(BaseSettings):
    """Where the S3 API is: the AWS SDK's variable names, read without the class's prefix."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True, extra="ignore")

    s3_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_S3")
    """S3-compatible endpoint (MinIO, SeaweedFS); unset means AWS. Env ``AWS_ENDPOINT_URL_S3``, the
    name boto3 and Triton honour themselves; given explicitly, it also selects path-style addressing."""

    s3_region: str | None = Field(default=None, validation_alias="AWS_DEFAULT_REGION")
    """Region of the buckets. Env ``AWS_DEFAULT_REGION``, as for the AWS SDK; unset: the SDK's own
    chain (``AWS_REGION``, the config file) for boto3, ``us-east-1`` for the offline store's Arrow client."""


class ModelStoreSettings(S3Settings):
    """Where the model store is (on S3Settings' S3) and the artifacts' key: one name for every reader."""

    model_config = SettingsConfigDict(use_attribute_docstrings=True, extra="ignore")

    model_store_url: str = Field(default="./var/model-store", validation_alias="MODEL_STORE_URL")
    """Model store: a directory, or s3://bucket/prefix. Env ``MODEL_STORE_URL``, for the service and the jobs."""

    model_store_hmac_key: SecretStr | None = Field(default=None, validation_alias="MODEL_STORE_HMAC_KEY")
    """HMAC-SHA256 key of the artifacts: the jobs sign what they publish with it; the service, when it is set,
    loads only artifacts signed with it. Env ``MODEL_STORE_HMAC_KEY``, one Secret for both."""

    @property
    def hmac_key(self) -> bytes | None:
        key = self.model_store_hmac_key
        return key.get_secret_value().encode() if key and key.get_secret_value() else None
