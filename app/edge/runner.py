"""The edge runner: load an edge bundle and predict with ONNX Runtime, NumPy and Pillow only.

This file is the whole runtime a device needs besides those three packages: it imports nothing from
the platform, scikit-learn or torch, so it can be copied alone next to a bundle
(``python runner.py BUNDLE --rows rows.json``) or vendored into an application. What the model
needs to build its input is in the bundle's ``manifest.json`` (docs/edge.md): the input names, order,
dtypes and shapes, the classes, and for the image+text model the image size and resampling and the
tokenizer's vocabulary and rules, which :func:`preprocess_image` and :func:`tokenize` apply exactly as
the platform's preprocessing service does.

Every file the manifest lists is checked against its sha256 before the model is loaded, and every
input is checked against the manifest before it reaches ONNX Runtime: a wrong name, shape or dtype is
an :class:`InputError` that says which input and what was expected.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

MANIFEST = "manifest.json"
FORMAT = "ml-platform-edge-bundle"
FORMAT_VERSION = 1

_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "uint8": np.uint8}
_RESAMPLING = ("bilinear", "bicubic")  # the spec's names, Pillow's resampling filters


class BundleError(Exception):
    """A bundle that cannot be loaded (missing file, unreadable manifest); the message says which and why."""


class BundleIntegrityError(BundleError):
    """A file of the bundle does not match the sha256 its manifest records."""


class InputError(ValueError):
    """An input that does not fit the bundle's manifest: the message names the input and what it expects."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of the bundle in ``directory``, with its format checked and every listed file's sha256
    verified (a corrupt or swapped file raises :class:`BundleIntegrityError` naming it)."""
    d = Path(directory)
    try:
        manifest = json.loads((d / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"no {MANIFEST} in {d}: not an edge bundle (python -m jobs export-edge writes one)") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{d / MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{d / MANIFEST} is not an edge bundle manifest (format {FORMAT!r} expected)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{d / MANIFEST} has format_version {manifest.get('format_version')!r}; this runner reads {FORMAT_VERSION}"
        )
    for name, entry in manifest.get("files", {}).items():
        path = d / name
        if not path.is_file():
            raise BundleError(f"bundle {d}: {name} is listed in the manifest but missing")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise BundleIntegrityError(
                f"bundle {d}: {name} has sha256 {digest[:12]}..., the manifest records {entry['sha256'][:12]}...: "
                "the file is corrupt or was replaced"
            )
    return manifest


# -- preprocessing, from the manifest's spec ------------------------------------------------------------


def preprocess_image(data: bytes, spec: Mapping[str, Any]) -> NDArray[np.uint8]:
    """Encoded image bytes -> uint8 RGB array [size, size, 3], as the platform's preprocessing does: JPEG
    decoded at reduced scale (draft), an integer box ``reduce`` to at least twice the target, then one
    resample. ``spec`` is the manifest's ``preprocessing.image``."""
    from PIL import Image  # here: a tabular model's device needs no Pillow

    size = int(spec["size"])
    if spec["resampling"] not in _RESAMPLING:
        raise BundleError(f"the manifest's image resampling {spec['resampling']!r} is not one of {_RESAMPLING}")
    if not data:
        raise InputError("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img: Image.Image = Image.open(io.BytesIO(data), formats=tuple(spec["formats"]))
            w, h = img.size
            if w * h > int(spec["max_pixels"]):
                raise InputError(f"image is {w}x{h} = {w * h} pixels, above the limit of {spec['max_pixels']}")
            if spec.get("jpeg_draft", True):
                img.draft("RGB", (size * 2, size * 2))
            img.load()
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            factor = min(img.width, img.height) // (size * 2)
            if factor >= 2:
                img = img.reduce(factor)
            if img.mode != "RGB":
                img = img.convert("RGB")
            img = img.resize((size, size), Image.Resampling[spec["resampling"].upper()])
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many kinds for a bad upload; all are the input's fault
        raise InputError(f"image cannot be decoded: {type(exc).__name__}: {exc}") from None
    return np.asarray(img, dtype=np.uint8)


def tokenize(text: str, spec: Mapping[str, Any]) -> NDArray[np.int64]:
    """A title -> int64 ids [max_tokens], by the manifest's ``preprocessing.text`` rules: lowercased, split
    on the pattern, each word's id from the vocabulary (unknown words get ``unk_id``), padded with
    ``pad_id``."""
    split = re.compile(spec["split_pattern"])
    index = {w: i + int(spec["first_word_id"]) for i, w in enumerate(spec["vocabulary"])}
    words = [w for w in split.split(text.lower() if spec.get("lowercase", True) else text) if w]
    n = int(spec["max_tokens"])
    ids = [index.get(w, int(spec["unk_id"])) for w in words[:n]]
    out = np.full(n, int(spec["pad_id"]), dtype=np.int64)
    out[: len(ids)] = ids
    return out


# -- the model ---------------------------------------------------------------------------------------------


class EdgeModel:
    """One variant of a bundle (``float``, or ``int8`` where the bundle has it) in an ONNX Runtime session."""

    def __init__(self, directory: str | Path, *, variant: str = "float", threads: int = 1) -> None:
        start = time.perf_counter()
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        variants: dict[str, Any] = self.manifest["variants"]
        if variant not in variants:
            raise BundleError(f"bundle {self.directory} has no {variant!r} variant; it has {sorted(variants)}")
        self.variant = variant
        self.inputs: list[dict[str, Any]] = self.manifest["inputs"]
        self.output: str = self.manifest["output"]["name"]
        self.classes: list[Any] = self.manifest["classes"]
        self.preprocessing: dict[str, Any] = self.manifest["preprocessing"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.directory / variants[variant]["file"]), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime's own exceptions have no common public base
            raise BundleError(f"bundle {self.directory}: ONNX Runtime cannot load {variant!r}: {exc}") from exc
        self.load_seconds = time.perf_counter() - start

    def check_inputs(self, arrays: Sequence[Any] | Mapping[str, Any]) -> dict[str, NDArray[Any]]:
        """The inputs as ONNX Runtime takes them, by name, each checked against the manifest: positional in
        the manifest's order, or a mapping by name. Integers are accepted where floats are expected (a
        lossless widening); anything else of the wrong dtype, rank or size is an InputError."""
        names = [spec["name"] for spec in self.inputs]
        if isinstance(arrays, Mapping):
            unknown = sorted(set(arrays) - set(names))
            missing = [n for n in names if n not in arrays]
            if unknown or missing:
                raise InputError(f"inputs must be {names}; missing {missing}, unknown {unknown}")
            given = [arrays[n] for n in names]
        else:
            if len(arrays) != len(names):
                raise InputError(f"{len(arrays)} inputs given, the model takes {len(names)}: {names}")
            given = list(arrays)
        feed: dict[str, NDArray[Any]] = {}
        batch: int | None = None
        for spec, value in zip(self.inputs, given, strict=True):
            x = np.asarray(value)
            name, want = spec["name"], np.dtype(_DTYPES[spec["dtype"]])
            if x.dtype != want:
                widening = (want.kind == "f" and x.dtype.kind in "iuf") or (want.kind == "i" and x.dtype.kind in "iu")
                if not widening or (want.kind == "i" and not np.can_cast(x.dtype, want)):
                    raise InputError(f"input {name!r} must be {want.name}, got {x.dtype.name}")
                x = x.astype(want)
            shape = spec["shape"]
            if x.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, x.shape, strict=True)):
                want_shape = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
                raise InputError(f"input {name!r} must have shape {want_shape}, got {list(x.shape)}")
            if batch is not None and x.shape[0] != batch:
                raise InputError(f"input {name!r} has {x.shape[0]} rows, the inputs before it {batch}")
            batch = x.shape[0]
            if "max_value" in spec and x.size and (int(x.min()) < 0 or int(x.max()) > int(spec["max_value"])):
                raise InputError(f"input {name!r} holds ids outside [0, {spec['max_value']}]")
            if want.kind == "f" and x.size and not np.isfinite(x).all():
                raise InputError(f"input {name!r} holds NaN or infinite values")
            feed[name] = np.ascontiguousarray(x)
        return feed

    def predict_proba(self, arrays: Sequence[Any] | Mapping[str, Any]) -> NDArray[np.float64]:
        """Class probabilities [N, len(classes)], in the order of ``classes``."""
        out = self.session.run([self.output], self.check_inputs(arrays))[0]
        return np.asarray(out, dtype=np.float64)

    def predict(self, arrays: Sequence[Any] | Mapping[str, Any]) -> list[Any]:
        """The most probable class of each row."""
        return [self.classes[i] for i in self.predict_proba(arrays).argmax(axis=1)]

    def image_text_inputs(self, images: Sequence[bytes], titles: Sequence[str]) -> list[NDArray[Any]]:
        """The image+text model's inputs from encoded images and titles, by the manifest's preprocessing."""
        if self.preprocessing.get("kind") != "image+text":
            raise InputError(f"this bundle's model takes {self.preprocessing.get('kind')} input, not images and titles")
        if len(images) != len(titles):
            raise InputError(f"{len(images)} images but {len(titles)} titles")
        pixels = np.stack([preprocess_image(b, self.preprocessing["image"]) for b in images])
        tokens = np.stack([tokenize(t, self.preprocessing["text"]) for t in titles])
        return [pixels, tokens]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict with an edge bundle (ONNX Runtime, NumPy, Pillow).")
    parser.add_argument("bundle", help="the bundle's directory")
    parser.add_argument("--variant", default="float", help="float (default) or a quantized variant, e.g. int8")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", help="tabular input: a JSON file (or - for stdin) holding a list of rows")
    parser.add_argument("--image", action="append", default=[], help="image+text input: an image file (repeat)")
    parser.add_argument("--title", action="append", default=[], help="image+text input: its title (repeat)")
    args = parser.parse_args(argv)
    try:
        model = EdgeModel(args.bundle, variant=args.variant, threads=args.threads)
        if args.rows:
            text = sys.stdin.read() if args.rows == "-" else Path(args.rows).read_text()
            inputs: list[Any] = [np.asarray(json.loads(text))]
        else:
            inputs = model.image_text_inputs([Path(p).read_bytes() for p in args.image], args.title)
        proba = model.predict_proba(inputs)
    except (BundleError, InputError, OSError, ValueError) as exc:
        print(json.dumps({"status": "error", "error": str(exc)}))
        return 1
    labels = [model.classes[i] for i in proba.argmax(axis=1)]
    result = {"status": "ok", "classes": model.classes, "labels": labels, "probabilities": proba.tolist()}
    print(json.dumps({**result, "load_ms": round(model.load_seconds * 1000, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
