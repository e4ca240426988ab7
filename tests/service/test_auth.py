"""API keys and per-brain access (service.auth): 401 without a valid key, 403 without access.

Every brain route is checked, the plain Starlette predict route included; keys are created the way
clients create them, through ``POST /v1/keys`` with the admin key (``BRAIN_ADMIN_KEY``).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from starlette.exceptions import HTTPException

from service import auth
from service.app import create_app
from service.auth import AuthConfigError
from service.db import upgrade
from service.settings import Settings
from tests.conftest import make_settings

DIM = 8
SMALL = {"layers": [{"hidden": 64, "k": 8}]}
ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnop"
X = [0.5] * DIM


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN = bearer(ADMIN_KEY)


def secured_settings(data_dir: Path, **overrides: object) -> Settings:
    s = make_settings(data_dir, admin_key=ADMIN_KEY, **overrides)
    upgrade(s.database_url)
    return s


@pytest.fixture
def secured(tmp_path: Path) -> Settings:
    return secured_settings(tmp_path / "var")


@pytest.fixture
def api(secured: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(secured)) as c:
        yield c


def make_brain(client: TestClient, name: str, headers: dict = ADMIN) -> None:
    body = {"name": name, "input": {"kind": "vector", "shape": [DIM]}, "params": SMALL}
    r = client.post("/v1/brains", json=body, headers=headers)
    assert r.status_code == 201, r.text


def teach(client: TestClient, name: str, headers: dict = ADMIN) -> str:
    """Learn a few samples; the wake job's id."""
    samples = [{"x": [float(i % 2)] * DIM, "label": ["a", "b"][i % 2]} for i in range(8)]
    r = client.post(f"/v1/brains/{name}/samples", params={"wait": True},
                    json={"task": "t1", "samples": samples}, headers=headers)
    assert r.status_code == 202 and r.json()["state"] == "succeeded", r.text
    return r.json()["job"]


def make_key(client: TestClient, headers: dict = ADMIN, **body) -> dict:
    r = client.post("/v1/keys", json={"name": "k", **body}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


# every route of one brain: (method, path, JSON body, access it needs, status when allowed)
def brain_routes(name: str) -> list[tuple[str, str, dict | None, str, int]]:
    sample = {"task": "t1", "samples": [{"x": X, "label": "a"}]}
    return [
        ("GET", f"/v1/brains/{name}", None, "read", 200),
        ("GET", f"/v1/brains/{name}/tasks", None, "read", 200),
        ("GET", f"/v1/brains/{name}/versions", None, "read", 200),
        ("GET", f"/v1/brains/{name}/metrics", None, "read", 200),
        ("POST", f"/v1/brains/{name}/predict", {"inputs": [{"x": X}]}, "read", 200),
        ("POST", f"/v1/brains/{name}/samples", sample, "write", 202),
        ("POST", f"/v1/brains/{name}/evaluate", sample, "write", 200),
        ("POST", f"/v1/brains/{name}/sleep", None, "write", 202),
        ("POST", f"/v1/brains/{name}/meta-train", {"samples": [{"x": X, "label": "p"}, {"x": X, "label": "q"}]},
         "write", 422),  # allowed, then refused by the strategy ("plastic" cannot meta-train)
        ("POST", f"/v1/brains/{name}/versions/1/promote", None, "write", 200),
        ("PATCH", f"/v1/brains/{name}", {"sleep_policy": {"every_samples": 1000}}, "write", 200),
        ("DELETE", f"/v1/brains/{name}", None, "admin", 204),
    ]


def call(client: TestClient, method: str, path: str, body: dict | None, headers: dict | None):
    return client.request(method, path, json=body, headers=headers or {})


ADMIN_ROUTES = [
    ("POST", "/v1/brains", {"name": "new", "input": {"kind": "vector", "shape": [DIM]}}),
    ("GET", "/v1/keys", None),
    ("POST", "/v1/keys", {"name": "x", "admin": True}),
    ("DELETE", "/v1/keys/1", None),
]


# -- auth off --------------------------------------------------------------------------------------
def test_without_keys_auth_is_off_with_a_warning(settings: Settings, caplog) -> None:
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        assert client.get("/v1/brains").status_code == 200
        make_brain(client, "open", headers={})
        teach(client, "open", headers={})
        assert client.post("/v1/brains/open/predict", json={"inputs": [{"x": X}]}).status_code == 200
        # a key sent anyway changes nothing while auth is off
        assert client.get("/v1/brains/open", headers=bearer("whatever")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("authentication is OFF" in m and "open" in m for m in warnings), warnings


def test_with_an_admin_key_there_is_no_open_api_warning(secured: Settings, caplog) -> None:
    with caplog.at_level(logging.WARNING), TestClient(create_app(secured)) as client:
        assert client.get("/v1/brains").status_code == 401
    assert not any("authentication is OFF" in r.getMessage() for r in caplog.records)


# -- 401 -------------------------------------------------------------------------------------------
def test_missing_or_unknown_keys_get_401_on_every_route(api: TestClient) -> None:
    make_brain(api, "a")
    routes = [(m, p, b) for m, p, b, _, _ in brain_routes("a")] + ADMIN_ROUTES
    routes += [("GET", "/v1/brains", None), ("GET", "/v1/jobs/nope", None)]
    for method, path, body in routes:
        for headers, challenge in [
            (None, "Bearer"),
            ({"Authorization": "Basic YWRtaW46YWRtaW4="}, "Bearer"),
            ({"Authorization": "Bearer"}, "Bearer"),
            (bearer("pb_not-a-key"), 'Bearer error="invalid_token"'),
            (bearer(ADMIN_KEY + "x"), 'Bearer error="invalid_token"'),
        ]:
            r = call(api, method, path, body, headers)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert r.headers["www-authenticate"] == challenge, (method, path, r.headers)
            assert r.json()["detail"], (method, path)
    assert api.get("/v1/brains/a", headers=ADMIN).status_code == 200  # nothing was deleted or changed
    assert api.get("/v1/brains/a/versions", headers=ADMIN).json()["current"] == 1


def test_health_metrics_and_docs_stay_open(api: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert api.get(path).status_code == 200, path
    doc = api.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["APIKey"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert doc["paths"]["/v1/brains/{name}/predict"]["post"]["security"] == [{"APIKey": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]


# -- admin -----------------------------------------------------------------------------------------
def test_the_admin_key_may_do_everything(api: TestClient) -> None:
    make_brain(api, "a")
    job = teach(api, "a")
    assert api.get(f"/v1/jobs/{job}", headers=ADMIN).json()["state"] == "succeeded"
    for method, path, body, _, allowed in brain_routes("a"):
        r = call(api, method, path, body, ADMIN)
        assert r.status_code == allowed, (method, path, r.text)
    key = make_key(api, admin=True, name="second admin")
    assert key["admin"] and key["key"].startswith("pb_")
    make_brain(api, "b", headers=bearer(key["key"]))  # an admin key made by the admin is an admin too
    assert [k["name"] for k in api.get("/v1/keys", headers=bearer(key["key"])).json()["keys"]] == ["second admin"]
    assert api.delete(f"/v1/keys/{key['id']}", headers=ADMIN).status_code == 204


# -- per brain -------------------------------------------------------------------------------------
def test_a_key_for_one_brain_cannot_touch_another(api: TestClient) -> None:
    make_brain(api, "a")
    make_brain(api, "b")
    job_a, job_b = teach(api, "a"), teach(api, "b")
    key = make_key(api, brains={"a": "write"})
    mine = bearer(key["key"])

    # brain b: every route refused, the plain predict route included, and b is unchanged
    for method, path, body, _, _ in brain_routes("b"):
        r = call(api, method, path, body, mine)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert "'b'" in r.json()["detail"] or "admin" in r.json()["detail"], r.json()
    assert api.get(f"/v1/jobs/{job_b}", headers=mine).status_code == 403
    b = api.get("/v1/brains/b", headers=ADMIN).json()
    assert b["current_version"] == 2 and b["samples_learned"] == 8 and b["sleep_policy"] != {"every_samples": 1000}
    # a brain that does not exist is refused the same way: a key learns nothing of others' brains
    assert api.get("/v1/brains/nope", headers=mine).status_code == 403
    # nor may it create brains or manage keys
    for method, path, body in ADMIN_ROUTES:
        assert call(api, method, path, body, mine).status_code == 403, (method, path)
    assert [x["name"] for x in api.get("/v1/brains", headers=mine).json()["brains"]] == ["a"]
    assert [x["name"] for x in api.get("/v1/brains", headers=ADMIN).json()["brains"]] == ["a", "b"]

    # brain a: everything but deleting it
    assert api.get(f"/v1/jobs/{job_a}", headers=mine).status_code == 200
    for method, path, body, access, allowed in brain_routes("a"):
        r = call(api, method, path, body, mine)
        expected = 403 if access == "admin" else allowed
        assert r.status_code == expected, (method, path, r.status_code, r.text)


def test_a_read_key_reads_but_cannot_write(api: TestClient) -> None:
    make_brain(api, "a")
    job = teach(api, "a")
    reader = bearer(make_key(api, brains={"a": "read"})["key"])
    for method, path, body, access, allowed in brain_routes("a"):
        r = call(api, method, path, body, reader)
        expected = allowed if access == "read" else 403
        assert r.status_code == expected, (method, path, r.status_code, r.text)
        if expected == 403:
            assert "may not change brain 'a'" in r.json()["detail"] or "admin" in r.json()["detail"]
    assert api.get(f"/v1/jobs/{job}", headers=reader).status_code == 200
    versions = api.get("/v1/brains/a/versions", headers=ADMIN).json()
    assert versions["current"] == 2 and len(versions["versions"]) == 2  # no write got through


def test_a_key_with_several_brains(api: TestClient) -> None:
    for name in ("a", "b", "c"):
        make_brain(api, name)
    key = bearer(make_key(api, brains={"a": "read", "b": "write"})["key"])
    assert [x["name"] for x in api.get("/v1/brains", headers=key).json()["brains"]] == ["a", "b"]
    assert api.post("/v1/brains/a/sleep", headers=key).status_code == 403
    assert api.post("/v1/brains/b/sleep", headers=key).status_code == 202
    assert api.post("/v1/brains/c/predict", json={"inputs": [{"x": X}]}, headers=key).status_code == 403


def test_grants_go_with_their_brain(api: TestClient) -> None:
    """A brain deleted and created again under the same name is not the brain a key was given."""
    make_brain(api, "a")
    key = bearer(make_key(api, brains={"a": "write"})["key"])
    assert api.get("/v1/brains/a", headers=key).status_code == 200
    assert api.delete("/v1/brains/a", headers=ADMIN).status_code == 204
    make_brain(api, "a")
    assert api.get("/v1/brains/a", headers=key).status_code == 403
    assert api.post("/v1/brains/a/predict", json={"inputs": [{"x": X}]}, headers=key).status_code == 403


# -- keys ------------------------------------------------------------------------------------------
def test_revoked_keys_stop_working_at_once_in_process(api: TestClient) -> None:
    make_brain(api, "a")
    teach(api, "a")
    key = make_key(api, brains={"a": "write"})
    mine = bearer(key["key"])
    predict = {"inputs": [{"x": X}]}
    assert api.post("/v1/brains/a/predict", json=predict, headers=mine).status_code == 200  # now remembered
    assert api.get("/v1/brains/a", headers=mine).status_code == 200
    assert api.delete(f"/v1/keys/{key['id']}", headers=ADMIN).status_code == 204
    for r in (api.post("/v1/brains/a/predict", json=predict, headers=mine), api.get("/v1/brains/a", headers=mine)):
        assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text
    listed = {k["id"]: k for k in api.get("/v1/keys", headers=ADMIN).json()["keys"]}
    assert listed[key["id"]]["revoked_at"] is not None
    assert api.delete(f"/v1/keys/{key['id']}", headers=ADMIN).status_code == 204  # idempotent
    assert api.delete("/v1/keys/999", headers=ADMIN).status_code == 404


def test_revoked_keys_stop_working_in_other_processes_within_the_cache_time(tmp_path: Path) -> None:
    settings = secured_settings(tmp_path / "var", auth_cache_seconds=0.5)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as other:
        make_brain(one, "a")
        teach(one, "a")
        key = make_key(one, brains={"a": "read"})
        predict = {"inputs": [{"x": X}]}
        assert other.post("/v1/brains/a/predict", json=predict, headers=bearer(key["key"])).status_code == 200
        assert one.delete(f"/v1/keys/{key['id']}", headers=ADMIN).status_code == 204
        time.sleep(0.6)
        r = other.post("/v1/brains/a/predict", json=predict, headers=bearer(key["key"]))
        assert r.status_code == 401 and "revoked" in r.json()["detail"], r.text


def test_predict_checks_keys_from_memory_not_the_database(api: TestClient) -> None:
    make_brain(api, "a")
    teach(api, "a")
    reader = bearer(make_key(api, brains={"a": "read"})["key"])
    predict = {"inputs": [{"x": X}]}
    assert api.post("/v1/brains/a/predict", json=predict, headers=reader).status_code == 200
    statements: list[str] = []
    engine = api.app.state.runtime.db.engine

    def listener(conn, cursor, statement, *rest) -> None:
        # The sleep scheduler's tick shares the engine; only the requests' statements count.
        if threading.current_thread().name != "sleep-scheduler":
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        for _ in range(20):
            assert api.post("/v1/brains/a/predict", json=predict, headers=reader).status_code == 200
        assert api.post("/v1/brains/b/predict", json=predict, headers=reader).status_code == 403
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert statements == []


def test_the_database_holds_no_plaintext_key(api: TestClient, secured: Settings) -> None:
    make_brain(api, "a")
    created = [make_key(api, brains={"a": "read"}), make_key(api, admin=True)]
    keys = [k["key"] for k in created]
    assert len(set(keys)) == 2 and all(len(k) >= 40 for k in keys)
    listing = api.get("/v1/keys", headers=ADMIN).text
    assert not any(k in listing for k in keys) and "key_hash" not in listing and '"key"' not in listing
    db = sqlite3.connect(secured.database_url.split("///", 1)[1])
    try:
        dump = "\n".join(db.iterdump())
        hashes = {row[0] for row in db.execute("SELECT key_hash FROM api_keys")}
        prefixes = [row[0] for row in db.execute("SELECT prefix FROM api_keys ORDER BY id")]
    finally:
        db.close()
    for key in [*keys, ADMIN_KEY]:
        assert key not in dump
    assert hashes == {hashlib.sha256(k.encode()).hexdigest() for k in keys}
    assert prefixes == [k["prefix"] for k in created] == [k[:11] for k in keys]


def test_key_requests_are_validated(api: TestClient) -> None:
    make_brain(api, "a")
    bad = [
        ({"name": "k", "brains": {"nope": "read"}}, 404),
        ({"name": "k", "brains": {"a": "admin"}}, 422),
        ({"name": "k", "admin": True, "brains": {"a": "read"}}, 422),
        ({"name": "k"}, 422),
        ({"name": "", "admin": True}, 422),
        ({"name": "k", "admin": True, "secret": "x"}, 422),
    ]
    for body, status in bad:
        r = api.post("/v1/keys", json=body, headers=ADMIN)
        assert r.status_code == status, (body, r.text)
    assert api.get("/v1/keys", headers=ADMIN).json()["keys"] == []


def test_keys_made_while_auth_is_off_turn_it_on(settings: Settings) -> None:
    """Without BRAIN_ADMIN_KEY the first key must be an admin key (or no one could manage the
    service), it turns auth on, and the last admin key cannot be revoked."""
    with TestClient(create_app(settings)) as client:
        make_brain(client, "a", headers={})
        r = client.post("/v1/keys", json={"name": "k", "brains": {"a": "read"}})
        assert r.status_code == 409 and "admin key first" in r.json()["detail"]
        assert client.get("/v1/brains").status_code == 200  # still open
        admin = make_key(client, headers={}, admin=True)
        assert client.get("/v1/brains").status_code == 401
        assert client.post("/v1/brains/a/predict", json={"inputs": [{"x": X}]}).status_code == 401
        assert client.get("/v1/brains", headers=bearer(admin["key"])).status_code == 200
        r = client.delete(f"/v1/keys/{admin['id']}", headers=bearer(admin["key"]))
        assert r.status_code == 409 and "last admin key" in r.json()["detail"]
        reader = make_key(client, headers=bearer(admin["key"]), brains={"a": "read"})
        assert client.get("/v1/brains/a", headers=bearer(reader["key"])).status_code == 200
    with TestClient(create_app(settings)) as client:  # a restart keeps auth on
        assert client.get("/v1/brains").status_code == 401


# -- settings --------------------------------------------------------------------------------------
def test_require_auth_refuses_to_start_without_an_admin_key(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(AuthConfigError, match="BRAIN_ADMIN_KEY"):
        create_app(make_settings(tmp_path / "var", require_auth=True))
    with pytest.raises(AuthConfigError, match="BRAIN_ADMIN_KEY"):
        create_app(make_settings(tmp_path / "var", require_auth=True, admin_key="  "))
    monkeypatch.setenv("BRAIN_REQUIRE_AUTH", "true")
    monkeypatch.setenv("BRAIN_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("BRAIN_DATA_DIR", str(tmp_path / "env"))
    settings = Settings()
    assert settings.require_auth and settings.admin_key.get_secret_value() == ADMIN_KEY
    assert ADMIN_KEY not in repr(settings)  # a SecretStr: not in logs or tracebacks
    upgrade(settings.database_url)
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/brains").status_code == 401
        assert client.get("/v1/brains", headers=ADMIN).status_code == 200


def test_the_keys_migration_upgrades_and_downgrades_an_existing_database(tmp_path: Path) -> None:
    from sqlalchemy import inspect, text

    from service.db import downgrade, make_engine

    url = f"sqlite:///{tmp_path / 'brain.db'}"
    upgrade(url, "0001")
    engine = make_engine(url)
    try:
        assert "api_keys" not in inspect(engine).get_table_names()
        with engine.begin() as conn:  # a brain made before keys existed
            conn.execute(text(
                "INSERT INTO brains (name, input_kind, input_shape, strategy, encoder, params, sleep_policy, replay,"
                " seed, num_classes, labels, learned_position, samples_learned, samples_since_sleep, created_at)"
                " VALUES ('old', 'vector', '[8]', 'plastic', 'flatten', '{}', '{}', '{}', 0, 10, '[]', 0, 0, 0,"
                " '2026-01-01')"
            ))
        upgrade(url)
        assert {"api_keys", "api_key_grants"} <= set(inspect(engine).get_table_names())
        with engine.begin() as conn:
            brain_id = conn.execute(text("SELECT id FROM brains WHERE name = 'old'")).scalar_one()
            conn.execute(text("INSERT INTO api_keys (name, prefix, key_hash, admin, created_at)"
                              " VALUES ('k', 'pb_x', 'h', false, '2026-01-01')"))
            conn.execute(text(f"INSERT INTO api_key_grants (key_id, brain_id, access) VALUES (1, {brain_id}, 'read')"))
            conn.execute(text("DELETE FROM brains WHERE name = 'old'"))  # its grants go with it
            assert conn.execute(text("SELECT count(*) FROM api_key_grants")).scalar_one() == 0
        downgrade(url, "0001")
        inspect_after = inspect(engine)
        assert "api_keys" not in inspect_after.get_table_names() and "brains" in inspect_after.get_table_names()
    finally:
        engine.dispose()


def test_keys_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """The full stack's database: scoped keys, revocation and the last-admin guard (a database of
    its own: keys in the shared one would turn auth on for other tests)."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(pg_url)
    name = f"pb_auth_{uuid.uuid4().hex[:10]}"
    admin_db = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin_db.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        settings = make_settings(tmp_path / "var", database_url=url)
        upgrade(url)
        with TestClient(create_app(settings)) as client:
            make_brain(client, "a", headers={})
            make_brain(client, "b", headers={})
            root = make_key(client, headers={}, admin=True)
            assert client.get("/v1/brains").status_code == 401
            key = make_key(client, headers=bearer(root["key"]), brains={"a": "read"})
            assert [x["name"] for x in client.get("/v1/brains", headers=bearer(key["key"])).json()["brains"]] == ["a"]
            assert client.get("/v1/brains/b", headers=bearer(key["key"])).status_code == 403
            assert client.delete(f"/v1/keys/{root['id']}", headers=bearer(root["key"])).status_code == 409
            assert client.delete(f"/v1/keys/{key['id']}", headers=bearer(root["key"])).status_code == 204
            assert client.get("/v1/brains/a", headers=bearer(key["key"])).status_code == 401
    finally:
        with admin_db.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_db.dispose()


# -- nothing parsed before auth (issue 14, point 4) -------------------------------------------------
def body_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every route that takes a request body (by the OpenAPI document: the ones
    FastAPI parses and the ones that parse their own, ``fastjson``), path parameters filled in."""
    out = []
    for path, methods in app.openapi()["paths"].items():
        path = path.replace("{name}", "a").replace("{number}", "1").replace("{key_id}", "1")
        out += [(method.upper(), path) for method, op in methods.items() if "requestBody" in op]
    return out


def test_body_routes_cover_every_route_with_a_body(api: TestClient) -> None:
    routes = set(body_routes(api.app))
    assert {("POST", "/v1/brains"), ("PATCH", "/v1/brains/a"), ("POST", "/v1/brains/a/meta-train"),
            ("POST", "/v1/keys"), ("POST", "/v1/brains/a/samples"), ("POST", "/v1/brains/a/evaluate"),
            ("POST", "/v1/brains/a/predict")} <= routes


def test_invalid_json_without_a_valid_key_gets_401_not_422(api: TestClient) -> None:
    make_brain(api, "a")
    for method, path in body_routes(api.app):
        for headers in ({}, bearer("pb_not-a-key")):
            r = api.request(method, path, content=b'{"name": ', headers={**headers, "Content-Type": "application/json"})
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
    # with the key, the same body is parsed and refused
    assert api.post("/v1/brains", content=b'{"name": ', headers={**ADMIN, "Content-Type": "application/json"}
                    ).status_code == 422


class RecordedBody:
    """A streamed (chunked) request body that records whether anyone read it."""

    def __init__(self, size: int) -> None:
        self.size, self.consumed = size, False

    def __iter__(self):
        self.consumed = True
        yield b"{" + b" " * (self.size - 2) + b"}"


def test_the_body_of_a_request_without_a_valid_key_is_not_read(tmp_path: Path) -> None:
    """Not a byte: a body over BRAIN_MAX_BODY_BYTES, streamed without Content-Length, gets 401 (not
    the 413 that reading it would give), on every route with a body and on a path with no route."""
    settings = secured_settings(tmp_path / "var", max_body_bytes=1024)
    with TestClient(create_app(settings)) as client:
        make_brain(client, "a")
        for method, path in [*body_routes(client.app), ("POST", "/v1/nowhere")]:
            for headers in ({}, bearer("pb_not-a-key"), {"Authorization": "Basic YWRtaW46YWRtaW4="}):
                body = RecordedBody(4096)
                r = client.request(method, path, content=body, headers={**headers, "Content-Type": "application/json"})
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert not body.consumed, (method, path, headers)
                assert r.headers["x-request-id"]  # still observed: request ids and counts
        body = RecordedBody(4096)  # with the admin key it is read, and refused for its size
        r = client.post("/v1/brains/a/samples", content=body, headers=ADMIN)
        assert r.status_code == 413 and body.consumed, r.text


def test_open_paths_stay_open_and_other_paths_need_a_key(api: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/ui/", "/metrics"):
        assert api.get(path).status_code == 200, path
    for path in ("/nowhere", "/v1", "/healthz/x", "/uix"):
        r = api.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, r.status_code)
    assert api.get("/nowhere", headers=ADMIN).status_code == 404
    assert api.get("/metrics", headers=bearer("pb_not-a-key")).status_code == 401  # a key sent is checked


def test_requests_authenticate_once(api: TestClient, monkeypatch) -> None:
    """The caller found before the route is the one its dependencies check (403 per brain)."""
    make_brain(api, "a")
    teach(api, "a")
    reader = bearer(make_key(api, brains={"a": "read"})["key"])
    calls: list[str | None] = []
    real = auth.authenticate

    async def counted(authenticator, token):
        calls.append(token)
        return await real(authenticator, token)

    monkeypatch.setattr(auth, "authenticate", counted)
    assert api.get("/v1/brains/a", headers=reader).status_code == 200
    assert api.patch("/v1/brains/a", json={"sleep_policy": {"every_samples": 9}}, headers=reader).status_code == 403
    assert api.post("/v1/brains/a/predict", json={"inputs": [{"x": X}]}, headers=reader).status_code == 200
    assert len(calls) == 3


# -- the key memory (issue 14, point 7) -------------------------------------------------------------
def test_a_flood_of_unknown_keys_does_not_evict_a_valid_one(tmp_path: Path) -> None:
    settings = secured_settings(tmp_path / "var", auth_cache_seconds=600)  # nothing expires meanwhile
    with TestClient(create_app(settings)) as api:
        make_brain(api, "a")
        key = make_key(api, brains={"a": "read"})["key"]
        assert api.get("/v1/brains/a", headers=bearer(key)).status_code == 200  # now remembered
        authenticator = api.app.state.auth
        flood = [f"pb_flood-{i}" for i in range(20_000)]
        for token in flood:
            with pytest.raises(HTTPException):
                authenticator.load(token)
        remembered = authenticator.peek(key)  # from memory alone
        assert remembered is not None and remembered.brains == {"a": "read"}
        with pytest.raises(HTTPException) as refused:
            authenticator.peek(flood[-1])  # the latest refusals are remembered too
        assert refused.value.status_code == 401
        assert authenticator.peek(flood[0]) is None  # the oldest were let go: the memory is bounded
