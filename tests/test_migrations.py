"""Alembic is the only way the schema changes, so the migrations must round-trip and agree with the ORM.

On SQLite (the embedded default) and on Postgres (the full stack): upgrade to head, downgrade to
base, upgrade to head again, checking which tables exist after each step; and at head, Alembic's
autogenerate comparison of the migrated database against ``service.tables.Base.metadata`` must find
no difference (a model change without a migration fails here).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from service.db import downgrade, make_engine, upgrade
from service.tables import Base

APP_TABLES = {"brains", "tasks", "samples", "versions", "jobs", "evaluations", "api_keys", "api_key_grants", "blobs",
              "feedback", "drift_events"}


def test_orm_tables_are_the_expected_ones() -> None:
    # the test below is only as good as this list: keep it in step with service.tables
    assert set(Base.metadata.tables) == APP_TABLES


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrations' / 'brain.db'}"


@pytest.fixture
def postgres_url(pg_url: str) -> Iterator[str]:
    """A database of its own inside the test session's server, so that downgrading to base never
    pulls the schema from under other tests sharing ``pg_url``."""
    from sqlalchemy.engine import make_url

    base = make_url(pg_url)
    name = f"pb_mig_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()


def _indexes(url: str) -> dict[str, set[str]]:
    engine = make_engine(url)
    try:
        insp = inspect(engine)
        return {t: {ix["name"] for ix in insp.get_indexes(t)} for t in APP_TABLES}
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    assert not (_tables(url) & APP_TABLES), "the database should start empty"

    upgrade(url)
    assert APP_TABLES <= _tables(url)
    assert "alembic_version" in _tables(url)
    head = _revision(url)
    assert head is not None
    assert _schema_diff(url) == []
    indexes = _indexes(url)
    for table in APP_TABLES - {"brains", "api_keys", "blobs"}:  # every child table is indexed by its brain
        assert f"ix_{table}_brain_id" in indexes[table], (table, indexes[table])

    downgrade(url, "base")
    assert not (_tables(url) & APP_TABLES), f"left behind: {_tables(url) & APP_TABLES}"
    assert _revision(url) is None

    upgrade(url)
    assert APP_TABLES <= _tables(url)
    assert _revision(url) == head
    assert _schema_diff(url) == []

    upgrade(url)  # already at head: a no-op, not an error
    assert _revision(url) == head


def test_sqlite_round_trip_and_matches_models(sqlite_url: str) -> None:
    _round_trip(sqlite_url)


def test_postgres_round_trip_and_matches_models(postgres_url: str) -> None:
    _round_trip(postgres_url)


def test_diff_detects_a_model_change(sqlite_url: str) -> None:
    """The comparison is not vacuous: a column the migrations lack is reported."""
    from sqlalchemy import Column, Integer, MetaData

    upgrade(sqlite_url)
    changed = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["brains"].append_column(Column("extra", Integer, nullable=True))
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), changed)
    finally:
        engine.dispose()
    # ("add_column", schema, table name, Column)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "brains", "extra")]


def _brains_at_0004(url: str) -> None:
    """Brains as stored before 0005: plastic ones with the default layers (``null``) and a conv
    layer without ``activation``, and one of another strategy."""
    upgrade(url, "0004")
    rows = [
        ("flat", "vector", [784], "plastic", "flatten", {"layers": None, "ridge": 0.01}),
        ("image", "image", [28, 28], "plastic", "pixels", {"layers": None}),
        ("text", "text", [1], "plastic", "all-minilm-l6-v2", {"layers": None}),
        ("conv", "vector", [28, 28], "plastic", "flatten",
         {"layers": [{"type": "conv", "filters": 8, "size": 5, "pool": 4}]}),
        ("other", "vector", [784], "replay", "flatten", {"hidden": 16}),
    ]
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for name, kind, shape, strategy, encoder, params in rows:
                conn.execute(text(
                    "INSERT INTO brains (name, input_kind, input_shape, strategy, encoder, params, sleep_policy,"
                    " replay, seed, num_classes, labels, learned_position, samples_learned, samples_since_sleep,"
                    " writer_fence, created_at) VALUES (:name, :kind, :shape, :strategy, :encoder, :params,"
                    " '{}', '{}', 0, 10, '[]', 0, 0, 0, 0, CURRENT_TIMESTAMP)"),
                    {"name": name, "kind": kind, "shape": json.dumps(shape), "strategy": strategy,
                     "encoder": encoder, "params": json.dumps(params)})
    finally:
        engine.dispose()


def _params(url: str) -> dict[str, dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name, params FROM brains")).all()
    finally:
        engine.dispose()
    return {name: json.loads(params) if isinstance(params, str) else params for name, params in rows}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_0005_pins_existing_plastic_brains_to_the_layers_their_checkpoints_hold(store: str, request) -> None:
    from models.plastic import Plastic

    url = request.getfixturevalue(f"{store}_url")
    _brains_at_0004(url)
    upgrade(url)
    params = _params(url)
    # a flat 784-vector brain kept its sparse layer (the new default would read it as a 28 x 28 image)
    assert [layer["type"] for layer in params["flat"]["layers"]] == ["sparse"]
    assert params["flat"]["ridge"] == 0.01
    assert Plastic(input_dim=784, num_classes=10, input_shape=[784], layers=params["flat"]["layers"]).front is None
    assert Plastic(input_dim=784, num_classes=10, input_shape=[784]).front is not None
    # image brains keep the relu front end; the text brain (384 features, no shape) its sparse layer
    assert params["image"]["layers"] == [{"type": "conv", "filters": 64, "size": 5, "pool": 4, "activation": "relu"}]
    assert [layer["type"] for layer in params["text"]["layers"]] == ["sparse"]
    assert params["conv"]["layers"] == [{"type": "conv", "filters": 8, "size": 5, "pool": 4, "activation": "relu"}]
    assert params["other"] == {"hidden": 16}
    downgrade(url, "0004")  # the older code knows no "activation"
    assert params_without_activation(_params(url))


def params_without_activation(params: dict[str, dict]) -> bool:
    return all("activation" not in layer for p in params.values() for layer in p.get("layers") or [])


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_0006_pins_plastic_brains_on_an_encoder_to_their_sparse_layer(store: str, request) -> None:
    from models.plastic import Plastic

    url = request.getfixturevalue(f"{store}_url")
    _brains_at_0004(url)
    upgrade(url, "0005")
    engine = make_engine(url)
    try:  # a text brain created after 0005, with the default layers
        with engine.begin() as conn:
            conn.execute(text("UPDATE brains SET params = :p WHERE name = 'text'"),
                         {"p": json.dumps({"layers": None, "ridge": "auto"})})
    finally:
        engine.dispose()
    before = _params(url)
    upgrade(url)
    params = _params(url)
    assert params["text"] == {"layers": [{"type": "sparse", "hidden": 2048, "k": 256, "hebbian_lr": 0.0,
                                          "frozen": False, "neurogenesis": True}], "ridge": "auto"}
    # the pinned layers build the brain its checkpoint holds; the new default for features has none
    assert len(Plastic(input_dim=384, num_classes=8, encoded=True, layers=params["text"]["layers"]).layers) == 1
    assert Plastic(input_dim=384, num_classes=8, encoded=True).layers == []
    assert {name: p for name, p in params.items() if name != "text"} == \
        {name: p for name, p in before.items() if name != "text"}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_0007_adds_the_blobs_table_and_takes_it_away(store: str, request) -> None:
    url = request.getfixturevalue(f"{store}_url")
    upgrade(url, "0006")
    assert "blobs" not in _tables(url)
    upgrade(url, "0007")
    assert _revision(url) == "0007"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO blobs (key, chunk, data) VALUES ('1/a', 0, :d)"), {"d": b"\x00\x01"})
            assert conn.execute(text("SELECT data FROM blobs WHERE key = '1/a'")).scalar_one() == b"\x00\x01"
            if store == "postgres":  # chunks stored out of line, uncompressed: tensors do not compress
                storage = conn.execute(text("SELECT attstorage FROM pg_attribute WHERE attrelid = 'blobs'::regclass"
                                            " AND attname = 'data'")).scalar_one()
                assert storage in ("e", b"e")
    finally:
        engine.dispose()
    downgrade(url, "0006")
    assert "blobs" not in _tables(url) and "brains" in _tables(url)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_0008_and_0009_add_feedback_and_drift_events_and_take_them_away(store: str, request) -> None:
    url = request.getfixturevalue(f"{store}_url")
    upgrade(url, "0007")
    assert not {"feedback", "drift_events"} & _tables(url)
    upgrade(url)
    assert _revision(url) == "0009" and {"feedback", "drift_events"} <= _tables(url)
    downgrade(url, "0007")
    assert not {"feedback", "drift_events"} & _tables(url) and "blobs" in _tables(url)
