"""Raw values of one MGET into per-view vectors with statuses (shared by the sync and async readers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from app.features.definitions import FeatureView
from app.features.online.codec import Codec


class Status(StrEnum):
    PRESENT = "PRESENT"
    MISSING = "MISSING"
    EXPIRED = "EXPIRED"


@dataclass
class FeatureVector:
    """Values of one view for many entities, aligned with the requested ids."""

    view: str
    features: list[str]
    values: dict[str, list[Any]]
    statuses: list[Status]
    event_timestamps_us: list[int | None]


class Decoder:
    """Turns the raw values of one MGET into per-view vectors with statuses (sync and async readers)."""

    def __init__(self) -> None:
        self._codecs: dict[str, Codec] = {}

    def codec(self, view: FeatureView) -> Codec:
        c = self._codecs.get(view.name)
        if c is None or c.view is not view:
            c = self._codecs[view.name] = Codec(view)
        return c

    def decode(
        self, requests: list[tuple[FeatureView, list[str]]], n: int, raw: list[Any], now_us: int | None
    ) -> list[FeatureVector]:
        now_us = now_us if now_us is not None else int(time.time() * 1_000_000)
        return [self._one(view, feats, raw[i * n : (i + 1) * n], now_us) for i, (view, feats) in enumerate(requests)]

    def _one(self, view: FeatureView, features: list[str], raw: list[Any], now_us: int) -> FeatureVector:
        codec = self.codec(view)
        n = len(raw)
        statuses = [Status.MISSING] * n
        stamps: list[int | None] = [None] * n
        cols: list[list[Any]] = [[None] * n for _ in features]
        positions = [view.feature_names.index(f) for f in features]
        pairs = list(zip(cols, positions, strict=True))
        for i, v in enumerate(raw):
            if v is None or len(v) != codec.size:
                continue
            event_us, rec, bitmap = codec.unpack(v)
            stamps[i] = event_us
            if codec.ttl_us and now_us - event_us > codec.ttl_us:
                statuses[i] = Status.EXPIRED
                continue
            statuses[i] = Status.PRESENT
            if bitmap == codec.no_nulls:
                for col, j in pairs:
                    col[i] = rec[j]
            else:
                for col, j in pairs:
                    col[i] = None if bitmap[j >> 3] >> (j & 7) & 1 else rec[j]
        return FeatureVector(view.name, features, dict(zip(features, cols, strict=True)), statuses, stamps)
