"""Edge bundle benchmark: size, load time and one-thread single-row latency of the bundles in onnxruntime,
against scikit-learn and the prediction service's engine (onnxruntime on the publisher's float32 graph) for
the reference forest, and against torch for the image+text model (float and int8), with the int8 variant's
accuracy; and the edge runner's virtualenv size.

    python -m bench.edge [--rows 2000] [--train-size 1200] [--epochs 15] [--held-out 600]

Everything runs in this process on one thread (onnxruntime intra-op 1, torch.set_num_threads(1),
scikit-learn n_jobs=1), same run, so the ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from app.edge import bundle, sklearn_export, torch_export
from app.edge.runner import EdgeModel

ROOT = Path(__file__).resolve().parent.parent


def p50_us(fn: Callable[[int], Any], n: int) -> float:
    """Median microseconds of ``fn(i)`` over ``n`` calls, after 50 warm-up calls."""
    for i in range(50):
        fn(i)
    samples = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def _predict_single(model: Any, singles: Any, i: int) -> Any:
    return model.predict_proba(list(singles[i % len(singles)]))


def load_ms(fn: Callable[[], Any], rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def write(directory: Path, parts: dict[str, Any], source: dict[str, Any]) -> Path:
    files, manifest = bundle.build(source=source, **parts)
    bundle.write_bundle(str(directory), files, manifest)
    return directory


def reference_forest(rows: int, work: Path) -> dict[str, Any]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    from app.modelstore.packaging import TrainingRun, package_sklearn
    from app.onnx.session import make_session
    from app.onnx.sklearn_convert import sklearn_to_onnx
    from jobs.train import build_pipeline

    x, y = datasets.make_classification(n_samples=20000, n_features=20, random_state=0)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    pipe = build_pipeline("reference", 50, 8).fit(x_train, y_train)
    proba = pipe.predict_proba(x_test)
    run = TrainingRun(
        [f"f{i}" for i in range(20)], "target", {}, "make_classification", x_train, y_train, x_test, proba, {}
    )
    meta, artifact = package_sklearn(pipe, "reference", run)
    parts = sklearn_export.export(pipe, meta, x_test)
    directory = write(work / "reference", parts, {"name": "reference", "size_bytes": len(artifact)})
    edge = EdgeModel(directory)
    # The prediction service's engine: the publisher's float32 graph in onnxruntime (app/onnx), one thread.
    service = make_session(sklearn_to_onnx(pipe, 20), intra_op_threads=1, inter_op_threads=1)
    rows_ = [x_test[i % len(x_test)][None, :] for i in range(rows)]
    rows32 = [r.astype(np.float32) for r in rows_]
    session, feed_name = edge.session, edge.inputs[0]["name"]
    result = {
        "pickle_bytes": len(artifact),
        "onnx_bytes": len(parts["variants"][0].onnx),
        "parity_max_abs_diff_held_out": parts["parity"]["float"]["max_abs_diff"],
        "held_out_rows": len(x_test),
        "p50_us": {
            "onnxruntime_session": p50_us(lambda i: session.run(["probabilities"], {feed_name: rows_[i % rows]}), rows),
            "edge_runner": p50_us(lambda i: edge.predict_proba([rows_[i % rows]]), rows),
            "sklearn": p50_us(lambda i: pipe.predict_proba(rows_[i % rows]), min(rows, 500)),
            "service_engine": p50_us(lambda i: service.run(["probabilities"], {"input": rows32[i % rows]}), rows),
        },
        "load_ms": {
            "edge_bundle": load_ms(lambda: EdgeModel(directory)),  # manifest, sha256 of every file, session
            "pickle": load_ms(lambda: pickle.load(io.BytesIO(artifact))),
        },
    }
    result["size_ratio_onnx_to_pickle"] = result["onnx_bytes"] / result["pickle_bytes"]
    return result


def multimodal(train_size: int, epochs: int, held_out: int, rows: int, work: Path) -> dict[str, Any]:
    import torch

    from app.multimodal.model import save_checkpoint
    from app.multimodal.training import to_arrays
    from examples.multimodal.dataset import generate
    from examples.multimodal.training import TRAIN_IMAGE_SIZE, train

    torch.set_num_threads(1)
    t = time.perf_counter()
    model, metrics, _ = train(train_size, train_size // 4, epochs, 0)
    train_s = time.perf_counter() - t
    items = generate(held_out, seed=1234, size=TRAIN_IMAGE_SIZE)
    data = to_arrays(items, model.tokenizer)
    parts = torch_export.export(model, data.images, data.tokens, data.labels)
    directory = write(work / "multimodal", parts, {"name": "product-classifier", "size_bytes": 0})
    checkpoint = save_checkpoint(model, work / "checkpoint") / "model.pt"
    models = {v: EdgeModel(directory, variant=v) for v in ("float", "int8")}
    singles = [(data.images[i : i + 1], data.tokens[i : i + 1]) for i in range(len(data.labels))]
    model.eval()

    def torch_one(i: int) -> Any:
        img, tok = singles[i % len(singles)]
        with torch.no_grad():
            return model(torch.from_numpy(img), torch.from_numpy(tok))

    def load_torch() -> Any:
        from app.multimodal.model import load_checkpoint

        return load_checkpoint(checkpoint.parent)

    result: dict[str, Any] = {
        "train_seconds": train_s,
        "train_metrics": metrics,
        "held_out_items": held_out,
        "bytes": {
            "torch_state_dict": checkpoint.stat().st_size,
            "onnx_float": len(parts["variants"][0].onnx),
            "onnx_int8": len(parts["variants"][1].onnx),
        },
        "parity": parts["parity"],
        "p50_us": {"torch": p50_us(torch_one, rows)},
        "load_ms": {"torch_checkpoint": load_ms(load_torch)},
    }
    for name, m in models.items():
        result["p50_us"][f"onnx_{name}"] = p50_us(partial(_predict_single, m, singles), rows)
        result["load_ms"][f"edge_{name}"] = load_ms(partial(EdgeModel, directory, variant=name))
    result["int8_to_float_size"] = result["bytes"]["onnx_int8"] / result["bytes"]["onnx_float"]
    return result


def runner_venv() -> dict[str, Any]:
    from tests.edge import minimal_venv

    python = minimal_venv.ensure()
    site = next((minimal_venv.VENV / "lib").glob("python3*/site-packages"))
    per_dir: dict[str, int] = {}
    for p in site.rglob("*"):
        if p.is_file() and not p.is_symlink():
            top = p.relative_to(site).parts[0]
            per_dir[top] = per_dir.get(top, 0) + p.stat().st_size
    biggest = sorted(per_dir.items(), key=lambda kv: -kv[1])[:6]
    return {
        "packages": minimal_venv.installed_packages(python),
        "site_packages_mb": round(sum(per_dir.values()) / 1e6, 1),
        "largest_mb": {k: round(v / 1e6, 1) for k, v in biggest},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000, help="single-row calls per latency measurement")
    ap.add_argument("--train-size", type=int, default=1200, help="image+text training listings")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--held-out", type=int, default=600, help="image+text held-out listings (parity, accuracy)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {
            "reference_forest": reference_forest(args.rows, work),
            "multimodal": multimodal(args.train_size, args.epochs, args.held_out, args.rows, work),
            "edge_runner_venv": runner_venv(),
            "args": vars(args),
        }
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / f"edge-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
