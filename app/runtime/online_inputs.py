"""Inputs of models that read the feature store: ``{"user_id": ..., request-time fields}`` in,
the model's full input matrix out.

The entity's stored features come from the online store in one round trip; the
request-time transform is the same object the training job applied, imported from the
``module:attribute`` reference recorded in the model's metadata (app.features.request_transforms).
A model whose transform cannot be imported, or no longer fits what it was trained on, is refused
at load: the registry keeps serving the previous version.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from app.common.errors import InvalidInputError, NotFoundError, UnavailableError
from app.features.definitions import DefinitionError, FeatureRepo, FeatureView
from app.features.online import AsyncOnlineReader, OnlineStoreUnavailableError, Status
from app.features.request_transforms import TransformError, check_fits, load_transform
from app.modelstore.metadata import ModelMetadata

MAX_EXACT_ID = 2**53  # ids travel as JSON numbers -> float64: exact up to here


class OnlineInputsError(Exception):
    """The model's online-feature spec cannot be served here; the message says why."""


class EntityNotFoundError(NotFoundError):
    """An entity of the request has no current features in the online store (policy "error")."""


class FeaturesUnavailableError(UnavailableError):
    """The online store did not answer the feature read."""


class OnlineInputs:
    def __init__(
        self,
        meta: ModelMetadata,
        repo: FeatureRepo | None,
        reader: AsyncOnlineReader | None,
        missing_policy: Literal["error", "zeros"],
    ) -> None:
        spec = meta.online_features
        if spec is None:
            raise OnlineInputsError("model has no online features")
        if reader is None:
            raise OnlineInputsError(f"model {meta.name!r} reads the online feature store: set FEATURES_REDIS_URL")
        if repo is None:
            raise OnlineInputsError(
                f"model {meta.name!r} reads features {spec.feature_refs} but no feature repository is "
                "configured: set FEATURES_REPO to the module:function that returns it"
            )
        try:
            self.transform = load_transform(spec.transform)
            check_fits(
                self.transform,
                spec.transform,
                feature_refs=spec.feature_refs,
                request_fields=spec.request_fields,
                columns=meta.feature_names,
            )
        except TransformError as exc:
            raise OnlineInputsError(f"model {meta.name!r}: {exc}") from exc
        try:
            wanted = repo.resolve(spec.feature_refs)
        except DefinitionError as exc:
            raise OnlineInputsError(f"model {meta.name!r}: {exc}") from exc
        self.requests: list[tuple[FeatureView, list[str]]] = [(repo.view(v), f) for v, f in wanted.items()]
        for view, _ in self.requests:
            if view.entity.join_key != spec.entity_key:
                raise OnlineInputsError(
                    f"view {view.name!r} is keyed by {view.entity.join_key!r}, model by {spec.entity_key!r}"
                )
        self.entity_key = spec.entity_key
        self.input_names = [spec.entity_key, *spec.request_fields]
        self.reader = reader
        self.missing_policy = missing_policy

    async def build(self, x: NDArray[np.float64]) -> tuple[NDArray[np.float64], list[str]]:
        """Model matrix for request rows ``[entity id, request fields...]`` and each row's feature status."""
        ids_f = x[:, 0]
        bad = (ids_f != np.trunc(ids_f)) | (np.abs(ids_f) >= MAX_EXACT_ID)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(f"instances[{i}].{self.entity_key}: must be an integer below 2**53, got {ids_f[i]}")
        ids = ids_f.astype(np.int64).tolist()
        try:
            vectors = await self.reader.read(self.requests, ids)
        except OnlineStoreUnavailableError as exc:
            raise FeaturesUnavailableError(str(exc)) from None
        n = len(ids)
        status = ["PRESENT"] * n
        stats: dict[str, NDArray[np.float64]] = {}
        for vec in vectors:
            for i, s in enumerate(vec.statuses):
                if s is not Status.PRESENT:
                    status[i] = s.value
            for f in vec.features:
                stats[f] = np.array(vec.values[f], dtype=np.float64)  # None -> NaN
        missing = [i for i, s in enumerate(status) if s != "PRESENT"]
        if missing and self.missing_policy == "error":
            i = missing[0]
            raise EntityNotFoundError(
                f"{self.entity_key} {ids[i]}: no current features in the online store ({status[i]})"
            )
        return self.transform(stats, x[:, 1:]), status
