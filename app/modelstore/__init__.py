"""Versioned model artifacts with metadata, in a local directory or on S3, and how a trainer packages one
(metadata, signature, verification sample: packaging)."""

from app.modelstore.metadata import FeatureSpec, ModelMetadata, VerificationSample
from app.modelstore.packaging import TrainingRun, package_sklearn, publish_sklearn
from app.modelstore.store import (
    ArtifactIntegrityError,
    LocalModelStore,
    ModelStore,
    ModelStoreError,
    ModelStoreLocation,
    S3ModelStore,
    model_store,
    open_store,
)

__all__ = [
    "ArtifactIntegrityError",
    "FeatureSpec",
    "LocalModelStore",
    "ModelMetadata",
    "ModelStore",
    "ModelStoreError",
    "ModelStoreLocation",
    "S3ModelStore",
    "TrainingRun",
    "VerificationSample",
    "model_store",
    "open_store",
    "package_sklearn",
    "publish_sklearn",
]
