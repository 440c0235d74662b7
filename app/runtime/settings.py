"""Settings of the model runtime, shared by the prediction service (``PREDICT_*``) and the stream scorer
(``STREAM_*``): each subclasses them with its own prefix and adds its own."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from app.common.settings import ModelStoreSettings, ServiceSettings


class RuntimeSettings(ServiceSettings, ModelStoreSettings):
    """What the registry, the models and their engines read. Log level, access log and body limit come from
    ServiceSettings; the model store and its key from ModelStoreSettings (``MODEL_STORE_URL``,
    ``MODEL_STORE_HMAC_KEY``), its S3 from S3Settings (``AWS_ENDPOINT_URL_S3``, ``AWS_DEFAULT_REGION``); the
    online feature store under the feature store's own names (``FEATURES_REDIS_URL``,
    ``FEATURES_REDIS_CLUSTER``, ``FEATURES_REPO``): the jobs and the feature server read the same variables."""

    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated model names to serve; empty serves every model in the store (and new ones)."""

    default_model: str | None = None
    """Model behind the short routes (/v1/predict); defaults to the first model served."""

    poll_interval_seconds: float = Field(default=5.0, ge=0.1)
    """How often each worker checks the store's latest pointers for hot reload."""

    verify_tolerance: float = Field(default=1e-9, ge=0.0)
    """Max absolute difference allowed between served and trainer-computed verification probabilities."""

    engine: Literal["onnxruntime", "sklearn", "edge-bundle"] = "onnxruntime"
    """What runs a model: onnxruntime, with the ONNX graph its publisher stored and verified (a version
    without one is served by scikit-learn, the reason logged); ``sklearn`` ignores the graphs;
    ``edge-bundle`` serves each version's edge bundle (``jobs export-edge``) from ``PREDICT_EDGE_BUNDLES``,
    once it has proved a faithful copy of the version (a version without one is refused)."""

    edge_bundles: str | None = None
    """Root of the edge bundles, ``<root>/<model>/<version>/`` (a directory or s3://bucket/prefix), for
    ``PREDICT_ENGINE=edge-bundle``."""

    edge_cache_dir: str = "/tmp/edge-bundles"
    """Where bundles from S3 are downloaded (sha256-checked) before they load."""

    onnx_tolerance: float = Field(default=1e-5, ge=0.0)
    """Max absolute difference between the ONNX graph's and the trainer's verification probabilities (float32
    graphs land near 1e-7); beyond it, or with a label flip away from a tie, the version is refused."""

    ort_intra_op_threads: int = Field(default=1, ge=1, le=64)
    """onnxruntime threads inside one operator, per session in each worker. 1: the worker's own thread runs the
    graph and WEB_CONCURRENCY workers use WEB_CONCURRENCY cores (onnxruntime's default, one thread per core in
    every worker, oversubscribes the pod's CPUs). Raise it when a pod has more cores than workers."""

    ort_inter_op_threads: int = Field(default=1, ge=1, le=64)
    """onnxruntime threads running independent operators in parallel; the executor is sequential, so 1."""

    batching_enabled: bool = True
    """Coalesce concurrent requests for one model into one vectorized predict call."""

    max_batch_size: int = Field(default=64, ge=1, le=100_000)
    """Most rows in one coalesced predict call."""

    max_batch_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    """Extra time to wait for a batch to fill; 0 batches only what is already queued (no added latency)."""

    features_redis_url: str | None = Field(default=None, validation_alias="FEATURES_REDIS_URL")
    """Online feature store for models trained on feature views; unset: such models are not served. Env
    ``FEATURES_REDIS_URL``, as for the feature server and the jobs."""

    features_redis_cluster: bool = Field(default=False, validation_alias="FEATURES_REDIS_CLUSTER")
    """The online store is a Redis Cluster. Env ``FEATURES_REDIS_CLUSTER``."""

    features_timeout_ms: float = Field(default=50.0, gt=0)
    """Budget for fetching an entity's features; past it the request gets a 503, fast."""

    features_repo: str | None = Field(default=None, validation_alias="FEATURES_REPO")
    """Feature definitions (``module:function``) that models' feature references resolve against; unset:
    models that read features are refused at load, naming this variable. Env ``FEATURES_REPO``."""

    missing_entity_policy: Literal["error", "zeros"] = "error"
    """Entity without current features: 404 (error), or predict as for an entity with no history (zeros)."""

    @field_validator("features_repo", "features_redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _edge_bundles_named(self) -> Self:
        if self.engine == "edge-bundle" and not self.edge_bundles:
            raise ValueError("PREDICT_ENGINE=edge-bundle needs PREDICT_EDGE_BUNDLES: where the bundles are")
        return self

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value
