"""Every key the online store writes: feature values, watermarks and locks, all under one prefix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.features.definitions import FeatureView

KEY_PREFIX = "fs"


def entity_key(view: str, entity_id: int) -> str:
    return f"{KEY_PREFIX}:{view}:{{{entity_id}}}"


def read_keys(requests: list[tuple[FeatureView, list[str]]], entity_ids: Sequence[int]) -> list[str]:
    """The keys of one multi-view read, view after view (the order the decoder expects)."""
    return [entity_key(view.name, int(e)) for view, _ in requests for e in entity_ids]


def watermark_key(view: str, shard: int, shards: int) -> str:
    return f"{KEY_PREFIX}:meta:{view}:watermark:{shard}of{shards}"


def lock_key(view: str, shard: int, shards: int) -> str:
    return f"{KEY_PREFIX}:lock:{view}:{shard}of{shards}"
