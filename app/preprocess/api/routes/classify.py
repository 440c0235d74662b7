"""``POST /v1/classify``: multipart (``image`` file + ``text`` field) or JSON (``image_b64`` + ``text``)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from app.common.errors import ApiError, error_responses, json_response, load_json
from app.multimodal.preprocessing import ImageError, decode_and_resize
from app.preprocess import metrics
from app.preprocess.triton import TritonUnavailableError

router = APIRouter(prefix="/v1", tags=["classify"])


def reject(status: int, reason: str, message: str) -> ApiError:
    metrics.REJECTED_INPUTS.labels(reason).inc()
    return ApiError(status, message)


async def read_input(request: Request, max_bytes: int) -> tuple[bytes, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes)
        except ApiError:
            # The body limit, counted as the body streams in (chunked uploads have no Content-Length):
            # a 413, not a malformed body.
            metrics.REJECTED_INPUTS.labels("too_large").inc()
            raise
        except Exception as exc:  # malformed multipart, parts over the limit
            raise reject(400, "multipart", f"cannot read the multipart body: {exc}") from None
        upload, text = form.get("image"), form.get("text")
        if not isinstance(upload, UploadFile):
            raise reject(400, "missing_image", "multipart body needs a file field 'image'")
        image = await upload.read(max_bytes + 1)
        if not isinstance(text, str):
            raise reject(400, "missing_text", "multipart body needs a text field 'text'")
    elif ctype == "application/json":
        payload = load_json(await request.body())
        if not isinstance(payload, dict) or not isinstance(payload.get("image_b64"), str):
            raise reject(400, "missing_image", 'JSON body must be {"image_b64": "<base64>", "text": "..."}')
        text = payload.get("text")
        if not isinstance(text, str):
            raise reject(400, "missing_text", "'text' must be a string")
        try:
            image = base64.b64decode(payload["image_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise reject(400, "base64", "'image_b64' is not valid base64") from None
    else:
        raise reject(
            415,
            "content_type",
            f"unsupported content type {ctype or 'none'!r}: use multipart/form-data or application/json",
        )
    if len(image) > max_bytes:
        raise reject(413, "too_large", f"image exceeds the limit of {max_bytes} bytes")
    return image, text


_TEXT = {"type": "string", "description": "the item's title (at most PREPROCESS_MAX_TEXT_CHARS characters)"}
CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "text"],
                    "properties": {"image": {"type": "string", "format": "binary"}, "text": _TEXT},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image_b64", "text"],
                    "properties": {"image_b64": {"type": "string", "contentEncoding": "base64"}, "text": _TEXT},
                }
            },
        },
    }
}


@router.post("/classify", responses=error_responses(400, 413, 415, 503), openapi_extra=CLASSIFY_BODY)
async def classify(request: Request) -> Response:
    state = request.app.state
    settings = state.settings
    t_start = time.perf_counter()
    image, text = await read_input(request, settings.max_image_bytes)
    text = text.strip()
    if not text:
        raise reject(400, "empty_text", "'text' is empty")
    if len(text) > settings.max_text_chars:
        raise reject(
            400, "long_text", f"'text' has {len(text)} characters, above the limit of {settings.max_text_chars}"
        )
    timings: dict[str, float] = {}
    try:
        # Decoding is CPU work: a thread keeps the event loop answering (Pillow releases the GIL).
        pixels = await asyncio.get_running_loop().run_in_executor(
            state.decode_pool,
            lambda: decode_and_resize(
                image,
                max_pixels=settings.max_pixels,
                max_full_decode_pixels=settings.max_full_decode_pixels,
                timings=timings,
            ),
        )
    except ImageError as exc:
        status = 413 if "above the limit" in str(exc) else 400
        raise reject(status, "image", str(exc)) from None
    try:
        # The class names and the tokenizer are the model's (its config on Triton), cached; re-read once when
        # the model answers with another number of classes (a new export was loaded), and the title
        # re-tokenized if the new model reads other words.
        served = await state.triton.served()
        t = time.perf_counter()
        tokens = served.tokenizer.tokenize(text)
        timings["tokenize_ms"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        probs = (await state.triton.infer(pixels[None], tokens[None]))[0]
        if len(served.classes) != len(probs):
            previous, served = served, await state.triton.served(refresh=True)
            if served.tokenizer.vocabulary != previous.tokenizer.vocabulary:
                tokens = served.tokenizer.tokenize(text)
                probs = (await state.triton.infer(pixels[None], tokens[None]))[0]
        timings["triton_ms"] = (time.perf_counter() - t) * 1000
        classes = served.classes
        if len(classes) != len(probs):
            raise TritonUnavailableError(f"the model answered {len(probs)} probabilities for {len(classes)} classes")
    except TritonUnavailableError as exc:
        metrics.TRITON_ERRORS.labels("unavailable").inc()
        raise ApiError(503, str(exc)) from None
    timings["total_ms"] = (time.perf_counter() - t_start) * 1000
    for stage in ("decode", "resize", "tokenize", "triton"):
        metrics.STAGE_LATENCY.labels(stage).observe(timings[f"{stage}_ms"] / 1000)
    best = int(np.argmax(probs))
    metrics.PREDICTIONS.labels(classes[best]).inc()
    body: dict[str, Any] = {
        "class": classes[best],
        "probability": float(probs[best]),
        "probabilities": {c: float(p) for c, p in zip(classes, probs.tolist(), strict=True)},
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
    }
    return json_response(body)
