"""Declared feature types (issue 26): ``--categorical`` and ``--numeric`` on ``jobs train`` and ``jobs
publish``, one pair of flags for both, recorded in the version's drift profile; a declaration naming no
feature, or both types, is refused before anything is fitted or published."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.ensemble import RandomForestClassifier

from app.modelstore import LocalModelStore
from app.monitoring.profile import parse_profile
from jobs.__main__ import build_parser
from jobs.__main__ import main as jobs_main


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "zip": rng.integers(0, 60, 1500).astype(float),  # 60 integer values: the guess says numeric
            "tier": rng.integers(0, 3, 1500).astype(float),  # 3 integer values: the guess says categorical
            "amount": rng.lognormal(3, 1, 1500),
        }
    )
    df["label"] = ((df.zip % 2 == 0) ^ (df.amount > 20)).astype(int)
    df.to_parquet(tmp_path / "train.parquet")
    sio.dump(
        RandomForestClassifier(10, random_state=0).fit(df[["zip", "tier", "amount"]], df.label), tmp_path / "m.skops"
    )
    return tmp_path / "train.parquet", tmp_path / "m.skops"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = jobs_main(list(argv))
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def kinds(store: Path, name: str) -> dict[str, tuple[str, str]]:
    s = LocalModelStore(store)
    meta = s.read_metadata(name, s.latest(name) or "")
    profile = parse_profile(meta.reference_profile, meta.feature_names)
    assert profile is not None
    return {n: (fp.kind, fp.typed_by) for n, fp in profile.features.items()}


DECLARED = {"zip": ("categorical", "declared"), "tier": ("numeric", "declared"), "amount": ("numeric", "guessed")}


def test_train_and_publish_record_declared_types(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jobs.__main__.configure_logging", lambda *a, **k: None)
    data, model = files
    store = str(tmp_path / "store")
    flags = ("--categorical", "zip", "--numeric", "tier")
    code, out = run(
        capsys, "--store", store, "publish", "--model", str(model), "--name", "pub", "--reference", str(data),
        "--target", "label", *flags,
    )  # fmt: skip
    assert code == 0, out
    assert kinds(tmp_path / "store", "pub") == DECLARED
    code, out = run(
        capsys, "--store", store, "train", "--data", str(data), "--target", "label", "--name", "trained",
        "--n-estimators", "5", *flags,
    )  # fmt: skip
    assert code == 0, out
    assert kinds(tmp_path / "store", "trained") == DECLARED
    code, out = run(capsys, "--store", store, "train", "--data", str(data), "--target", "label", "--name", "guess")
    assert code == 0, out
    assert kinds(tmp_path / "store", "guess") == {
        "zip": ("numeric", "guessed"),
        "tier": ("categorical", "guessed"),
        "amount": ("numeric", "guessed"),
    }


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (("--categorical", "zipcode"), "categorical features ['zipcode'] are not among the features"),
        (("--numeric", "zip,nope"), "numeric features ['nope'] are not among the features"),
        (("--categorical", "zip", "--numeric", "zip"), "features ['zip'] are declared both categorical and numeric"),
    ],
)
@pytest.mark.parametrize("command", ["train", "publish"])
def test_a_bad_declaration_is_one_clear_error_and_nothing_is_published(
    files: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    flags: tuple[str, ...],
    error: str,
) -> None:
    monkeypatch.setattr("jobs.__main__.configure_logging", lambda *a, **k: None)
    data, model = files
    store = tmp_path / "store"
    args = (
        ("--model", str(model), "--name", "bad", "--reference", str(data))
        if command == "publish"
        else ("--data", str(data), "--name", "bad", "--n-estimators", "5")
    )
    code, out = run(capsys, "--store", str(store), command, *args, "--target", "label", *flags)
    assert code == 1 and error in out["error"], out
    assert not (store / "bad").exists()


def test_train_and_publish_take_the_same_type_flags() -> None:
    """One pair of flags, defined once (jobs.train.add_feature_type_flags), on both commands."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub: dict[str, argparse.ArgumentParser] = action.choices
    train, publish = (sub[c]._option_string_actions for c in ("train", "publish"))
    for flag in ("--categorical", "--numeric"):
        assert train[flag].help == publish[flag].help and train[flag].type is publish[flag].type
