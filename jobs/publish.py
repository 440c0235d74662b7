"""``python -m jobs publish``: publish a model you trained yourself (app/modelstore/own_models.py).

    python -m jobs publish --model churn.skops --name churn --reference train.parquet --target churned

The summary line says which engine will serve the model and why, the parity figures (held-out and probe
rows against scikit-learn), and where the version lives.
"""

from __future__ import annotations

import argparse
from typing import Any

from app.modelstore import model_store
from jobs.settings import JobSettings
from jobs.train import add_feature_type_flags, feature_names_flag


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("publish", help="publish your own fitted scikit-learn model (skops, joblib or pickle)")
    p.add_argument("--model", required=True, metavar="FILE", help="the fitted estimator: .skops, .joblib or .pkl")
    p.add_argument("--name", required=True, help="the model's name in the store")
    p.add_argument(
        "--reference",
        required=True,
        metavar="DATA",
        help="Parquet or CSV rows like the training data: feature names, verification rows, drift profile",
    )
    p.add_argument("--target", help="the label column of DATA (left out of the features; gives accuracy)")
    p.add_argument(
        "--features",
        type=feature_names_flag,
        help="comma-separated feature columns, in the model's order (default: all but --target)",
    )
    add_feature_type_flags(p)
    p.add_argument("--version", help="the version's name (default: creation time and digest)")
    p.add_argument("--no-latest", action="store_true", help="publish without moving the latest pointer")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: JobSettings) -> dict[str, Any]:
    from app.modelstore.estimator_files import load_estimator_file
    from app.modelstore.own_models import publish_model

    estimator = load_estimator_file(args.model)
    published = publish_model(
        model_store(settings),
        estimator,
        name=args.name,
        reference=args.reference,
        target=args.target,
        features=args.features,
        categorical=args.categorical,
        numeric=args.numeric,
        hmac_key=settings.hmac_key,
        version=args.version,
        set_latest=not args.no_latest,
        source=f"{args.model} with reference {args.reference}",
        store_url=settings.model_store_url,
    )
    return {**published.summary(), "latest": not args.no_latest}
