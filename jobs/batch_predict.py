"""``python -m jobs batch-predict``: score every entity from the offline store, write the predictions
to Parquet (offline) and Redis (online) for the service to return without computing them.

The model must be one trained on feature views. Each entity's features are its latest row as of
``--as-of`` within the view's TTL (the same point-in-time rule as training); request-time fields,
which a batch has no request for, are fixed with ``--request FIELD=VALUE`` (e.g. "risk of a 50.00
purchase in category 8").
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from app.features.definitions import load_repo
from app.features.materialize import latest_per_entity
from app.features.online import connect
from app.features.request_transforms import load_transform
from app.features.stores import offline_store
from app.modelstore import model_store
from app.predict import precomputed
from jobs.settings import JobSettings

PREDICTIONS_DATASET = "predictions"


def _when(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("batch-predict", help="score every entity; predictions to Parquet and Redis")
    p.add_argument("--model", required=True, help="model name in the store (its latest version is used)")
    p.add_argument("--as-of", type=_when, default=None, help="feature time (default: now), ISO, UTC")
    p.add_argument(
        "--request",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="value of a request-time field for every entity (repeat per field)",
    )
    p.add_argument("--expire-hours", type=float, default=48.0, help="online predictions expire after this")
    p.set_defaults(handler=run)


def _request_values(pairs: list[str], fields: list[str]) -> list[float]:
    given: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--request {pair!r}: expected FIELD=VALUE")
        try:
            given[name] = float(value)
        except ValueError:
            raise ValueError(f"--request {pair!r}: value must be a number") from None
    unknown = sorted(set(given) - set(fields))
    missing = [f for f in fields if f not in given]
    if unknown or missing:
        raise ValueError(f"the model's request-time fields are {fields}: missing {missing}, unknown {unknown}")
    return [given[f] for f in fields]


def run(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    # Imported here: they pull in scikit-learn (slow to import), which the other jobs of this CLI do not need.
    from app.runtime.model import ModelLoadError, SklearnModel

    s = settings.features
    store = model_store(settings)
    version = store.latest(args.model)
    if version is None:
        raise ValueError(f"model {args.model!r} has no latest version in {settings.model_store_url}")
    meta, artifact = store.read_version(args.model, version)
    spec = meta.online_features
    if spec is None:
        raise ValueError(f"model {args.model!r} was not trained on feature views; batch-predict needs one that was")
    request = _request_values(args.request, spec.request_fields)
    model = SklearnModel(meta)
    try:  # as the service loads it: the graph, verified, where the version has one
        model.load(artifact, onnx_graph=store.read_onnx(meta) if meta.onnx is not None else None)
    except ModelLoadError as exc:
        raise ValueError(str(exc)) from None
    repo = load_repo(s.require_repo())
    wanted = repo.resolve(spec.feature_refs)
    offline = offline_store(s)
    as_of = args.as_of or datetime.now(UTC)

    # Latest row per entity of each view as of `as_of`, within its TTL; entities of all views.
    latest: dict[str, pa.Table] = {}
    for view_name, feats in wanted.items():
        view = repo.view(view_name)
        start = as_of - view.ttl if view.ttl > timedelta(0) else None
        cols = [view.entity.join_key, view.event_timestamp_column, view.created_timestamp_column, *feats]
        latest[view_name] = latest_per_entity(
            offline.read_window(view.source, view.event_timestamp_column, start, as_of, cols), view
        )
    ids = np.unique(np.concatenate([t.column(spec.entity_key).to_numpy() for t in latest.values()]))
    stats: dict[str, NDArray[np.float64]] = {}
    for view_name, feats in wanted.items():
        t = latest[view_name]
        pos = np.searchsorted(t.column(spec.entity_key).to_numpy(), ids)  # latest_per_entity sorts by key
        for f in feats:
            col = np.asarray(t.column(f).cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
            found = (pos < len(col)) & (t.column(spec.entity_key).to_numpy()[np.minimum(pos, len(col) - 1)] == ids)
            stats[f] = np.where(found, col[np.minimum(pos, len(col) - 1)], np.nan)
    transform = load_transform(spec.transform)  # the model's own: its reference is in its metadata
    x = transform(stats, np.tile(np.asarray(request, dtype=np.float64), (len(ids), 1)))
    proba = model.predict_proba(x)
    labels = model.classes_array[proba.argmax(axis=1)]

    as_of_iso = as_of.isoformat()
    table = pa.table(
        {
            spec.entity_key: pa.array(ids, pa.int64()),
            "model": pa.array([args.model] * len(ids)),
            "version": pa.array([version] * len(ids)),
            "as_of": pa.array([as_of] * len(ids), pa.timestamp("us", tz="UTC")),
            "label": pa.array(labels.tolist()),
            **{f"proba_{c}": pa.array(proba[:, i]) for i, c in enumerate(model.classes)},
        }
    )
    days = offline.write_partitioned(f"{PREDICTIONS_DATASET}/{args.model}", table, "as_of")

    client = connect(s.redis_url, cluster=s.redis_cluster, timeout_s=s.redis_timeout_seconds)
    expire_ms = int(args.expire_hours * 3_600_000)
    keys = [str(c) for c in model.classes]
    pipe = client.pipeline(transaction=False)
    for i, entity in enumerate(ids.tolist()):
        value = precomputed.encode(
            version,
            as_of_iso,
            labels[i].item() if hasattr(labels[i], "item") else labels[i],
            dict(zip(keys, proba[i].tolist(), strict=True)),
        )
        pipe.set(precomputed.prediction_key(args.model, entity), value, px=expire_ms)
        if (i + 1) % 5000 == 0:
            pipe.execute()
    pipe.execute()
    return {
        "model": args.model,
        "version": version,
        "as_of": as_of_iso,
        "entities": len(ids),
        "positive_rate": float((proba.argmax(axis=1) == len(keys) - 1).mean()) if len(ids) else 0.0,
        "parquet_partitions": days,
        "online_expire_hours": args.expire_hours,
    }
