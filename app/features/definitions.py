"""Feature definitions as code: entities (join keys) and feature views.

Validated when a ``FeatureRepo`` is built, so a typo fails at load time with a
message naming the object, not at 3 a.m. inside a CronJob.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import numpy as np

DType = Literal["float32", "float64", "int32", "int64"]
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class DefinitionError(ValueError):
    """A feature definition is invalid; the message names it."""


@dataclass(frozen=True)
class Entity:
    name: str
    join_key: str
    dtype: Literal["int64"] = "int64"
    description: str = ""


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: DType
    description: str = ""


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity, one row per entity per event time, stored under ``source``.

    ``ttl``: how long a row stays valid after its event time, for online reads and
    point-in-time joins alike (inclusive); ``timedelta(0)`` means no limit.
    """

    name: str
    entity: Entity
    source: str  # dataset path relative to the offline store root
    features: tuple[Feature, ...]
    ttl: timedelta
    event_timestamp_column: str = "event_timestamp"
    created_timestamp_column: str = "created_timestamp"
    online: bool = True
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise DefinitionError(f"feature view {self.name!r} has no feature {name!r}; it has {self.feature_names}")

    def numpy_dtype(self) -> np.dtype[np.void]:
        """Little-endian packed record of the view's features, in declaration order."""
        return np.dtype([(f.name, np.dtype(f.dtype).newbyteorder("<")) for f in self.features])

    def validate(self) -> None:
        if not NAME_RE.match(self.name):
            raise DefinitionError(f"feature view name {self.name!r}: use lowercase letters, digits, '_'")
        if not self.features:
            raise DefinitionError(f"feature view {self.name!r} has no features")
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DefinitionError(f"feature view {self.name!r}: duplicate features {dup}")
        reserved = {self.entity.join_key, self.event_timestamp_column, self.created_timestamp_column}
        for f in self.features:
            if not NAME_RE.match(f.name):
                raise DefinitionError(f"feature view {self.name!r}: invalid feature name {f.name!r}")
            if f.name in reserved:
                raise DefinitionError(f"feature view {self.name!r}: feature {f.name!r} clashes with a key column")
            if f.dtype not in ("float32", "float64", "int32", "int64"):
                raise DefinitionError(f"feature view {self.name!r}: feature {f.name!r} has dtype {f.dtype!r}")
        if self.ttl < timedelta(0):
            raise DefinitionError(f"feature view {self.name!r}: ttl must be >= 0")
        if not self.source or self.source.startswith("/") or ".." in self.source.split("/"):
            raise DefinitionError(f"feature view {self.name!r}: source must be a relative path, got {self.source!r}")


class FeatureRepo:
    """The set of definitions a deployment uses; references resolve as ``view:feature``."""

    def __init__(self, entities: list[Entity], views: list[FeatureView]) -> None:
        self.entities = {e.name: e for e in entities}
        if len(self.entities) != len(entities):
            raise DefinitionError("duplicate entity names")
        self.views: dict[str, FeatureView] = {}
        for v in views:
            v.validate()
            if v.entity.name not in self.entities:
                raise DefinitionError(f"feature view {v.name!r} uses undeclared entity {v.entity.name!r}")
            if v.name in self.views:
                raise DefinitionError(f"duplicate feature view {v.name!r}")
            self.views[v.name] = v

    def view(self, name: str) -> FeatureView:
        try:
            return self.views[name]
        except KeyError:
            raise DefinitionError(f"unknown feature view {name!r}; known: {sorted(self.views)}") from None

    def resolve(self, refs: list[str]) -> dict[str, list[str]]:
        """``["view:feature", "view:*", ...]`` -> ``{view: [features]}`` in first-seen order, validated;
        ``view:*`` is every feature of the view, in its definition's order."""
        out: dict[str, list[str]] = {}
        for ref in refs:
            view_name, sep, feat = ref.partition(":")
            if not sep or not feat:
                raise DefinitionError(f"feature reference {ref!r} must look like 'view:feature' or 'view:*'")
            view = self.view(view_name)
            names = view.feature_names if feat == "*" else [view.feature(feat).name]
            lst = out.setdefault(view_name, [])
            lst.extend(n for n in names if n not in lst)
        if not out:
            raise DefinitionError("no features requested")
        return out


def load_repo(spec: str) -> FeatureRepo:
    """Import ``module:function`` and call it; every failure names the spec and the reason."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise DefinitionError(f"feature repo {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(f"feature repo {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise DefinitionError(f"feature repo {spec!r}: {module_name} has no function {attr!r}")
    repo = factory()
    if not isinstance(repo, FeatureRepo):
        raise DefinitionError(f"feature repo {spec!r} returned {type(repo).__name__}, not a FeatureRepo")
    return repo
