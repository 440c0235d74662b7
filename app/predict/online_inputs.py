"""Inputs of models that read the feature store: ``{"user_id": ..., request-time fields}`` in,
the model's full input matrix out.

The entity's stored features come from the online store in one round trip; the
request-time transform is the same function the training job applied
(``app.features.transforms``), looked up by the name recorded in the model's metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from app.common.errors import ApiError, bad_request
from app.features import transforms
from app.features.definitions import DefinitionError, FeatureRepo, FeatureView
from app.features.online import AsyncOnlineReader, OnlineStoreUnavailableError, Status
from app.modelstore.metadata import ModelMetadata

Transform = Callable[[dict[str, NDArray[np.float64]], NDArray[np.float64]], NDArray[np.float64]]
MAX_EXACT_ID = 2**53  # ids travel as JSON numbers -> float64: exact up to here


def _fraud_v1(stats: dict[str, NDArray[np.float64]], request: NDArray[np.float64]) -> NDArray[np.float64]:
    return transforms.model_matrix(stats, request[:, 0], request[:, 1].astype(np.int64))


TRANSFORMS: dict[str, tuple[tuple[str, ...], Transform]] = {
    transforms.TRANSFORM_NAME: (transforms.REQUEST_FIELDS, _fraud_v1),
}


class OnlineInputsError(Exception):
    """The model's online-feature spec cannot be served here; the message says why."""


class OnlineInputs:
    def __init__(
        self,
        meta: ModelMetadata,
        repo: FeatureRepo,
        reader: AsyncOnlineReader | None,
        missing_policy: Literal["error", "zeros"],
    ) -> None:
        spec = meta.online_features
        if spec is None:
            raise OnlineInputsError("model has no online features")
        if reader is None:
            raise OnlineInputsError(
                f"model {meta.name!r} reads the online feature store: set PREDICT_FEATURES_REDIS_URL"
            )
        if spec.transform not in TRANSFORMS:
            raise OnlineInputsError(f"unknown request-time transform {spec.transform!r}; known: {sorted(TRANSFORMS)}")
        fields, self.transform = TRANSFORMS[spec.transform]
        if tuple(spec.request_fields) != fields:
            raise OnlineInputsError(
                f"transform {spec.transform!r} takes {list(fields)}, model lists {spec.request_fields}"
            )
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
            raise bad_request(f"instances[{i}].{self.entity_key}: must be an integer below 2**53, got {ids_f[i]}")
        ids = ids_f.astype(np.int64).tolist()
        try:
            vectors = await self.reader.read(self.requests, ids)
        except OnlineStoreUnavailableError as exc:
            raise ApiError(503, str(exc)) from None
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
            raise ApiError(404, f"{self.entity_key} {ids[i]}: no current features in the online store ({status[i]})")
        return self.transform(stats, x[:, 1:]), status
