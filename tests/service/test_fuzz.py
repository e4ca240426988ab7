"""Fuzzing the HTTP API with Schemathesis: requests generated from ``/openapi.json`` (valid and
invalid: wrong types, missing fields, odd strings and numbers) against the app in process, on
every operation, and not one may be answered with a 5xx.

The predict, samples and evaluate routes parse their own bodies (``service.api.fastjson``); their
schemas reach the document through ``fastjson.add_schemas``, and this test checks that bodies were
generated for them. Part of each operation's examples name a brain that exists (one of each input
kind, and a meta-trainable one) so that requests get past the 404. Reproducible: Hypothesis runs
derandomized, without an example database, and without shrinking (a failure lists every request
that got a 5xx, as a curl command).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from sqlalchemy import select

from service.app import create_app
from service.db import upgrade
from service.tables import Job
from tests.conftest import make_settings

#: examples per operation and generation mode (positive and negative): about 1,700 requests in all
EXAMPLES = 40
DIM = 4
SMALL = {"layers": [{"hidden": 32, "k": 4}]}
BRAINS = {
    "vec": {"input": {"kind": "vector", "shape": [DIM]}, "params": SMALL},
    "img": {"input": {"kind": "image", "shape": [1, 4, 4]}, "params": SMALL},
    "txt": {"input": {"kind": "text", "shape": [1]}, "params": SMALL},
    "meta": {"input": {"kind": "vector", "shape": [DIM]}, "strategy": "anml",
             "params": {"hidden": 16, "nm_hidden": 8, "meta_lr": 0.003}},
}
#: operations whose requests change who may call (an API key turns auth on): fuzzed last
LAST = ("/v1/keys",)
#: examples per operation whose bodies are also drawn close to valid (a random body of the schema
#: almost never gets past validation into decoding, learning and inference)
SHAPED_EXAMPLES = 60
SHAPED = {f"POST /v1/brains/{{name}}/{route}" for route in ("predict", "samples", "evaluate", "meta-train")}


def _b64(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def _png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**70), 2**70)
labels = st.text(min_size=1, max_size=6) | st.integers(-(2**63), 2**63 - 1) | st.sampled_from(["a", 7, "7"])


def shaped_input(brain: str) -> st.SearchStrategy[dict]:
    """One input for ``brain``: mostly of the right form and size, with any numbers."""
    dim = int(np.prod(BRAINS[brain]["input"]["shape"]))
    sizes = st.sampled_from([dim, dim, dim, 0, 1, dim + 1])
    if BRAINS[brain]["input"]["kind"] == "text":
        return st.text(max_size=40).map(lambda t: {"text": t}) | st.just({"x": [1.0]}) | st.just({"text": " "})
    return st.one_of(
        sizes.flatmap(lambda n: st.lists(numbers, min_size=n, max_size=n)).map(lambda x: {"x": x}),
        sizes.flatmap(lambda n: st.lists(st.floats(width=32), min_size=n, max_size=n)).map(
            lambda x: {"x_b64": _b64(x)}),
        st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1)).map(
            lambda t: {"image": _png(np.random.default_rng(t[2]).integers(0, 256, (t[0], t[1]), dtype=np.uint8))}),
        st.text(max_size=20).map(lambda t: {"text": t}),
    )


def shaped_body(key: str, brain: str) -> st.SearchStrategy[dict]:
    item = shaped_input(brain)
    sample = st.tuples(item, labels, st.none() | st.text(min_size=1, max_size=4)).map(
        lambda t: {**t[0], "label": t[1], **({"id": t[2]} if t[2] else {})})
    task = st.sampled_from(["t1", "t2"]) | st.text(min_size=1, max_size=8)
    if key.endswith("/predict"):
        return st.fixed_dictionaries({"inputs": st.lists(item, min_size=1, max_size=4)}, optional={"task": task})
    if key.endswith("/meta-train"):  # a background set: mostly well formed (one bad sample spoils it)
        dim = int(np.prod(BRAINS[brain]["input"]["shape"]))
        vectors = st.lists(st.floats(-1e6, 1e6), min_size=dim, max_size=dim)
        good = st.tuples(vectors, st.sampled_from(["a", "b", 1])).map(lambda t: {"x": t[0], "label": t[1]})
        background = st.lists(good, min_size=2, max_size=8) | st.lists(sample, min_size=1, max_size=4)
        return st.fixed_dictionaries({"samples": background,
                                      "steps": st.integers(1, 3), "inner_steps": st.integers(1, 2)})
    extra = {"mode": st.sampled_from(["class", "task"])} if key.endswith("/evaluate") else {}
    return st.fixed_dictionaries({"task": task, "samples": st.lists(sample, min_size=1, max_size=6)}, optional=extra)


#: ids of jobs that exist, filled in by the fixture: GET /v1/jobs/{job_id} names them half the time
JOBS: list[str] = []


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings_ = make_settings(
        tmp_path_factory.mktemp("fuzz") / "var", max_input_dim=512, max_batch=64, max_predict_inputs=64,
        max_meta_samples=64, max_body_bytes=1024 * 1024, wait_timeout_seconds=1.0, sleep_check_seconds=3600,
    )
    upgrade(settings_.database_url)
    with TestClient(create_app(settings_), raise_server_exceptions=False) as c:
        for name, body in BRAINS.items():
            r = c.post("/v1/brains", json={"name": name, **body})
            if r.status_code == 422 and "install" in r.text:  # an optional encoder: its requests get a 404
                continue
            assert r.status_code == 201, r.text
            kind = body["input"]["kind"]
            dim = int(np.prod(body["input"]["shape"]))
            rng = np.random.default_rng(0)
            samples = [{"x": rng.random(dim).tolist(), "label": ["a", 7][i % 2]} for i in range(8)]
            if kind == "image":
                samples = [{"x": rng.random((1, 4, 4)).tolist(), "label": ["a", 7][i % 2]} for i in range(8)]
            if kind == "text":
                samples = [{"text": f"sample number {i}", "label": ["a", 7][i % 2]} for i in range(8)]
            r = c.post(f"/v1/brains/{name}/samples", params={"wait": True}, json={"task": "t1", "samples": samples})
            assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text
            JOBS.append(r.json()["job"])
        yield c


def _send(client: TestClient, case) -> httpx.Response | None:
    """The case as a request through the test client; None when the client cannot even send it
    (e.g. a header that is not Latin-1): such a request never reaches a server."""
    kw = case.as_transport_kwargs(base_url="http://testserver")
    extra: dict = {}
    if "json" in kw:
        extra["content"] = json.dumps(kw["json"]).encode()
    elif kw.get("data") is not None:
        data = kw["data"]
        extra["content"] = data if isinstance(data, bytes) else str(data).encode()
    headers = {k: v for k, v in kw["headers"].items() if k.lower() != "x-schemathesis-testcaseid"}
    try:
        return client.request(kw["method"], kw["url"], headers=headers, params=kw.get("params") or None, **extra)
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError):
        return None


def test_no_request_gets_a_5xx(client: TestClient) -> None:
    schema = schemathesis.openapi.from_dict(client.app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.path.startswith(LAST), op.path.startswith(LAST) and op.method == "post"))
    with_body = {f"{op.method.upper()} {op.path}" for op in operations if list(op.body)}
    assert {"POST /v1/brains/{name}/predict", "POST /v1/brains/{name}/samples",
            "POST /v1/brains/{name}/evaluate"} <= with_body

    statuses: dict[str, Counter] = {}
    bodies: Counter = Counter()
    failures: list[str] = []
    sent = unsendable = 0
    started = time.monotonic()
    for op in operations:
        key = f"{op.method.upper()} {op.path}"
        statuses[key] = Counter()
        takes_name = any(p.name == "name" for p in op.path_parameters)
        takes_job = any(p.name == "job_id" for p in op.path_parameters)
        takes_number = any(p.name == "number" for p in op.path_parameters)
        shaped = key in SHAPED
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE, *(["shaped"] if shaped else [])):

            @settings(max_examples=SHAPED_EXAMPLES if mode == "shaped" else EXAMPLES, derandomize=True, database=None,
                      deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=GenerationMode.POSITIVE if mode == "shaped" else mode),
                   brain=st.sampled_from([*BRAINS] if mode == "shaped" else [None, *BRAINS]), data=st.data())
            def fuzz(case, brain, data) -> None:
                nonlocal sent, unsendable
                if brain and takes_name and op.method != "delete":  # half the time: a brain that exists
                    case.path_parameters = {**(case.path_parameters or {}), "name": brain}
                if brain and takes_number and brain != "meta":  # a version that exists: 1 is "init", 2 learned
                    case.path_parameters = {**(case.path_parameters or {}), "number": 2}
                if brain and takes_job:
                    case.path_parameters = {**(case.path_parameters or {}), "job_id": JOBS[len(brain) % len(JOBS)]}
                if mode == "shaped" and key.endswith("/meta-train") and brain != "img":  # the one that can, mostly
                    brain = case.path_parameters["name"] = "meta"
                if mode == "shaped":
                    case.body = data.draw(shaped_body(key, brain))
                r = _send(client, case)
                if r is None:
                    unsendable += 1
                    return
                sent += 1
                statuses[key][r.status_code] += 1
                if case.body is not None and not isinstance(case.body, type(schemathesis.core.NOT_SET)):
                    bodies[key] += 1
                if r.status_code >= 500:
                    how = getattr(mode, "value", mode)
                    failures.append(f"{key} ({how}) -> {r.status_code} {r.text[:300]}\n    {case.as_curl_command()}")

            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
                if mode == GenerationMode.POSITIVE:
                    raise
    elapsed = time.monotonic() - started
    summary = "\n".join(f"{k}: {dict(sorted(v.items()))}" for k, v in statuses.items())
    print(f"\n{sent} requests ({unsendable} unsendable) in {elapsed:.1f} s\n{summary}")
    assert not failures, f"{len(failures)} requests got a 5xx:\n" + "\n".join(failures[:30])
    rt = client.app.state.runtime
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the jobs they queued end
        with rt.db.session() as s:
            if not s.scalar(select(Job.id).where(Job.state.in_(("queued", "running"))).limit(1)):
                break
        time.sleep(0.2)
    with rt.db.session() as s:  # and none failed (a 5xx, later)
        failed = [f"{job.kind}: {job.error}" for job in s.scalars(select(Job).where(Job.state == "failed"))]
    assert not failed, "jobs failed:\n" + "\n".join(failed)
    assert sent >= 1000, f"only {sent} requests were sent"
    for key in with_body:  # bodies were generated, and some got past validation into the route
        assert bodies[key] >= EXAMPLES, (key, bodies[key])
    for key in SHAPED:
        assert statuses[key][200] + statuses[key][202] >= 5, (key, statuses[key])
