"""Every limit on what a client may send, set low through the settings: one over it is refused with
413 (body bytes) or 422 and a reason that names the limit; one at it is served. Also the
regressions the fuzzer (test_fuzz.py) found: inputs that used to give a 500."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.app import _Observe, create_app
from service.db import upgrade
from tests.conftest import make_settings

DIM = 4
SMALL = {"layers": [{"hidden": 32, "k": 4}]}
ANML = {"hidden": 32, "nm_hidden": 16, "meta_lr": 0.003}
LIMITS = {"max_body_bytes": 4096, "max_batch": 3, "max_predict_inputs": 3, "max_input_dim": 16, "max_labels": 3,
          "max_meta_samples": 4, "max_text_chars": 20}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    yield from _client(tmp_path, **LIMITS)


@pytest.fixture
def text_client(tmp_path: Path) -> Iterator[TestClient]:  # a text encoder gives 384 values: over LIMITS
    yield from _client(tmp_path, max_text_chars=20)


def _client(tmp_path: Path, **limits: int) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "var", **limits)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/brains", json={"name": "v", "input": {"kind": "vector", "shape": [DIM]}, "params": SMALL})
        assert r.status_code == 201, r.text
        yield c


def samples(n: int, labels: int = 2) -> list[dict]:
    return [{"x": [float(i % labels)] * DIM, "label": f"l{i % labels}"} for i in range(n)]


def refused(r, status: int, *reasons: str) -> None:
    assert r.status_code == status, r.text
    detail = str(r.json()["detail"])
    for reason in reasons:
        assert reason in detail, detail


# -- body size ------------------------------------------------------------------------------------
def _body(size: int) -> bytes:
    """A samples body of exactly ``size`` bytes (padding spaces inside the JSON)."""
    core = b'{"task": "t", "samples": [{"x": [1, 2, 3, 4], "label": "a"}]}'
    return core[:-1] + b" " * (size - len(core)) + b"}"


def test_body_over_the_limit_is_413_with_and_without_content_length(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    url = "/v1/brains/v/samples"
    refused(client.post(url, content=_body(4097), headers=headers), 413, "limit of 4096", "BRAIN_MAX_BODY_BYTES")
    assert client.post(url, content=_body(4096), headers=headers).status_code == 202

    def chunked(body: bytes) -> Iterator[bytes]:  # a generator: httpx sends it without Content-Length
        yield from (body[i:i + 1000] for i in range(0, len(body), 1000))

    r = client.post(url, content=chunked(_body(4097)), headers=headers)
    refused(r, 413, "limit of 4096", "BRAIN_MAX_BODY_BYTES")
    assert "content-length" not in r.request.headers
    assert client.post(url, content=chunked(_body(4096)), headers=headers).status_code == 202
    # the same on the plain Starlette route of predict and on a route FastAPI parses itself
    predict = b'{"inputs": [{"x": [1, 2, 3, 4]}]' + b" " * 5000 + b"}"
    refused(client.post("/v1/brains/v/predict", content=chunked(predict), headers=headers), 413, "BRAIN_MAX_BODY_BYTES")
    create = b'{"name": "w", "input": {"kind": "vector", "shape": [4]}' + b" " * 5000 + b"}"
    refused(client.post("/v1/brains", content=chunked(create), headers=headers), 413, "BRAIN_MAX_BODY_BYTES")


def test_a_streamed_body_over_the_limit_is_not_read_whole(tmp_path: Path) -> None:
    """The app's middleware alone, over an app that reads the body: it stops at the first chunk
    past the limit and answers 413, whatever is still to come."""
    app_ = create_app(make_settings(tmp_path, max_body_bytes=4096))
    [observe] = [m for m in app_.user_middleware if m.cls is _Observe]
    reads = 0

    async def app(scope, receive, send) -> None:
        body = await Request(scope, receive).body()
        await JSONResponse({"read": len(body)})(scope, receive, send)

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": reads < 1000}  # 1 MB in all

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    middleware = observe.cls(app, *observe.args, **observe.kwargs)
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"transfer-encoding", b"chunked")],
             "query_string": b""}
    anyio.run(middleware, scope, receive, send)
    assert sent[0]["status"] == 413 and reads == 5  # 5,000 bytes read of 1,000,000
    assert b"BRAIN_MAX_BODY_BYTES" in sent[1]["body"]


# -- counts per request -----------------------------------------------------------------------------
def test_samples_per_batch(client: TestClient) -> None:
    refused(client.post("/v1/brains/v/samples", json={"task": "t", "samples": samples(4)}), 422,
            "limit is 3", "BRAIN_MAX_BATCH")
    assert client.post("/v1/brains/v/samples", json={"task": "t", "samples": samples(3)}).status_code == 202


def test_predict_inputs_per_request(client: TestClient) -> None:
    inputs = [{"x": [0.5] * DIM}] * 4
    learn = client.post("/v1/brains/v/samples", params={"wait": True}, json={"task": "t", "samples": samples(2)})
    assert learn.status_code == 202
    refused(client.post("/v1/brains/v/predict", json={"inputs": inputs}), 422, "limit is 3", "BRAIN_MAX_PREDICT_INPUTS")
    r = client.post("/v1/brains/v/predict", json={"inputs": inputs[:3]})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3


def test_evaluate_samples_per_request(client: TestClient) -> None:
    refused(client.post("/v1/brains/v/evaluate", json={"task": "t", "samples": samples(4)}), 422,
            "limit is 3", "BRAIN_MAX_BATCH")
    assert client.post("/v1/brains/v/evaluate", json={"task": "t", "samples": samples(3)}).status_code == 200


def test_meta_train_samples_per_request(client: TestClient) -> None:
    r = client.post("/v1/brains", json={"name": "m", "input": {"kind": "vector", "shape": [DIM]}, "strategy": "anml",
                                        "params": ANML})
    assert r.status_code == 201, r.text
    body = {"steps": 2, "inner_steps": 1}
    refused(client.post("/v1/brains/m/meta-train", json={"samples": samples(5), **body}), 422,
            "limit is 4", "BRAIN_MAX_META_SAMPLES")
    r = client.post("/v1/brains/m/meta-train", params={"wait": True}, json={"samples": samples(4), **body})
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text


# -- brains: input size and labels ----------------------------------------------------------------
def test_input_dimensions(client: TestClient) -> None:
    def create(name: str, kind: str, shape: list[int]):
        return client.post("/v1/brains", json={"name": name, "input": {"kind": kind, "shape": shape}, "params": SMALL})

    refused(create("big", "vector", [17]), 422, "limit is 16")
    refused(create("big", "vector", [2, 3, 3]), 422, "limit is 16")
    refused(create("big", "image", [1, 4, 5]), 422, "limit is 16")
    assert create("v16", "vector", [16]).status_code == 201
    assert create("i16", "image", [1, 4, 4]).status_code == 201


def test_labels(client: TestClient) -> None:
    r = client.post("/v1/brains", json={"name": "w", "input": {"kind": "vector", "shape": [DIM]}, "max_labels": 4})
    refused(r, 422, "limit of 3", "BRAIN_MAX_LABELS")
    body = {"task": "t", "samples": samples(3, labels=3)}
    post = client.post("/v1/brains/v/samples", params={"wait": True}, json=body)
    assert post.status_code == 202 and post.json()["state"] == "succeeded"
    refused(client.post("/v1/brains/v/samples", json={"task": "t", "samples": [{"x": [9.0] * DIM, "label": "new"}]}),
            422, "at most 3")


# -- text and image inputs ------------------------------------------------------------------------
def test_text_length(text_client: TestClient) -> None:
    client = text_client
    too_long = [{"text": "x" * 21, "label": "a"}]
    for url, body in [("samples", {"task": "t", "samples": too_long}), ("evaluate", {"task": "t", "samples": too_long}),
                      ("predict", {"inputs": [{"text": "x" * 21}]})]:
        refused(client.post(f"/v1/brains/v/{url}", json=body), 422, "21 characters", "limit is 20",
                "BRAIN_MAX_TEXT_CHARS")
    r = client.post("/v1/brains", json={"name": "txt", "input": {"kind": "text", "shape": [1]}})
    if r.status_code == 422 and "install" in r.text:
        pytest.skip(f"the text encoder is not installed: {r.json()['detail']}")
    assert r.status_code == 201, r.text
    at_limit = [{"text": "word " * 3 + "x" * 5, "label": "a"}]  # 20 characters
    assert client.post("/v1/brains/txt/samples", json={"task": "t", "samples": at_limit}).status_code == 202


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its data is a stub)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [5000, 20000, 65535])  # over ours; over Pillow's decompression-bomb check too
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(client: TestClient, side: int) -> None:
    r = client.post("/v1/brains", json={"name": "img", "input": {"kind": "image", "shape": [1, 4, 4]}})
    assert r.status_code == 201
    image = base64.b64encode(png_header(side, side)).decode()
    refused(client.post("/v1/brains/img/predict", json={"inputs": [{"image": image}]}), 422, "limit of 16777216")


def test_the_images_of_one_request_have_a_pixel_budget(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import numpy as np
    from PIL import Image

    from service import inputs

    monkeypatch.setattr(inputs, "MAX_REQUEST_PIXELS", 150)  # two 8x8 images fit, three do not
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    image = {"image": base64.b64encode(buf.getvalue()).decode()}
    r = client.post("/v1/brains", json={"name": "img", "input": {"kind": "image", "shape": [1, 4, 4]}})
    assert r.status_code == 201
    refused(client.post("/v1/brains/img/evaluate", json={"task": "t", "samples": [{**image, "label": 1}] * 3}), 422,
            "samples[2].image", "150 in all", "MAX_REQUEST_PIXELS")
    r = client.post("/v1/brains/img/evaluate", json={"task": "t", "samples": [{**image, "label": 1}] * 2})
    assert r.status_code == 200, r.text


# -- regressions: what used to be a 500 ----------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "url", "body"),
    [  # NaN and Infinity are not JSON, but Python's and pydantic's parsers take them; the 422 echoing
        # them could not be written (a 500)
        ("post", "/v1/brains", b'{"name": NaN, "input": {"kind": "vector", "shape": [4]}}'),
        ("post", "/v1/brains", b'{"name": "x", "input": {"kind": "vector", "shape": [4]}, "seed": Infinity}'),
        ("patch", "/v1/brains/v", b'{"sleep_policy": {"every_seconds": NaN}}'),
        ("patch", "/v1/brains/v", b'{"sleep_policy": {"every_seconds": Infinity}}'),
        ("post", "/v1/brains/v/predict", b'{"inputs": NaN}'),
        ("post", "/v1/brains/v/predict", b'{"inputs": [{"x": [1, 2, 3, 4]}], "task": -Infinity}'),
        ("post", "/v1/brains/v/samples", b'{"task": NaN, "samples": []}'),
        ("post", "/v1/brains/v/evaluate", b'{"task": "t", "samples": [{"x": [1, 2, 3, 4], "label": NaN}]}'),
        ("post", "/v1/brains/v/meta-train", b'{"samples": NaN}'),
        # a lone surrogate: Python's parser takes it, UTF-8 cannot encode it
        ("post", "/v1/brains", b'{"name": "\\ud800", "input": {"kind": "vector", "shape": [4]}}'),
        ("post", "/v1/brains", b'{"name": "x", "input": {"kind": "\\udc00", "shape": [4]}}'),
        # integer labels past 64 bits: orjson could not write the prediction
        ("post", "/v1/brains/v/samples",
         b'{"task": "t", "samples": [{"x": [1, 2, 3, 4], "label": 18446744073709551616}]}'),
    ],
)
def test_bodies_that_gave_a_500_give_a_422(client: TestClient, method: str, url: str, body: bytes) -> None:
    r = client.request(method.upper(), url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize("number", ["2147483648", "99999999999999999999999", "-9223372036854775809", "0"])
def test_a_version_number_out_of_range_is_422(client: TestClient, number: str) -> None:
    refused(client.post(f"/v1/brains/v/versions/{number}/promote"), 422, "number")


def test_a_64_bit_integer_label_comes_back(client: TestClient) -> None:
    big = 2**63 - 1
    body = {"task": "t", "samples": [{"x": [1.0] * DIM, "label": big}, {"x": [-1.0] * DIM, "label": -big - 1}]}
    r = client.post("/v1/brains/v/samples", params={"wait": True}, json=body)
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text
    r = client.post("/v1/brains/v/predict", json={"inputs": [{"x": [1.0] * DIM}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in (big, -big - 1)
