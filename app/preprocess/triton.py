"""The Triton call: binary tensors over HTTP (tritonclient's aio client), with a deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.http.aio as httpclient
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from app.common.deadline import deadline
from app.multimodal.tokenizer import Tokenizer
from app.multimodal.triton_repo import CLASSES_PARAMETER, INPUT_IMAGE, INPUT_TOKENS, OUTPUT, VOCABULARY_PARAMETER


class TritonUnavailableError(Exception):
    """Triton is down, slow or failing; the message says which."""


@dataclass(frozen=True)
class ServedModel:
    """What the service needs to know of the model on Triton, from its config: the output's class names (in
    order) and the tokenizer built from the model's vocabulary."""

    classes: tuple[str, ...]
    tokenizer: Tokenizer


class TritonModel:
    def __init__(self, url: str, model: str, timeout_s: float) -> None:
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.client = httpclient.InferenceServerClient(url, conn_timeout=timeout_s)
        self._ready_at = 0.0
        self._ready = False
        self._served: ServedModel | None = None

    async def infer(self, images: NDArray[np.uint8], tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        img = httpclient.InferInput(INPUT_IMAGE, list(images.shape), "UINT8")
        img.set_data_from_numpy(images)  # binary, uint8: 12 KB per 64x64 image on the wire
        tok = httpclient.InferInput(INPUT_TOKENS, list(tokens.shape), "INT64")
        tok.set_data_from_numpy(tokens)
        try:
            async with deadline(self.timeout_s):
                result = await self.client.infer(
                    self.model, [img, tok], outputs=[httpclient.InferRequestedOutput(OUTPUT)]
                )
        except TimeoutError:
            raise TritonUnavailableError(f"Triton did not answer within {self.timeout_s * 1000:.0f} ms") from None
        except InferenceServerException as exc:
            raise TritonUnavailableError(f"Triton error: {exc.message()}") from None
        except Exception as exc:  # aiohttp connection errors and friends
            raise TritonUnavailableError(f"Triton unreachable at {self.url}: {exc!r}") from None
        probs: NDArray[np.float32] = result.as_numpy(OUTPUT)
        return probs

    async def served(self, *, refresh: bool = False) -> ServedModel:
        """The model's class names and tokenizer, from its config on Triton (the export writes both into
        config.pbtxt): read once, and again when ``refresh`` (a re-export changed the output)."""
        if self._served is None or refresh:
            try:
                async with deadline(self.timeout_s):
                    config = await self.client.get_model_config(self.model)
            except TimeoutError:
                raise TritonUnavailableError(f"Triton did not answer within {self.timeout_s * 1000:.0f} ms") from None
            except InferenceServerException as exc:
                raise TritonUnavailableError(f"Triton error: {exc.message()}") from None
            except Exception as exc:
                raise TritonUnavailableError(f"Triton unreachable at {self.url}: {exc!r}") from None
            self._served = ServedModel(
                classes_from_config(self.model, config), tokenizer_from_config(self.model, config)
            )
        return self._served

    async def ready(self) -> bool:
        """Model readiness (loaded, and its class names and vocabulary known), cached for a second so probes do not
        hammer Triton."""
        now = time.monotonic()
        if now - self._ready_at > 1.0:
            try:
                async with deadline(min(self.timeout_s, 1.0)):
                    self._ready = bool(await self.client.is_model_ready(self.model))
                if self._ready:
                    await self.served()
            except Exception:
                self._ready = False
            self._ready_at = now
        return self._ready

    async def close(self) -> None:
        await self.client.close()


def _words_parameter(model: str, config: dict[str, Any], key: str) -> tuple[str, ...]:
    """A comma-separated string parameter of a model config (Triton's JSON form of config.pbtxt); a model
    exported without it cannot be served."""
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    words = tuple(w for w in value.split(",") if w)
    if not words:
        raise TritonUnavailableError(
            f"model {model!r} on Triton has no {key!r} parameter in its config.pbtxt: "
            "export it with `python -m jobs export-triton`"
        )
    return words


def classes_from_config(model: str, config: dict[str, Any]) -> tuple[str, ...]:
    """The ``classes`` parameter, checked against the output's size (answers without names cannot be served)."""
    classes = _words_parameter(model, config, CLASSES_PARAMETER)
    for output in config.get("output", []):
        dims = [int(d) for d in output.get("dims", [])]
        if output.get("name") == OUTPUT and dims and dims[-1] != len(classes):
            raise TritonUnavailableError(
                f"model {model!r} on Triton outputs {dims[-1]} probabilities but names {len(classes)} classes"
            )
    return classes


def tokenizer_from_config(model: str, config: dict[str, Any]) -> Tokenizer:
    """The tokenizer of the ``vocabulary`` parameter (the words the model was trained to read, in id order). A
    vocabulary the tokenizer cannot hold cannot be served: titles would get ids the model never learned."""
    words = _words_parameter(model, config, VOCABULARY_PARAMETER)
    try:
        return Tokenizer(words)
    except ValueError as exc:
        raise TritonUnavailableError(f"model {model!r} on Triton, {VOCABULARY_PARAMETER!r} parameter: {exc}") from None
