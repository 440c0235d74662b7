"""Outcome monitoring: once labels arrive, how good the served predictions were, per model version.

Labels are rows ``(entity, ts, label)``: the outcome of the prediction served for that entity at or just
before ``ts``. Each label is matched to the latest
sampled served row of the same entity with ``served ts <= ts <= served ts + max_delay`` (an as-of join);
unmatched labels are counted, not guessed. Per version: ROC AUC, log loss, the expected calibration
error over 10 equal-width score bins and the reliability table (mean score against positive rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

CALIBRATION_BINS = 10


@dataclass
class VersionOutcome:
    version: str
    labeled: int
    positives: int
    auc: float | None  # None when only one class was seen
    log_loss: float
    calibration_error: float
    reliability: list[dict[str, float]] = field(default_factory=list)


def _us(col: pa.ChunkedArray) -> NDArray[np.int64]:
    return np.asarray(pc.cast(col, pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(), dtype=np.int64)


def match_labels(served: pa.Table, labels: pa.Table, max_delay_us: int) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """For each label row, the index of its served row (as-of join on entity and time) and whether found."""
    s_ent = np.asarray(pc.cast(served.column("entity"), pa.string()).fill_null("").to_pylist(), dtype=object)
    l_ent = np.asarray(pc.cast(labels.column("entity"), pa.string()).to_pylist(), dtype=object)
    s_ts, l_ts = _us(served.column("ts")), _us(labels.column("ts"))
    order = np.lexsort((s_ts, s_ent))  # by entity, then time
    keys = s_ent[order]
    idx = np.full(len(l_ent), -1, dtype=np.intp)
    for i, (e, t) in enumerate(zip(l_ent, l_ts, strict=True)):
        lo, hi = np.searchsorted(keys, e, side="left"), np.searchsorted(keys, e, side="right")
        if lo == hi:
            continue
        times = s_ts[order[lo:hi]]
        j = np.searchsorted(times, t, side="right") - 1
        if j >= 0 and t - times[j] <= max_delay_us:
            idx[i] = order[lo + j]
    return idx, idx >= 0


def outcome(version: str, scores: NDArray[np.float64], y: NDArray[np.int64]) -> VersionOutcome:
    from sklearn.metrics import log_loss, roc_auc_score

    p = np.clip(scores, 1e-15, 1 - 1e-15)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else None
    bins = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    table, ece = [], 0.0
    for b in range(CALIBRATION_BINS):
        m = bins == b
        if not m.any():
            continue
        mean_score, rate = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(p) * abs(mean_score - rate)
        table.append({"bin": b, "rows": int(m.sum()), "mean_score": mean_score, "positive_rate": rate})
    return VersionOutcome(
        version=version,
        labeled=len(y),
        positives=int(y.sum()),
        auc=auc,
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        calibration_error=float(ece),
        reliability=table,
    )


def outcomes_by_version(
    served: pa.Table, labels: pa.Table, max_delay_us: int
) -> tuple[list[VersionOutcome], dict[str, Any]]:
    """Per-version outcomes of the labels matched to served rows, and the matching counts."""
    for name, cols in (
        ("served-data log", ("entity", "ts", "version", "score")),
        ("labels", ("entity", "ts", "label")),
    ):
        table = served if name == "served-data log" else labels
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise ValueError(f"the {name} lacks the columns {missing}")
    idx, found = match_labels(served, labels, max_delay_us)
    y_all = np.asarray(pc.cast(labels.column("label"), pa.int64()).to_numpy(zero_copy_only=False))
    if not set(np.unique(y_all)) <= {0, 1}:
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(np.unique(y_all).tolist()))[:5]}")
    versions = np.asarray(served.column("version").to_pylist(), dtype=object)
    scores = np.asarray(served.column("score").to_numpy(zero_copy_only=False), dtype=np.float64)
    out = []
    for v in sorted(set(versions[idx[found]].tolist())):
        m = found.copy()
        m[found] = versions[idx[found]] == v
        out.append(outcome(v, scores[idx[m]], y_all[m]))
    return out, {"labels": len(y_all), "matched": int(found.sum()), "unmatched": int((~found).sum())}
