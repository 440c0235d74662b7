"""The metadata published beside every model artifact (``metadata.json``)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# NaN and infinities written as JSON's NaN/Infinity constants and read back as floats: held-out rows and
# profiles of models that take missing values carry NaN (written as null, they could not be read back).
_CONFIG = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

MODEL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class FeatureSpec(BaseModel):
    model_config = _CONFIG
    name: str
    dtype: Literal["float64", "float32", "int64", "int32"] = "float64"


class VerificationSample(BaseModel):
    """Rows from the held-out split and the probabilities the trainer computed for them.

    The server recomputes them at load time: an artifact whose predictions do not
    reproduce (wrong library version, a fast path that disagrees with scikit-learn)
    is never served.
    """

    model_config = _CONFIG
    inputs: list[list[float]]
    probabilities: list[list[float]]


class TrainingData(BaseModel):
    model_config = _CONFIG
    source: str
    rows: int
    fingerprint: str = Field(description="sha256 over the training matrix and labels")
    # Older metadata has neither: they default to empty (models trained before the lakehouse, or on data
    # outside the feature store).
    table_versions: dict[str, int] = Field(
        default_factory=dict,
        description="offline-store dataset -> the Delta table version the training set read; "
        "`train --as-of-version` reads these again",
    )
    entity_fingerprint: str | None = Field(
        default=None, description="sha256 of the entity rows the point-in-time join was given"
    )


class OnlineFeatures(BaseModel):
    """How the prediction service builds this model's input from the feature store."""

    model_config = _CONFIG
    entity_key: str = Field(description="join key a request names, e.g. user_id")
    feature_refs: list[str] = Field(description="view:feature references fetched from the online store")
    request_fields: list[str] = Field(description="fields a request carries besides the entity key")
    transform: str = Field(
        description="module:attribute reference of the RequestTransform that built the training rows, "
        "e.g. mypackage.transforms:risk_v1; the service imports it at load time"
    )


class OnnxArtifact(BaseModel):
    """The model as an ONNX graph, converted and verified at publish time (app/onnx), stored beside the pickle.

    The service runs it with onnxruntime and checks it again at load against ``verification``; a version
    whose graph is missing, corrupt or disagrees with the pickle is refused (docs/design.md).
    """

    model_config = _CONFIG
    file: str = "model.onnx"
    sha256: str
    size_bytes: int
    signature: str | None = Field(default=None, description="HMAC-SHA256 of sha256, as for the pickle")
    opsets: dict[str, int] = Field(description='opset imports of the graph, e.g. {"": 18, "ai.onnx.ml": 3}')
    converter: str = Field(description="the converter and its version, e.g. skl2onnx 1.20.0")
    max_abs_diff: float = Field(
        description="largest |dp| against scikit-learn at publish, on the held-out rows and the probe rows"
    )
    rows_checked: int
    probe_rows_checked: int = Field(
        default=0, description="of rows_checked, the probe rows (split thresholds and neighbours, large values, NaN)"
    )


class EngineChoice(BaseModel):
    """The engine the publisher chose for the service, and the timings it chose on (app/onnx/engine_choice.py)."""

    model_config = _CONFIG
    engine: Literal["onnxruntime", "sklearn"]
    reason: str
    seconds: dict[str, dict[int, float]] = Field(
        description="engine -> rows per call -> median seconds per predict_proba call at publish"
    )


class ModelMetadata(BaseModel):
    model_config = _CONFIG
    schema_version: Literal[1] = 1
    name: str
    version: str
    created_at: str
    framework: Literal["sklearn"] = "sklearn"
    task: Literal["classification"] = "classification"
    artifact_file: str = "model.pkl"
    artifact_format: Literal["pickle"] = "pickle"
    sha256: str
    size_bytes: int
    signature: str | None = Field(
        default=None, description="HMAC-SHA256 of sha256 under the publisher's key, when one was set"
    )
    features: list[FeatureSpec]
    classes: list[int | str]
    target_name: str = "target"
    metrics: dict[str, float] = Field(default_factory=dict)
    training_data: TrainingData
    library_versions: dict[str, str]
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    verification: VerificationSample
    online_features: OnlineFeatures | None = None
    # Both absent: published before ONNX graphs existed; the service serves it with scikit-learn.
    onnx: OnnxArtifact | None = None
    onnx_unavailable: str | None = Field(
        default=None, description="why the publisher stored no ONNX graph (the step that does not convert, ...)"
    )
    # Absent: published before the publisher timed the engines; the graph, when there is one, serves.
    engine_choice: EngineChoice | None = None
    # What requests may carry, derived from the estimator at publish (absent in older metadata: the service
    # derives them at load).
    accepts_missing: bool | None = Field(
        default=None, description="the model answers rows with missing values (v1 null, V2 NaN)"
    )
    max_abs_input: float | None = Field(
        default=None, description="largest |value| the model computes with (float32's where trees cast); None: any"
    )
    metadata_signature: str | None = Field(
        default=None,
        description="HMAC-SHA256 of metadata_digest() under the publisher's key: covers everything the service "
        "acts on (transform reference, features, verification rows, the artifacts' digests and signatures)",
    )
    reference_profile: dict[str, Any] | None = Field(
        default=None,
        description="training data and held-out score profile (app/monitoring/profile.py), checked at load; "
        "versions published without one are served and monitored as 'no reference'",
    )

    @property
    def feature_views(self) -> list[str]:
        if self.online_features is None:
            return []
        return sorted({r.split(":", 1)[0] for r in self.online_features.feature_refs})

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign(sha256: str, key: bytes) -> str:
    return hmac.new(key, sha256.encode(), hashlib.sha256).hexdigest()


def signature_ok(meta: ModelMetadata, key: bytes) -> bool:
    return meta.signature is not None and hmac.compare_digest(meta.signature, sign(meta.sha256, key))


def metadata_digest(meta: ModelMetadata) -> str:
    """sha256 of the metadata as published, all but its own signature: the bytes written are this JSON's
    fields, and the store checks at publish that they read back identically."""
    return sha256_hex(meta.model_dump_json(exclude={"metadata_signature"}).encode())


def with_metadata_signature(meta: ModelMetadata, key: bytes) -> ModelMetadata:
    return meta.model_copy(update={"metadata_signature": sign(metadata_digest(meta), key)})


def metadata_signature_ok(meta: ModelMetadata, key: bytes) -> bool:
    """Whether the metadata is the publisher's, unchanged: checked before anything it names is acted on."""
    return meta.metadata_signature is not None and hmac.compare_digest(
        meta.metadata_signature, sign(metadata_digest(meta), key)
    )
