"""Versioned model artifacts with metadata, in a local directory or on S3."""

from app.modelstore.metadata import FeatureSpec, ModelMetadata, VerificationSample
from app.modelstore.store import (
    ArtifactIntegrityError,
    LocalModelStore,
    ModelStore,
    ModelStoreError,
    S3ModelStore,
    open_store,
)

__all__ = [
    "ArtifactIntegrityError",
    "FeatureSpec",
    "LocalModelStore",
    "ModelMetadata",
    "ModelStore",
    "ModelStoreError",
    "S3ModelStore",
    "VerificationSample",
    "open_store",
]
