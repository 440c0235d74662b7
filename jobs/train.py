"""``python -m jobs train``: train a scikit-learn pipeline and publish it to the model store.

Datasets are ones that ship with scikit-learn (no downloads at run time) plus the
benchmark's reference workload of ../docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.features.definitions import FeatureRepo, load_repo
from app.features.offline import OfflineStore
from app.features.request_transforms import load_reference
from app.features.stores import offline_store
from app.modelstore import ModelMetadata, ModelStore, model_store
from app.modelstore.metadata import OnlineFeatures
from app.modelstore.packaging import TrainingRun, publish_sklearn
from app.monitoring.profile import check_declared, compute_profile, score_of
from jobs.settings import JobSettings

# scikit-learn is imported inside the functions that train: it is slow to import, and every
# other job (materialization runs every few minutes) shares this CLI.


@dataclass
class Dataset:
    x: NDArray[np.float64]
    y: NDArray[Any]
    feature_names: list[str]
    target_name: str
    source: str
    online_features: OnlineFeatures | None = None
    time_ordered: bool = False  # split by time (train on the past, test on the future)
    table_versions: dict[str, int] | None = None  # offline datasets read -> their table versions
    entity_fingerprint: str | None = None


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _bundled(loader: Callable[..., Any], source: str) -> Dataset:
    bunch = loader()
    return Dataset(
        x=np.asarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target),
        feature_names=[_snake(n) for n in bunch.feature_names],
        target_name="target",
        source=source,
    )


def _reference() -> Dataset:
    from sklearn import datasets

    x, y = datasets.make_classification(n_samples=20000, n_features=20, random_state=0)
    return Dataset(x, y, [f"f{i}" for i in range(20)], "target", "make_classification(20000, 20, seed 0)")


def _from_feature_store(training_set: str, offline: OfflineStore, repo: FeatureRepo) -> Dataset:
    """A training set a ``module:function`` builds from the feature store (``function(offline, repo)`` ->
    app.features.training.TrainingSet); the model records the request-time transform it used."""
    from app.features.training import TrainingSet

    build = load_reference(training_set, "training set")
    if not callable(build):
        raise ValueError(f"training set {training_set!r} is not a function")
    ts = build(offline, repo)
    if not isinstance(ts, TrainingSet):
        raise ValueError(f"training set {training_set!r} returned {type(ts).__name__}, not a TrainingSet")
    return Dataset(
        ts.x,
        ts.y,
        ts.feature_names,
        ts.target_name,
        ts.source,
        online_features=OnlineFeatures(
            entity_key=ts.entity_key,
            feature_refs=ts.feature_refs,
            request_fields=list(ts.request_fields),
            transform=ts.transform,
        ),
        time_ordered=True,
        table_versions=dict(offline.versions_read),
        entity_fingerprint=offline.entity_fingerprint,
    )


def _from_file(path: str, target: str) -> Dataset:
    """Rows of a Parquet or CSV file: every column but ``target`` is a feature, in the file's order."""
    from app.modelstore.own_models import read_reference

    table = read_reference(path)
    if target not in table.column_names:
        raise ValueError(f"--target {target!r} is not a column of {path} (columns: {table.column_names})")
    names = [c for c in table.column_names if c != target]
    x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float64) for n in names])
    return Dataset(x, table.column(target).to_numpy(zero_copy_only=False), names, target, path)


def feature_names_flag(value: str) -> list[str]:
    """A comma-separated list of feature names."""
    return [v.strip() for v in value.split(",") if v.strip()]


def add_feature_type_flags(p: argparse.ArgumentParser) -> None:
    """``--categorical`` and ``--numeric``: the features' types for the drift profile, declared (the train and
    publish jobs take the same flags); an undeclared feature's type is guessed (integers with at most 20
    values: categorical)."""
    p.add_argument(
        "--categorical",
        type=feature_names_flag,
        metavar="A,B",
        help="comma-separated categorical features: drift bins them by category, however many (default: guessed)",
    )
    p.add_argument(
        "--numeric",
        type=feature_names_flag,
        metavar="A,B",
        help="comma-separated numeric features: drift bins them at training deciles (default: guessed)",
    )


def build_estimator(spec: str) -> Any:
    """``module:function`` returning an unfitted scikit-learn classifier (or pipeline): the user's own."""
    from app.features.request_transforms import TransformError, load_reference

    try:
        make = load_reference(spec, "estimator")
    except TransformError as exc:  # the message names the spec and why: one summary line, not a traceback
        raise ValueError(str(exc)) from exc
    if not callable(make):
        raise ValueError(f"estimator {spec!r} is not a function")
    est = make()
    if not hasattr(est, "fit") or not hasattr(est, "predict_proba"):
        raise ValueError(f"estimator {spec!r} returned {type(est).__name__}, not a classifier with predict_proba")
    return est


def _sklearn_dataset(name: str) -> Dataset:
    from sklearn import datasets

    return _bundled(getattr(datasets, f"load_{name}"), f"sklearn.datasets.load_{name}")


DATASETS: dict[str, Callable[[], Dataset]] = {
    "breast-cancer": lambda: _sklearn_dataset("breast_cancer"),
    "wine": lambda: _sklearn_dataset("wine"),
    "iris": lambda: _sklearn_dataset("iris"),
    "reference": _reference,
}
# Datasets built from the feature store, by name: the reference scenario's (examples/). Any other
# ``module:function`` is trained with ``--training-set``.
FEATURE_STORE_DATASETS = {"fraud": "examples.fraud.training:fraud_training_set"}


def build_pipeline(dataset: str, n_estimators: int, max_depth: int | None) -> Any:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    forest = RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=0, n_jobs=1)
    if dataset == "reference":
        # Exactly the benchmark's reference model: no scaler, so peers serve the same thing.
        return Pipeline([("model", forest)])
    return Pipeline([("scale", StandardScaler()), ("model", forest)])


def train_and_publish(
    store: ModelStore,
    *,
    dataset: str,
    name: str,
    n_estimators: int = 50,
    max_depth: int | None = 8,
    test_size: float = 0.25,
    seed: int = 0,
    hmac_key: bytes | None = None,
    version: str | None = None,
    set_latest: bool = True,
    offline: OfflineStore | None = None,
    repo: FeatureRepo | None = None,
    training_set: str | None = None,
    expect_entity_fingerprint: str | None = None,
    estimator: str | None = None,
    data_file: str | None = None,
    target: str | None = None,
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
) -> ModelMetadata:
    """Train, then publish to ``store`` (``model_store(settings)``): packaging (metadata, signature,
    verification sample) is the store's (app.modelstore.packaging). ``training_set``: a ``module:function``
    building the data from the feature store (``offline`` and ``repo``); the feature-store datasets
    (FEATURE_STORE_DATASETS) are named ones. ``categorical`` and ``numeric`` declare features' types for the
    drift profile (the others are guessed), checked before training."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split

    reference = None if data_file else training_set or FEATURE_STORE_DATASETS.get(dataset)
    if data_file is not None:
        if target is None:
            raise ValueError("--data needs --target: the label column")
        data = _from_file(data_file, target)
    elif reference is not None:
        if offline is None or repo is None:
            raise ValueError(f"training set {reference!r} needs the offline feature store and a feature repository")
        data = _from_feature_store(reference, offline, repo)
    elif dataset in DATASETS:
        data = DATASETS[dataset]()
    else:
        raise ValueError(
            f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS) + sorted(FEATURE_STORE_DATASETS)}"
        )
    if expect_entity_fingerprint is not None and data.entity_fingerprint != expect_entity_fingerprint:
        raise ValueError(
            f"the pinned tables gave entity rows with fingerprint {data.entity_fingerprint}, the model recorded "
            f"{expect_entity_fingerprint}: the training set's code no longer builds the same rows"
        )
    check_declared(data.feature_names, categorical, numeric)  # a typo fails now, not after the fit
    if data.time_ordered:
        cut = int(len(data.y) * (1 - test_size))
        x_train, x_test, y_train, y_test = data.x[:cut], data.x[cut:], data.y[:cut], data.y[cut:]
    else:
        x_train, x_test, y_train, y_test = train_test_split(
            data.x, data.y, test_size=test_size, random_state=seed, stratify=data.y
        )
    pipe = build_estimator(estimator) if estimator else build_pipeline(dataset, n_estimators, max_depth)
    pipe.fit(x_train, y_train)
    proba = pipe.predict_proba(x_test)
    pred = pipe.classes_[proba.argmax(axis=1)]
    metrics = {
        "accuracy": float(accuracy_score(y_test, pred)),
        "f1_macro": float(f1_score(y_test, pred, average="macro")),
        "log_loss": float(log_loss(y_test, proba, labels=pipe.classes_)),
    }
    if len(pipe.classes_) == 2:
        metrics["roc_auc"] = float(roc_auc_score(y_test, proba[:, 1]))
    else:
        metrics["roc_auc_ovr"] = float(roc_auc_score(y_test, proba, multi_class="ovr"))

    # The reference the service bins served rows against (drift, schema skew): training features,
    # held-out scores.
    profile = compute_profile(x_train, data.feature_names, score_of(proba), categorical=categorical, numeric=numeric)
    run = TrainingRun(
        feature_names=data.feature_names,
        target_name=data.target_name,
        metrics=metrics,
        source=data.source,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        test_probabilities=proba,
        params={
            "dataset": data_file or training_set or dataset,
            **({"estimator": estimator} if estimator else {"n_estimators": n_estimators, "max_depth": max_depth}),
            "seed": seed,
        },
        online_features=data.online_features,
        reference_profile=profile.model_dump(),
        table_versions=data.table_versions,  # what the data was read from, for `train --as-of-version`
        entity_fingerprint=data.entity_fingerprint,
    )
    return publish_sklearn(store, pipe, name, run, hmac_key=hmac_key, version=version, set_latest=set_latest)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a scikit-learn pipeline and publish it to the model store")
    p.add_argument("--dataset", default="breast-cancer", choices=sorted(DATASETS) + sorted(FEATURE_STORE_DATASETS))
    p.add_argument("--name", help="model name in the store (default: the dataset name)")
    p.add_argument("--n-estimators", type=int, default=50)
    p.add_argument("--max-depth", type=int, default=8, help="0 for unlimited")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-latest", action="store_true", help="publish without moving the latest pointer")
    p.add_argument(
        "--estimator",
        metavar="MODULE:FUNCTION",
        help="your own unfitted classifier or pipeline: function() -> estimator (default: the built-in forest)",
    )
    p.add_argument("--data", metavar="FILE", help="train on a Parquet or CSV file (needs --target and --name)")
    p.add_argument("--target", help="the label column of --data")
    add_feature_type_flags(p)
    p.add_argument(
        "--training-set",
        metavar="MODULE:FUNCTION",
        help="train on the feature store: function(offline, repo) -> app.features.training.TrainingSet "
        "(needs --name; FEATURES_REPO names the repository)",
    )
    p.add_argument(
        "--as-of-version",
        metavar="MODEL[:VERSION]",
        help="rebuild a past model's training set: read the offline tables at the versions its metadata "
        "recorded (default version: its latest); the dataset or training set and the name default to its own",
    )
    p.set_defaults(handler=run)


def _pinned_from(store: ModelStore, ref: str) -> tuple[ModelMetadata, dict[str, int]]:
    """The past model ``name[:version]`` and the table versions its training set read."""
    name, _, version = ref.partition(":")
    version = version or store.latest(name) or ""
    if not version:
        raise ValueError(f"--as-of-version {ref!r}: model {name!r} has no latest version; name one")
    past = store.read_metadata(name, version)
    if not past.training_data.table_versions:
        raise ValueError(
            f"--as-of-version {ref!r}: model {name} version {version} recorded no table versions "
            "(trained before the lakehouse offline store, or not on the feature store)"
        )
    return past, past.training_data.table_versions


def run(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    offline, repo = None, None
    expect_fp: str | None = None
    pinned: dict[str, int] | None = None
    if args.as_of_version:
        past, pinned = _pinned_from(model_store(settings), args.as_of_version)
        expect_fp = past.training_data.entity_fingerprint
        recorded = str(past.params.get("dataset", ""))
        if recorded in FEATURE_STORE_DATASETS:
            args.dataset = recorded
        elif not args.training_set:
            args.training_set = recorded
        args.name = args.name or past.name
    if (args.training_set or args.data) and not args.name:
        raise ValueError("--training-set and --data need --name: the model's name in the store")
    if args.training_set or args.dataset in FEATURE_STORE_DATASETS:
        offline, repo = offline_store(settings.features), load_repo(settings.features.require_repo())
        if pinned is not None:
            offline = offline.pin(pinned)
    meta = train_and_publish(
        model_store(settings),  # the URL (or --store), S3 endpoint and region of the settings
        offline=offline,
        repo=repo,
        training_set=args.training_set,
        dataset=args.dataset,
        name=args.name or args.dataset,
        n_estimators=args.n_estimators,
        max_depth=args.max_depth or None,
        seed=args.seed,
        hmac_key=settings.hmac_key,
        set_latest=not args.no_latest,
        expect_entity_fingerprint=expect_fp,
        estimator=args.estimator,
        data_file=args.data,
        target=args.target,
        categorical=args.categorical,
        numeric=args.numeric,
    )
    chosen = meta.engine_choice
    engine = chosen.engine if chosen is not None else "sklearn" if meta.onnx is None else "onnxruntime"
    return {
        "model": meta.name,
        "version": meta.version,
        "store": settings.model_store_url,
        "metrics": meta.metrics,
        "sha256": meta.sha256,
        # The graph the service runs (onnxruntime), or why the version will be served by scikit-learn.
        "onnx": meta.onnx.file if meta.onnx is not None else f"none: {meta.onnx_unavailable}",
        "engine": engine,
        "latest": not args.no_latest,
        "table_versions": meta.training_data.table_versions,
        "fingerprint": meta.training_data.fingerprint,
    }


def data_versions(store: ModelStore, name: str) -> dict[str, dict[str, int]]:
    """Version -> the table versions its training set read, for the versions that recorded them
    (``jobs list-models``). A version whose metadata cannot be read is left out here: loading it says why."""
    out: dict[str, dict[str, int]] = {}
    for version in store.list_versions(name):
        try:
            recorded = store.read_metadata(name, version).training_data.table_versions
        except Exception:  # a listing must not fail on one broken version
            continue
        if recorded:
            out[version] = recorded
    return out
