"""Engine and session factory, and the Alembic upgrade used at start-up."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from psycopg.rows import namedtuple_row
from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.settings import Settings

T = TypeVar("T")
AFTER_COMMIT = "after_commit"
READ_ONLY = "pb_read_only"  # execution option of the engine that read-only sessions use
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # pysqlite's own BEGIN is deferred and late: ours below
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # WAL + NORMAL may lose the last commits on power loss
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:
            # A transaction takes SQLite's write lock before its first read, so that a read-modify-
            # write (labels, tasks, positions) never works from a stale read; sessions that only
            # read say so and run deferred, beside the writer (WAL).
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def on_commit(sessions: sessionmaker, key: str, *, empty: Callable[[], T], collect: Callable[[Session, T], None],
              committed: Callable[[T], None]) -> None:
    """Act on what a transaction changed once it has committed: after each flush ``collect(session,
    pending)`` adds to the transaction's ``pending`` (made by ``empty()``, kept in
    ``session.info[key]`` while the flush history still tells what changed), ``committed(pending)``
    runs after the commit, and a rollback drops it."""
    def flushed(session: Session, _context: object) -> None:
        if key not in session.info:
            session.info[key] = empty()
        collect(session, session.info[key])

    def done(session: Session) -> None:
        pending = session.info.pop(key, None)
        if pending is not None:
            committed(pending)

    def rolled_back(session: Session, _transaction: object) -> None:
        session.info.pop(key, None)

    event.listen(sessions, "after_flush", flushed)
    event.listen(sessions, "after_commit", done)
    event.listen(sessions, "after_soft_rollback", rolled_back)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` after the session's transaction commits (e.g. delete files it orphaned)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


class Database:
    """One engine and its session factory, built from settings."""

    def __init__(self, settings: Settings) -> None:
        assert settings.database_url is not None
        self.url = settings.database_url
        self.engine = make_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = self.engine.execution_options(**{READ_ONLY: True})

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error; the callbacks
        registered with :func:`after_commit` run once the commit has succeeded.

        Writing sessions are serialised with each other on every store: on SQLite the transaction
        takes the write lock when it begins; on Postgres a read-modify-write locks the rows it
        reads (``with_for_update``). ``read_only`` sessions never wait for a writer."""
        with self.sessions(bind=self._reader if read_only else self.engine) as session:
            with session.begin():
                yield session
            for callback in session.info.pop(AFTER_COMMIT, []):
                callback()

    def dispose(self) -> None:
        self.engine.dispose()


def fetch_binary(conn: Connection, query: Select) -> Sequence[Any]:
    """``query``'s rows (attributes named as its columns). On psycopg, with binary results: bytea
    arrives as bytes instead of hex text that the server encodes and the client decodes (blobs and
    the log's inputs; what it saves: docs/bench/blobs.md, docs/bench/shards.md)."""
    if conn.dialect.driver != "psycopg":
        return conn.execute(query).all()
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    with conn.connection.driver_connection.cursor(binary=True, row_factory=namedtuple_row) as cur:
        cur.execute(str(compiled), compiled.params)
        return cur.fetchall()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    if url.startswith("sqlite"):
        make_engine(url).dispose()  # creates the folder of the SQLite file
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
