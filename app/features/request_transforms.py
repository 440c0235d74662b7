"""Request-time transforms, loaded by reference.

A model that reads the feature store records, at training time, the ``module:attribute`` reference of the
``RequestTransform`` that built its input matrix (``ModelMetadata.online_features.transform``). The
prediction service and the batch-prediction job import that same object at load time and apply it to the
entity's stored features plus the request's own fields, so training rows and serving rows go through the
identical code. Feature repositories are loaded the same way (``load_repo``); both live outside ``app/``
(see docs/feature-store.md, "Writing your own feature repository and transforms").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

# (stored features by name, each a float64 column with NaN where missing; request fields as a float64
# matrix, one column per request field) -> the model's input matrix
TransformFn = Callable[[dict[str, NDArray[np.float64]], NDArray[np.float64]], NDArray[np.float64]]


class TransformError(Exception):
    """A transform reference that cannot be loaded, or does not fit the model; the message says why."""


@dataclass(frozen=True)
class RequestTransform:
    """What a model reads besides the request's entity id, and how it becomes the model's input.

    ``feature_refs``: ``view:feature`` references fetched for the entity; ``request_fields``: what the
    request carries besides the entity key, in the order of the request matrix's columns; ``columns``: the
    names of the output matrix's columns (the model's features); ``fn``: the arithmetic.
    """

    feature_refs: tuple[str, ...]
    request_fields: tuple[str, ...]
    columns: tuple[str, ...]
    fn: TransformFn

    def __post_init__(self) -> None:
        for ref in self.feature_refs:
            view, sep, feature = ref.partition(":")
            if not (view and sep and feature):
                raise TransformError(f"feature reference {ref!r} must look like 'view:feature'")
        if not self.columns:
            raise TransformError("a request-time transform produces at least one column")

    @property
    def feature_names(self) -> list[str]:
        """The stored features' names, the keys of the ``fn``'s first argument."""
        return [ref.partition(":")[2] for ref in self.feature_refs]

    def __call__(self, stats: dict[str, NDArray[np.float64]], request: NDArray[np.float64]) -> NDArray[np.float64]:
        x = np.asarray(self.fn(stats, request), dtype=np.float64)
        if x.ndim != 2 or x.shape != (len(request), len(self.columns)):
            raise TransformError(
                f"transform returned shape {x.shape}, expected ({len(request)}, {len(self.columns)}): "
                f"one row per request, one column per name in columns"
            )
        return x


def load_reference(spec: str, what: str) -> Any:
    """Import ``package.module:attribute`` and return the attribute; every failure names the spec and why."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TransformError(f"{what} {spec!r} must look like 'package.module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module failing while it runs: either way it cannot be used
        raise TransformError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from exc
    if not hasattr(module, attr):
        raise TransformError(f"{what} {spec!r}: {module_name} has no attribute {attr!r}")
    return getattr(module, attr)


def load_transform(spec: str) -> RequestTransform:
    """The ``RequestTransform`` a ``module:attribute`` reference names."""
    transform = load_reference(spec, "request-time transform")
    if not isinstance(transform, RequestTransform):
        raise TransformError(
            f"request-time transform {spec!r} is a {type(transform).__name__}, not an "
            "app.features.request_transforms.RequestTransform"
        )
    return transform


def check_fits(
    transform: RequestTransform,
    spec: str,
    *,
    feature_refs: Sequence[str],
    request_fields: Sequence[str],
    columns: Sequence[str],
) -> None:
    """The transform loaded today still builds what the model was trained on: the same stored features, the
    same request fields in the same order, the same output columns."""
    for name, recorded, current in (
        ("feature references", list(feature_refs), list(transform.feature_refs)),
        ("request fields", list(request_fields), list(transform.request_fields)),
        ("output columns", list(columns), list(transform.columns)),
    ):
        if recorded != current:
            raise TransformError(f"transform {spec!r}: the model was trained with {name} {recorded}, it has {current}")
