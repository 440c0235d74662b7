"""Publish a model you trained yourself: a fitted scikit-learn classifier and rows like its training data.

    from app.modelstore import open_store
    from app.modelstore.estimator_files import load_estimator_file
    from app.modelstore.own_models import publish_model

    estimator = load_estimator_file("churn.skops")

    published = publish_model(open_store("s3://models/prod"), estimator, name="churn",
                              reference="train.parquet", target="churned")
    print(published.summary())

The reference rows (Parquet or CSV, or a pyarrow Table) name the features and their order, supply the rows
the graph is verified on (with the probe rows built from the model), and the training profile that drift
monitoring compares served traffic with. ``python -m jobs publish`` is the same function on the command line.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.modelstore.metadata import MODEL_NAME_RE, ModelMetadata
from app.modelstore.packaging import TrainingRun, publish_sklearn
from app.modelstore.store import ModelStore

CHECK_ROWS = 2000  # reference rows the graph is checked on at publish (beside the probes); 32 travel in metadata


class PublishError(ValueError):
    """The model and its reference rows cannot be published together; the message says why."""


@dataclass(frozen=True)
class Published:
    meta: ModelMetadata
    store_url: str

    @property
    def engine(self) -> str:
        choice = self.meta.engine_choice
        if self.meta.onnx is None:
            return "sklearn"
        return choice.engine if choice is not None else "onnxruntime"

    @property
    def engine_reason(self) -> str:
        if self.meta.onnx is None:
            return f"no ONNX graph: {self.meta.onnx_unavailable}"
        choice = self.meta.engine_choice
        return choice.reason if choice is not None else "ONNX graph verified at publish"

    def summary(self) -> dict[str, Any]:
        onnx = self.meta.onnx
        return {
            "model": self.meta.name,
            "version": self.meta.version,
            "store": self.store_url,
            "engine": self.engine,
            "why": self.engine_reason,
            "parity": None
            if onnx is None
            else {
                "max_abs_diff": onnx.max_abs_diff,
                "rows_checked": onnx.rows_checked,
                "probe_rows": onnx.probe_rows_checked,
            },
            "features": self.meta.feature_names,
            "classes": self.meta.classes,
            "metrics": self.meta.metrics,
        }


def read_reference(source: str | Path | Any) -> Any:
    """A pyarrow Table from a Parquet or CSV file (by suffix), or the Table (or pandas DataFrame) given."""
    import pyarrow as pa

    if isinstance(source, pa.Table):
        return source
    if hasattr(source, "columns") and hasattr(source, "to_numpy"):  # a pandas DataFrame
        return pa.Table.from_pandas(source, preserve_index=False)
    path = Path(source)
    if not path.is_file():
        raise PublishError(f"reference data {path}: no such file")
    try:
        if path.suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            parse = pcsv.ParseOptions(delimiter="\t" if path.suffix == ".tsv" else ",")
            return pcsv.read_csv(path, parse_options=parse)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and friends
        raise PublishError(f"reference data {path}: cannot be read as {path.suffix or 'Parquet'}: {exc}") from exc


def _matrix(table: Any, features: Sequence[str]) -> NDArray[np.float64]:
    import pyarrow as pa

    cols = []
    for name in features:
        col = table.column(name)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            raise PublishError(
                f"feature {name!r} is {col.type}: the service takes numbers; encode it as numbers in the reference "
                "rows, as the model was fitted"
            )
        cols.append(col.cast(pa.float64()).to_numpy(zero_copy_only=False))
    return np.column_stack(cols) if cols else np.zeros((table.num_rows, 0))


def _features(estimator: Any, table: Any, target: str | None, features: Sequence[str] | None) -> list[str]:
    columns = list(table.column_names)
    if target is not None and target not in columns:
        raise PublishError(f"target column {target!r} is not in the reference data (columns: {columns})")
    names = list(features) if features else [c for c in columns if c != target]
    missing = [n for n in names if n not in columns]
    if missing:
        raise PublishError(f"features {missing} are not in the reference data (columns: {columns})")
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if fitted_names is not None and list(fitted_names) != names:
        if not features and set(fitted_names) <= set(columns):
            return [str(n) for n in fitted_names]  # the model knows its columns and their order
        raise PublishError(f"the model was fitted on features {list(fitted_names)}, the reference gives {names}")
    width = getattr(estimator, "n_features_in_", None)
    if width is not None and width != len(names):
        raise PublishError(
            f"the model takes {width} features, the reference data gives {len(names)}: {names} "
            "(name them with features=, or the target with target=)"
        )
    return names


def publish_model(
    store: ModelStore,
    estimator: Any,
    *,
    name: str,
    reference: str | Path | Any,
    target: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] | None = None,
    hmac_key: bytes | None = None,
    version: str | None = None,
    set_latest: bool = True,
    source: str | None = None,
    store_url: str = "",
) -> Published:
    """Verify ``estimator`` on the reference rows and publish it as ``name``; ``latest`` moves only when
    everything was written and reads back. Raises PublishError (or EstimatorFileError, ModelStoreError)."""
    from sklearn.metrics import accuracy_score, log_loss

    from app.monitoring.profile import ProfileError, check_declared, compute_profile, score_of

    if not MODEL_NAME_RE.match(name):  # before the conversion's work, not after it
        raise PublishError(f"invalid model name {name!r}: use lowercase letters, digits and '-', at most 63 characters")
    if not hasattr(estimator, "predict_proba"):
        raise PublishError(f"{type(estimator).__name__} has no predict_proba: the platform serves probabilities")
    table = read_reference(reference)
    if table.num_rows == 0:
        raise PublishError("the reference data has no rows")
    names = _features(estimator, table, target, features)
    try:
        check_declared(names, categorical, numeric)
    except ProfileError as exc:
        raise PublishError(str(exc)) from None
    x = _matrix(table, names)
    with warnings.catch_warnings():
        # fitted on a DataFrame, served with arrays in the same column order (checked above)
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            proba = np.asarray(estimator.predict_proba(x), dtype=np.float64)
        except Exception as exc:  # scikit-learn's ValueError for NaN, shape, dtype, ...
            raise PublishError(f"the model cannot predict the reference rows: {exc}") from exc
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])]
    metrics: dict[str, float] = {}
    y = np.zeros(len(x), dtype=np.int64)
    if target is not None:
        y = table.column(target).to_numpy(zero_copy_only=False)
        pred = np.asarray(estimator.classes_)[proba.argmax(axis=1)]
        metrics["accuracy"] = float(accuracy_score(y, pred))
        if set(np.unique(y)) <= set(classes):
            metrics["log_loss"] = float(log_loss(y, proba, labels=estimator.classes_))
    check = np.linspace(0, len(x) - 1, num=min(CHECK_ROWS, len(x))).astype(int)
    profile = compute_profile(x, names, score_of(proba), categorical=categorical, numeric=numeric)
    run = TrainingRun(
        feature_names=names,
        target_name=target or "target",
        metrics=metrics,
        source=source or (str(reference) if isinstance(reference, str | Path) else "reference rows"),
        x_train=x,
        y_train=y,
        x_test=x[check],
        test_probabilities=proba[check],
        params={"published": "own model", "estimator": type(estimator).__name__},
        reference_profile=profile.model_dump(),
    )
    meta = publish_sklearn(store, estimator, name, run, hmac_key=hmac_key, version=version, set_latest=set_latest)
    return Published(meta=meta, store_url=store_url or store.url)
