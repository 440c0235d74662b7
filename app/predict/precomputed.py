"""Precomputed predictions (the seed's batch pattern): written by ``python -m jobs batch-predict``,
answered by ``GET /v1/models/{name}/precomputed/{entity_id}``.

One Redis string per (model, entity): ``pred:<model>:{<entity id>}`` holding compact JSON
(version, as-of time, label, class probabilities), expiring after a configured time so
stale scores disappear instead of being served forever.
"""

from __future__ import annotations

from typing import Any

import orjson


def prediction_key(model: str, entity_id: int) -> str:
    return f"pred:{model}:{{{entity_id}}}"


def encode(version: str, as_of: str, label: Any, probabilities: dict[str, float]) -> bytes:
    return orjson.dumps({"version": version, "as_of": as_of, "label": label, "probabilities": probabilities})


def decode(raw: bytes) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(raw)
    return value
