"""Every limit on what a client may send, set low through the settings: one over it is refused with
413 (body bytes) or 422 and a reason that names the limit; one at it is served. Also the
regressions the fuzzer (test_fuzz.py) found: inputs that used to give a 500."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
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
    """An app with ``limits`` and a small vector brain "v"."""
    settings = make_settings(tmp_path / "var", **limits)
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/brains", json={"name": "v", "input": {"kind": "vector", "shape": [DIM]}, "params": SMALL})
        assert r.status_code == 201, r.text
        yield c


limited = contextmanager(_client)


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


def png(side: int) -> str:
    """A real grey PNG of ``side`` x ``side`` pixels, base64."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_the_images_of_one_request_have_a_pixel_budget(tmp_path: Path) -> None:
    """What the images decode to, from their headers: two 8x8 images fit 150 pixel values, three do not."""
    with limited(tmp_path, max_decoded_pixels=150) as c:
        image = {"image": png(8)}
        r = c.post("/v1/brains", json={"name": "img", "input": {"kind": "image", "shape": [1, 4, 4]}})
        assert r.status_code == 201
        refused(c.post("/v1/brains/img/evaluate", json={"task": "t", "samples": [{**image, "label": 1}] * 3}), 422,
                "samples[2].image", "150 pixel values in all", "BRAIN_MAX_DECODED_PIXELS")
        r = c.post("/v1/brains/img/evaluate", json={"task": "t", "samples": [{**image, "label": 1}] * 2})
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


# -- resource budgets (issue 14): checked before anything is allocated --------------------------
MiB = 2**20


def _max_rss() -> int:
    """The process's peak resident memory so far, in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_a_patch_that_would_need_40_gb_is_refused_at_once(tmp_path: Path) -> None:
    """A plastic brain's eyes changed to 25 filters pooled by 4 on a 256 x 256 image: 99,225
    features, whose readout statistics alone are 99,225^2 floats (39 GB). Refused from its size on
    the meta device, in well under a second, with the process's peak memory unchanged."""
    import time

    with limited(tmp_path) as c:
        eyes = {"type": "conv", "filters": 1, "size": 5, "pool": 16}
        r = c.post("/v1/brains", json={"name": "eye", "input": {"kind": "image", "shape": [1, 256, 256]},
                                       "params": {"layers": [eyes]}})
        assert r.status_code == 201, r.text
        before, started = _max_rss(), time.perf_counter()
        r = c.patch("/v1/brains/eye", json={"params": {"layers": [{**eyes, "filters": 25, "pool": 4}]}})
        refused(r, 422, "GiB", f"the limit is {2 * 1024**3} bytes (BRAIN_MAX_MODEL_BYTES)")
        assert time.perf_counter() - started < 2.0
        assert _max_rss() - before < 100 * MiB
        assert c.get("/v1/brains/eye").json()["params"]["layers"] == [{**eyes, "activation": "power"}]  # unchanged
        r = c.patch("/v1/brains/eye", json={"params": {"layers": [{**eyes, "filters": 4}]}})  # a small change passes
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(("strategy", "params", "replay"), [
    ("plastic", {"memory_capacity": 100_000}, 500),  # 100,000 stored inputs
    ("plastic", {"layers": [{"hidden": 8192, "k": 8}] * 2}, 500),  # 8,192^2 statistics, solved in float64
    ("finetune", {"hidden": 8192}, 500),  # 8,192^2 weights and Adam's two moments
    ("replay", {"memory_size": 1_000_000}, 500),  # a memory of a million samples, once full
    ("joint", {"max_samples": 1_000_000}, 500),
    ("pnn", {"hidden": 1024, "max_columns": 64}, 500),  # the 64th column has 63 adapters of 1,024^2
    ("mygo", {"generator_hidden": 65536}, 500),  # the first task's generator
    ("finetune", {}, 1_000_000),  # the service's replay buffer of a million samples
])
def test_a_brain_over_the_model_budget_is_not_created(tmp_path: Path, strategy: str, params: dict, replay: int) -> None:
    with limited(tmp_path, max_model_bytes=512 * MiB) as c:
        body = {"name": "big", "input": {"kind": "vector", "shape": [784]}, "strategy": strategy}
        r = c.post("/v1/brains", json={**body, "params": params, "replay": {"size": replay}})
        refused(r, 422, f"the limit is {512 * MiB} bytes (BRAIN_MAX_MODEL_BYTES)", "replay buffer")
        assert c.get("/v1/brains/big").status_code == 404
        assert c.post("/v1/brains", json=body).status_code == 201  # its defaults fit


def test_the_plastic_layers_of_a_patch_are_sized_before_they_are_built(tmp_path: Path) -> None:
    with limited(tmp_path, max_model_bytes=512 * MiB) as c:
        r = c.post("/v1/brains", json={"name": "p", "input": {"kind": "vector", "shape": [784]}})
        assert r.status_code == 201
        for params in ({"layers": [{"hidden": 8192, "k": 8}] * 2}, {"memory_capacity": 100_000}):
            refused(c.patch("/v1/brains/p", json={"params": params}), 422, "BRAIN_MAX_MODEL_BYTES")
        assert c.patch("/v1/brains/p", json={"params": {"memory_capacity": 1000}}).status_code == 200


@pytest.mark.parametrize("shape", [[784], [1, 28, 28], [3, 32, 32]])
def test_the_default_brain_of_every_strategy_fits_the_default_budget(tmp_path: Path, shape: list[int]) -> None:
    from models.registry import STRATEGIES

    kind = "vector" if len(shape) == 1 else "image"
    with limited(tmp_path) as c:
        for strategy in sorted(STRATEGIES):  # joint on [3, 32, 32] the largest: 1.2 GiB once its memory is full
            r = c.post("/v1/brains", json={"name": strategy, "input": {"kind": kind, "shape": shape},
                                           "strategy": strategy})
            assert r.status_code == 201, r.text


def test_growth_per_task_is_sized_at_the_tasks_given(tmp_path: Path) -> None:
    """MyGO adds a generator per task and GEM a memory and a reference gradient: the check sizes them
    at the tasks it is given (the brain's task limit bounds how many come). PNN is sized at its
    ``max_columns`` whatever the tasks, its own bound."""
    from service.budgets import check_model
    from service.errors import Invalid
    from service.tables import Brain

    settings = make_settings(tmp_path, max_model_bytes=64 * MiB)

    def brain(strategy: str, params: dict) -> Brain:
        return Brain(name=strategy, input_kind="vector", input_shape=[784], strategy=strategy, encoder="flatten",
                     params=params, replay={"size": 500, "policy": "reservoir"}, max_labels=10, seed=0)

    for strategy, fits, over in [("mygo", 2, 20), ("gem", 20, 400), ("agem", 20, 400)]:
        check_model(settings, brain(strategy, {}), tasks=fits)
        with pytest.raises(Invalid, match=rf"with {over} tasks.*BRAIN_MAX_MODEL_BYTES"):
            check_model(settings, brain(strategy, {}), tasks=over)
    check_model(settings, brain("pnn", {"max_columns": 16}), tasks=1000)
    with pytest.raises(Invalid, match="BRAIN_MAX_MODEL_BYTES"):
        check_model(settings, brain("pnn", {"hidden": 1000, "max_columns": 16}), tasks=1)


def test_meta_training_is_sized_with_its_inner_steps(tmp_path: Path) -> None:
    """Second-order meta-training keeps every inner step's weights in its graph: 1,000 steps over a
    PLN of 1,024 units are gigabytes; the same on the head alone, or first-order, are not."""
    with limited(tmp_path, max_model_bytes=256 * MiB) as c:
        pln = {"hidden": 1024, "nm_hidden": 64, "train_layers": "pln"}
        r = c.post("/v1/brains", json={"name": "m", "input": {"kind": "vector", "shape": [DIM]}, "strategy": "anml",
                                       "params": pln})
        assert r.status_code == 201, r.text
        body = {"samples": samples(4), "steps": 1, "inner_steps": 1000}
        refused(c.post("/v1/brains/m/meta-train", json=body), 422, "1000 inner steps", "BRAIN_MAX_MODEL_BYTES")
        r = c.post("/v1/brains/m/meta-train", params={"wait": True}, json={**body, "first_order": True})
        assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text


def test_the_sleep_budget_has_a_limit(tmp_path: Path) -> None:
    with limited(tmp_path, max_sleep_budget=5000) as c:
        refused(c.patch("/v1/brains/v", json={"sleep_policy": {"budget": 5001}}), 422, "limit is 5000",
                "BRAIN_MAX_SLEEP_BUDGET")
        r = c.post("/v1/brains", json={"name": "w", "input": {"kind": "vector", "shape": [DIM]},
                                       "sleep_policy": {"budget": 10_000_000}})
        refused(r, 422, "BRAIN_MAX_SLEEP_BUDGET")
        assert c.patch("/v1/brains/v", json={"sleep_policy": {"budget": 5000}}).status_code == 200


@pytest.mark.parametrize("route", ["samples", "predict", "evaluate", "meta-train"])
def test_images_are_counted_by_what_they_are_resized_to(tmp_path: Path, route: str) -> None:
    """One-pixel PNGs, each resized to the brain's 16 x 16: 16 of them are 4,096 pixel values, at the
    limit; 17 are over it, refused before any is decoded."""
    with limited(tmp_path, max_decoded_pixels=4096) as c:
        for name, strategy in (("img", None), ("meta", "anml")):
            r = c.post("/v1/brains", json={"name": name, "input": {"kind": "image", "shape": [16, 16]},
                                           "strategy": strategy, "params": {"layers": [{"hidden": 8, "k": 2}]}
                                           if strategy is None else {}})
            assert r.status_code == 201, r.text
        pixel = png(1)
        learn = [{"image": pixel, "label": "a"}, {"image": pixel, "label": "b"}]
        r = c.post("/v1/brains/img/samples", params={"wait": True}, json={"task": "t", "samples": learn})
        assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text

        def send(n: int):
            items = [{"image": pixel, "label": f"l{i % 2}"} for i in range(n)]
            if route == "predict":
                return c.post("/v1/brains/img/predict", json={"inputs": [{"image": pixel}] * n})
            if route == "meta-train":
                return c.post("/v1/brains/meta/meta-train", json={"samples": items, "steps": 1, "inner_steps": 1})
            return c.post(f"/v1/brains/img/{route}", json={"task": "t", "samples": items})

        refused(send(17), 422, "17 images resized to [16, 16] are 4352 pixel values", "the limit is 4096",
                "BRAIN_MAX_DECODED_PIXELS")
        assert send(16).status_code in (200, 202)


def test_an_image_is_refused_from_its_header_by_the_request_budget(tmp_path: Path) -> None:
    """A header of 100 x 100 pixels (its data a stub that would not decode): over a budget of 4,096,
    refused for its size, not found corrupt, so nothing was decompressed."""
    with limited(tmp_path, max_decoded_pixels=4096) as c:
        r = c.post("/v1/brains", json={"name": "img", "input": {"kind": "image", "shape": [1, 4, 4]}})
        assert r.status_code == 201
        image = base64.b64encode(png_header(100, 100)).decode()
        for url, body in [("samples", {"task": "t", "samples": [{"image": image, "label": "a"}]}),
                          ("predict", {"inputs": [{"image": image}]})]:
            refused(c.post(f"/v1/brains/img/{url}", json=body), 422, "100x100 pixels", "BRAIN_MAX_DECODED_PIXELS")


def test_a_new_task_that_would_grow_the_brain_past_its_budget_is_refused(tmp_path: Path) -> None:
    """MyGO adds a head and a generator per task: at 32 MiB a brain of 784 inputs holds a few tasks;
    the batch whose new task would not fit is refused (nothing of it logged), its known tasks go on."""
    with limited(tmp_path, max_model_bytes=32 * MiB) as c:
        r = c.post("/v1/brains", json={"name": "g", "input": {"kind": "vector", "shape": [784]}, "strategy": "mygo",
                                       "max_labels": 2})
        assert r.status_code == 201, r.text
        batch = [{"x": [0.0] * 784, "label": "a"}]
        answers = [c.post("/v1/brains/g/samples", json={"task": f"t{i}", "samples": batch}) for i in range(10)]
        fitted = [r.status_code for r in answers].index(422)
        assert fitted >= 2 and all(r.status_code == 202 for r in answers[:fitted])
        refused(answers[fitted], 422, f"with {fitted + 1} tasks", "BRAIN_MAX_MODEL_BYTES")
        assert len(c.get("/v1/brains/g/tasks").json()["tasks"]) == fitted
        assert c.post("/v1/brains/g/samples", json={"task": "t0", "samples": batch}).status_code == 202
