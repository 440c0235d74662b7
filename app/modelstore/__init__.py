"""Versioned model artifacts with metadata, in a local directory or on S3."""

from app.modelstore.metadata import FeatureSpec, ModelMetadata, VerificationSample
from app.modelstore.store import (
    ArtifactIntegrityError,
    LocalModelStore,
    ModelStore,
    ModelStoreError,
    ModelStoreSettings,
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
    "ModelStoreSettings",
    "S3ModelStore",
    "VerificationSample",
    "model_store",
    "open_store",
]
