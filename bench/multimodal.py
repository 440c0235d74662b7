"""Multimodal benchmark: preprocessing per core against a naive baseline and the decode floor, and
end to end through the preprocessing service and Triton at 1 and 16 connections, with and without
Triton's dynamic batching.

    python -m bench.multimodal [--images 20] [--seconds 10]

Images are photo-like 1600x1200 JPEGs, quality 90 (drawn products over sensor-like noise, so the
entropy decoder has real work, ~0.5-1 MB each). Everything runs here on CPU: Triton's python
backend with torch, one model instance.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.multimodal.preprocessing import decode_and_resize, naive_decode_and_resize
from bench.loadgen import wrk_post
from devharness import leaves_nothing_running
from examples.multimodal.dataset import VOCABULARY, draw

ROOT = Path(__file__).resolve().parent.parent


def photo_like(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.asarray(draw(rng, i % 3, (1600, 1200)), dtype=np.int16)
        noise = rng.normal(0, 12, img.shape)
        pic = Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def per_image_ms(fn: Any, images: list[bytes], rounds: int = 5) -> float:
    fn(images[0])
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        for data in images:
            fn(data)
        samples.append((time.perf_counter() - t) / len(images) * 1000)
    return statistics.median(samples)


def draft_decode_floor(data: bytes) -> None:
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (128, 128))
    img.load()


async def _triton_load(
    url: str, images: np.ndarray, tokens: np.ndarray, seconds: float, concurrency: int
) -> list[float]:
    import asyncio

    from tritonclient.http import aio

    client = aio.InferenceServerClient(url)
    lat: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            a = aio.InferInput("IMAGE", [1, 64, 64, 3], "UINT8")
            a.set_data_from_numpy(images[i % len(images)][None])
            b = aio.InferInput("TOKENS", [1, 16], "INT64")
            b.set_data_from_numpy(tokens[i % len(tokens)][None])
            t = time.perf_counter()
            await client.infer("product_classifier", [a, b])
            lat.append(time.perf_counter() - t)

    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        await client.close()
    return lat


def triton_batch_size(metrics_url: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    count = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("nv_inference_count{"))
    execs = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith("nv_inference_exec_count{"))
    return count / execs if execs else 0.0


@leaves_nothing_running("bench.multimodal")
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    images = photo_like(args.images)
    results: dict[str, Any] = {"image_kb_mean": sum(map(len, images)) / len(images) / 1024}
    naive = per_image_ms(naive_decode_and_resize, images)
    fast = per_image_ms(decode_and_resize, images)
    floor = per_image_ms(draft_decode_floor, images)
    full = per_image_ms(lambda d: Image.open(io.BytesIO(d)).load(), images)
    results["preprocess_ms"] = {"naive": naive, "ours": fast, "draft_decode_floor": floor, "full_decode": full}
    print(f"1600x1200 q90 JPEG, {results['image_kb_mean']:.0f} KB mean, one core:")
    print(f"  naive open+convert+resize  {naive:6.2f} ms/img  {1000 / naive:6.0f} img/s")
    print(f"  ours (draft, reduce, small resample) {fast:6.2f} ms/img  {1000 / fast:6.0f} img/s  ({naive / fast:.1f}x)")
    print(
        f"  decode floor (draft decode only)     {floor:6.2f} ms/img  (ours is {100 * (fast / floor - 1):.0f}% above)"
    )
    print(f"  full decode without draft            {full:6.2f} ms/img", flush=True)

    from app.multimodal.triton_repo import export
    from devharness import GunicornService, TritonServer
    from examples.multimodal.training import train

    work = ROOT / "var" / "bench-multimodal"
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    model, _, _ = train(n_train=900, n_test=200, epochs=25)
    body = {"image_b64": base64.b64encode(images[0]).decode(), "text": "Deluxe wool set"}
    for batching in (True, False):
        repo = work / f"repo-{'dyn' if batching else 'nodyn'}"
        export(model, str(repo), dynamic_batching=batching)
        with ExitStack() as started:  # a failure or Ctrl-C while starting the service still stops Triton
            triton = started.enter_context(TritonServer(work / f"triton-{batching}", repo))
            svc = started.enter_context(
                GunicornService(
                    work / f"svc-{batching}",
                    {"PREPROCESS_TRITON_URL": triton.url, "PREPROCESS_ACCESS_LOG": "false"},
                    app="app.preprocess.main:app",
                )
            )
            import asyncio

            from app.multimodal.tokenizer import Tokenizer

            pix = np.stack([decode_and_resize(d) for d in images])
            tok = np.stack([Tokenizer(VOCABULARY).tokenize("Deluxe wool set")] * len(images))
            for conc in (1, 16):
                lat = asyncio.run(_triton_load(triton.url, pix, tok, args.seconds, conc))
                lat.sort()
                key = f"triton_{'dynamic' if batching else 'no'}_batching_c{conc}"
                results[key] = {
                    "rps": len(lat) / args.seconds,
                    "p50_ms": statistics.median(lat) * 1000,
                    "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
                    "mean_batch": triton_batch_size(f"http://127.0.0.1:{triton.metrics_port}/metrics"),
                }
                r = results[key]
                print(
                    f"  Triton alone (preprocessed tensors), dynamic batching {'on ' if batching else 'off'}, "
                    f"{conc:>2} concurrent: {r['rps']:7.1f} rps, p50 {r['p50_ms']:6.2f} ms, p99 {r['p99_ms']:6.2f} ms, "
                    f"mean batch so far {r['mean_batch']:.1f}",
                    flush=True,
                )
            svc.wait_ready()
            wrk_post(svc.url + "/v1/classify", body, 4, 2)
            for conns in (1, 16):
                r = wrk_post(svc.url + "/v1/classify", body, conns, args.seconds)
                key = f"e2e_{'dynamic' if batching else 'no'}_batching_c{conns}"
                results[key] = r.__dict__
                print(
                    f"  end to end, dynamic batching {'on ' if batching else 'off'}, {conns:>2} conns: "
                    f"{r.rps:7.1f} rps, p50 {r.p50_ms:6.2f} ms, p99 {r.p99_ms:6.2f} ms, errors {r.errors}",
                    flush=True,
                )
    out = ROOT / "bench" / "results" / f"multimodal-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"raw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
