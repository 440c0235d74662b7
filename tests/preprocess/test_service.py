"""Preprocessing service -> real Triton (tritonserver on CPU, python backend): accuracy, bad input,
Triton down, Triton restarted mid-load."""

from __future__ import annotations

import base64
import io
import select
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from app.multimodal.preprocessing import decode_and_resize
from devharness import GunicornService, TritonServer, free_port
from examples.multimodal.dataset import CLASSES
from tests.multimodal.trained import Trained

pytestmark = pytest.mark.integration


def classify(url: str, image: bytes, text: str, multipart: bool = True) -> httpx.Response:
    if multipart:
        return httpx.post(
            url + "/v1/classify", files={"image": ("x.jpg", image, "image/jpeg")}, data={"text": text}, timeout=30
        )
    return httpx.post(
        url + "/v1/classify", json={"image_b64": base64.b64encode(image).decode(), "text": text}, timeout=30
    )


def test_accuracy_through_the_services_equals_in_process(trained: Trained, preprocess: GunicornService) -> None:
    listings = trained.held_out
    images = np.stack([decode_and_resize(x.image) for x in listings])
    tokens = np.stack([trained.model.tokenizer.tokenize(x.title) for x in listings])
    with torch.no_grad():
        local = trained.model(torch.from_numpy(images), torch.from_numpy(tokens)).numpy()
    served = []
    for i, x in enumerate(listings):
        r = classify(preprocess.url, x.image, x.title, multipart=i % 2 == 0)
        assert r.status_code == 200, r.text
        body = r.json()
        served.append([body["probabilities"][c] for c in CLASSES])
        assert set(body["timings_ms"]) == {"decode_ms", "resize_ms", "tokenize_ms", "triton_ms", "total_ms"}
    served_arr = np.array(served)
    np.testing.assert_allclose(served_arr, local, atol=1e-5)  # no skew between the two paths
    labels = np.array([x.label for x in listings])
    assert (served_arr.argmax(1) == labels).mean() == (local.argmax(1) == labels).mean() > 0.9
    metrics = httpx.get(preprocess.url + "/metrics").text
    assert 'preprocess_stage_duration_seconds_count{stage="triton"}' in metrics


def _png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (6000, 5000)).save(buf, "PNG")  # 30M pixels in a few KB; the service allows 20M
    return buf.getvalue()


def _png_5mp() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (2500, 2000)).save(buf, "PNG")  # 5M pixels: under PREPROCESS_MAX_PIXELS, over the 4M for PNG
    return buf.getvalue()


def _jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def _dds(flags: int, fourcc: bytes = b"\0\0\0\0") -> bytes:
    """A DDS whose pixel format Pillow's decoder refuses with NotImplementedError (once a 500)."""
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8)).save(buf, "DDS")
    data = bytearray(buf.getvalue())
    data[80:84], data[84:88] = flags.to_bytes(4, "little"), fourcc  # DDS_PIXELFORMAT.dwFlags, .dwFourCC
    return bytes(data)


BAD = [
    ("dds unknown pixel format flags", lambda: classify_args(_dds(0), "wool set"), 400, "not an image"),
    ("dds unknown fourcc", lambda: classify_args(_dds(4, b"ZZZZ"), "wool set"), 400, "not an image"),
    ("not an image", lambda: classify_args(b"hello world", "wool set"), 400, "not an image"),
    ("truncated", lambda: classify_args(_jpeg()[:300], "wool set"), 400, "cannot be decoded"),
    ("too many pixels", lambda: classify_args(_png_bomb(), "wool set"), 413, "above the limit"),
    ("png above the full-decode limit", lambda: classify_args(_png_5mp(), "wool set"), 413, "decoded at full size"),
    ("too many bytes", lambda: classify_args(b"\xff" * 2_100_000, "wool set"), 413, "exceeds the limit"),
    ("empty text", lambda: classify_args(_jpeg(), "   "), 400, "'text' is empty"),
    ("overlong text", lambda: classify_args(_jpeg(), "wool " * 100), 400, "above the limit of 300"),
]


def classify_args(image: bytes, text: str) -> tuple[bytes, str]:
    return image, text


@pytest.mark.parametrize(("case", "make", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_clear_4xx(preprocess: GunicornService, case: str, make, status: int, message: str) -> None:  # type: ignore[no-untyped-def]
    image, text = make()
    for multipart in (True, False):
        r = classify(preprocess.url, image, text, multipart=multipart)
        assert r.status_code == status, (multipart, r.text)
        assert message in r.json()["error"]


def test_wrong_content_type_and_shapes_of_body(preprocess: GunicornService) -> None:
    r = httpx.post(preprocess.url + "/v1/classify", content=b"raw", headers={"content-type": "image/jpeg"})
    assert r.status_code == 415 and "multipart/form-data or application/json" in r.json()["error"]
    r = httpx.post(preprocess.url + "/v1/classify", json={"image_b64": "!!!", "text": "x"})
    assert r.status_code == 400 and "base64" in r.json()["error"]
    r = httpx.post(preprocess.url + "/v1/classify", files={"other": ("a", b"x")}, data={"text": "x"})
    assert r.status_code == 400 and "'image'" in r.json()["error"]
    assert 'status="5' not in httpx.get(preprocess.url + "/metrics").text


def test_triton_down_is_a_fast_503_and_unready(tmp_path: Path) -> None:
    srv = GunicornService(
        tmp_path / "svc",
        {"PREPROCESS_TRITON_URL": f"127.0.0.1:{free_port()}", "PREPROCESS_TRITON_TIMEOUT_MS": "300"},
        app="app.preprocess.main:app",
        ready_path="/healthz",
    ).wait_ready()
    try:
        t = time.monotonic()
        r = classify(srv.url, _jpeg(), "wool set")
        assert r.status_code == 503 and "Triton" in r.json()["error"]
        assert time.monotonic() - t < 2
        assert httpx.get(srv.url + "/readyz").status_code == 503
    finally:
        srv.stop()


@pytest.mark.timed
def test_triton_restart_mid_load(trained: Trained, tmp_path: Path, started: ExitStack) -> None:
    triton = started.enter_context(TritonServer(tmp_path / "triton", trained.repository))  # stopped if the next fails
    srv = GunicornService(
        tmp_path / "svc",
        {"PREPROCESS_TRITON_URL": triton.url, "PREPROCESS_TRITON_TIMEOUT_MS": "500"},
        app="app.preprocess.main:app",
    ).wait_ready()
    x = trained.held_out[0]
    outcomes: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                r = c.post(srv.url + "/v1/classify", files={"image": ("x.jpg", x.image)}, data={"text": x.title})
                outcomes.append(r.status_code)

    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        triton.stop()  # Triton goes away mid-load ...
        time.sleep(1.0)
        down_at = len(outcomes)
        triton = TritonServer(tmp_path / "triton2", trained.repository, http_port=triton.http_port)  # ... and returns
        time.sleep(2.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        srv.stop()
        triton.stop()
    assert set(outcomes) <= {200, 503}, set(outcomes)  # never a 500, never a hang
    assert 503 in outcomes[down_at - 5 :]  # requests while Triton was away got a clean 503
    assert outcomes[-5:] == [200] * 5  # recovered without restarting the service


def _upload_50mb(url: str, *, chunked: bool, multipart: bool) -> tuple[int, str, int]:
    """POST a 50 MB body over a raw socket, stopping as soon as the server answers.

    Returns (status, body, bytes sent). httpx would hide whether the server stopped reading."""
    total, piece = 50 * 1024 * 1024, b"\xff" * 65536
    if multipart:
        ctype = "multipart/form-data; boundary=xx"
        head = b'--xx\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
    else:
        ctype, head = "application/json", b'{"text": "wool", "image_b64": "'
    host, port = url.removeprefix("http://").split(":")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(head) + total}"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n{framing}\r\n\r\n".encode())
        try:
            for part in [head] + [piece] * (total // len(piece)):
                if select.select([s], [], [], 0)[0]:
                    break  # the answer is there: the server stopped reading
                s.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
            else:
                if chunked:
                    s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed after answering; the answer is still in our receive buffer
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw) < raw.index(b"\r\n\r\n") + 30:
            data = s.recv(65536)
            if not data:
                break
            raw += data
    status = int(raw.split(b" ", 2)[1])
    return status, raw.split(b"\r\n\r\n", 1)[1].decode(errors="replace"), sent


@pytest.mark.parametrize("multipart", [True, False], ids=["multipart", "json"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_50mb_upload_is_413_with_or_without_content_length(
    preprocess: GunicornService, chunked: bool, multipart: bool
) -> None:
    t = time.monotonic()
    status, body, sent = _upload_50mb(preprocess.url, chunked=chunked, multipart=multipart)
    assert status == 413, body
    assert "exceeds the limit" in body
    # The body is counted as it streams and reading stops at the limit (4 MB here), far from 50 MB.
    assert sent < 20 * 1024 * 1024, sent
    assert time.monotonic() - t < 10


def test_class_names_are_the_models_read_from_its_config_on_triton(trained: Trained, tmp_path: Path) -> None:
    """The service knows no dataset: the same weights exported under other names answer with those names."""
    import copy

    from app.multimodal.triton_repo import export

    renamed = copy.deepcopy(trained.model)
    renamed.classes = tuple(f"class-{i}" for i in range(len(CLASSES)))
    export(renamed, str(tmp_path / "repo"))
    x = trained.held_out[0]
    with ExitStack() as started:
        triton = started.enter_context(TritonServer(tmp_path / "triton", tmp_path / "repo"))
        svc = started.enter_context(
            GunicornService(tmp_path / "svc", {"PREPROCESS_TRITON_URL": triton.url}, app="app.preprocess.main:app")
        )
        svc.wait_ready()
        r = classify(svc.url, x.image, x.title)
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body["probabilities"]) == list(renamed.classes)
    with torch.no_grad():
        local = trained.model(
            torch.from_numpy(decode_and_resize(x.image)[None]),
            torch.from_numpy(trained.model.tokenizer.tokenize(x.title)[None]),
        ).numpy()[0]
    assert body["class"] == renamed.classes[int(local.argmax())]  # the model's answer, under the new names


def test_titles_are_tokenized_with_the_models_vocabulary_read_from_its_config_on_triton(
    trained: Trained, tmp_path: Path
) -> None:
    """The service knows no word list: the same model exported with its vocabulary in another order (the
    embedding rows moved to match) answers as the original only when the service tokenizes with the
    exported vocabulary."""
    import copy

    from app.multimodal.tokenizer import Tokenizer
    from app.multimodal.triton_repo import export

    words = trained.model.tokenizer.vocabulary
    reordered = copy.deepcopy(trained.model)
    reordered.tokenizer = Tokenizer(words[::-1])
    with torch.no_grad():  # word i had id 2+i; reversed, it has id 2+(n-1-i): the same rows, flipped
        reordered.embed.weight[2:] = trained.model.embed.weight[2:].flip(0)
    export(reordered, str(tmp_path / "repo"))
    listings = trained.held_out[:12]
    images = torch.from_numpy(np.stack([decode_and_resize(x.image) for x in listings]))
    tokens = torch.from_numpy(np.stack([trained.model.tokenizer.tokenize(x.title) for x in listings]))
    with torch.no_grad():
        local = trained.model(images, tokens)
        stale = reordered(images, tokens)  # the check can fail: fed the scenario's ids, it answers otherwise
    assert not np.allclose(stale.numpy(), local.numpy(), atol=1e-3)
    with ExitStack() as started:
        triton = started.enter_context(TritonServer(tmp_path / "triton", tmp_path / "repo"))
        svc = started.enter_context(
            GunicornService(tmp_path / "svc", {"PREPROCESS_TRITON_URL": triton.url}, app="app.preprocess.main:app")
        )
        svc.wait_ready()
        served = []
        for x in listings:
            r = classify(svc.url, x.image, x.title)
            assert r.status_code == 200, r.text
            served.append([r.json()["probabilities"][c] for c in CLASSES])
    np.testing.assert_allclose(np.array(served), local.numpy(), atol=1e-5)
