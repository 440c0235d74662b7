from __future__ import annotations

import numpy as np

from app.modelstore import ModelStore
from app.runtime.model import SklearnModel


def reference(store: ModelStore, name: str) -> SklearnModel:
    v = store.latest(name)
    assert v is not None
    meta, data = store.read_version(name, v)
    m = SklearnModel(meta)
    m.load(data, onnx_graph=store.read_onnx(meta) if meta.onnx is not None else None)  # as the service loads it
    return m


def instances(model: SklearnModel, x: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(model.feature_names, row.tolist(), strict=True)) for row in x]
