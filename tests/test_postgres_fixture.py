"""The PostgreSQL fixture of tests/conftest.py: its resolution order (SLM_TEST_POSTGRES_URL, then the
local server, then a throwaway server over pg_ctl, then a skip naming what is missing) and the fresh
databases it hands out. Each option is exercised for real; absence is simulated with empty candidates."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
from conftest import (  # tests/conftest.py
    LOCAL_POSTGRES,
    POSTGRES_LOCAL_ENV,
    POSTGRES_REQUIRED_ENV,
    POSTGRES_URL_ENV,
    PostgresMisconfigured,
    PostgresServer,
    PostgresUnavailable,
    find_pg_ctl,
    free_port,
    postgres_server_or_skip,
    resolve_postgres_server,
)

psycopg2 = pytest.importorskip("psycopg2")
from psycopg2.extensions import parse_dsn  # noqa: E402


def _nothing_answers() -> list[dict]:
    """Local candidates where no server can be: a closed TCP port and a socket folder that does not exist."""
    return [{"host": "127.0.0.1", "port": free_port(), "user": "postgres", "dbname": "postgres"},
            {"host": "/nonexistent/slm-pg-socket", "port": 5432, "user": "postgres", "dbname": "postgres"}]


def _scalar(server: PostgresServer, query: str, dbname: str | None = None, **extra):
    with contextlib.closing(server.connect(dbname, **extra)) as conn:
        cur = conn.cursor()
        cur.execute(query)
        return cur.fetchone()[0]


def _database_exists(server: PostgresServer, name: str) -> bool:
    with contextlib.closing(server.connect()) as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def _local_server_answers() -> bool:
    with contextlib.ExitStack() as stack:
        try:
            resolve_postgres_server(stack, {}, pg_ctl=[])
            return True
        except PostgresUnavailable:
            return False


# --- 1. SLM_TEST_POSTGRES_URL wins ------------------------------------------------------------------

def test_env_url_wins_over_local_server_and_pg_ctl(postgres_server: PostgresServer, postgres_url: str) -> None:
    session_db = parse_dsn(postgres_url)["dbname"]
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgresql+psycopg2://", 1)):
        with contextlib.ExitStack() as stack:
            # the real local candidates and pg_ctl are offered too: the URL must still win
            server = resolve_postgres_server(stack, {POSTGRES_URL_ENV: url}, local=LOCAL_POSTGRES,
                                             pg_ctl=find_pg_ctl())
        assert server.source == "env"
        assert server.conninfo["dbname"] == session_db
        assert _scalar(server, "SELECT current_database()") == session_db


def test_env_url_that_does_not_answer_fails_instead_of_falling_back() -> None:
    port = free_port()
    env = {POSTGRES_URL_ENV: f"postgresql://postgres@127.0.0.1:{port}/postgres"}
    with contextlib.ExitStack() as stack:
        with pytest.raises(PostgresMisconfigured, match=rf"{POSTGRES_URL_ENV} is set .* 127\.0\.0\.1:{port}"):
            resolve_postgres_server(stack, env)
        with pytest.raises(pytest.fail.Exception, match=POSTGRES_URL_ENV):
            postgres_server_or_skip(stack, env)


# --- 2. the local server ----------------------------------------------------------------------------

def test_local_server_is_used_without_url() -> None:
    if not _local_server_answers():
        pytest.skip(f"no local PostgreSQL server answers at {', '.join(map(str, LOCAL_POSTGRES))}")
    with contextlib.ExitStack() as stack:
        server = resolve_postgres_server(stack, {}, pg_ctl=[])  # no pg_ctl: it has to be the local server
    assert server.source == "local"
    assert server.conninfo in [dict(c) for c in LOCAL_POSTGRES]
    db = server.fresh_database()
    try:  # a fresh, empty database: existing ones are never touched
        assert db.schema is None and db.dbname.startswith("slm_test_")
        assert _scalar(server, "SELECT current_database()", db.dbname) == db.dbname
        assert _scalar(server, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db.dbname) == 0
    finally:
        db.drop()
    assert not _database_exists(server, db.dbname)


def test_local_candidates_are_tried_in_order() -> None:
    if not _local_server_answers():
        pytest.skip("no local PostgreSQL server")
    with contextlib.ExitStack() as stack:
        server = resolve_postgres_server(stack, {}, local=[*_nothing_answers(), *LOCAL_POSTGRES], pg_ctl=[])
    assert server.source == "local" and server.conninfo == dict(LOCAL_POSTGRES[0])


# --- 3. a throwaway server over pg_ctl --------------------------------------------------------------

def test_local_lookup_off_starts_a_throwaway_server_with_pg_ctl(monkeypatch: pytest.MonkeyPatch) -> None:
    pg_ctl = find_pg_ctl()
    if not pg_ctl:
        pytest.skip("no pg_ctl on PATH nor in /usr/lib/postgresql/*/bin")
    monkeypatch.delenv(POSTGRES_URL_ENV, raising=False)
    monkeypatch.setenv(POSTGRES_LOCAL_ENV, "0")  # read from the environment, as the session fixture does
    with contextlib.ExitStack() as stack:
        server = postgres_server_or_skip(stack)
        assert server.source == "pg_ctl" and server.detail == pg_ctl[0]
        port = server.conninfo["port"]
        assert port != 5432
        folder = Path(_scalar(server, "SHOW data_directory")).parent
        assert folder.name.startswith("slm-pg-")
        assert _scalar(server, "SHOW port") == str(port)
        db = server.fresh_database()
        with contextlib.closing(server.connect(db.dbname)) as conn:
            conn.cursor().execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        # the URL it hands out is one SQLAlchemy (Dagster's storage) reads
        import sqlalchemy

        engine = sqlalchemy.create_engine(db.url.replace("postgresql://", "postgresql+psycopg2://", 1))
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT x FROM t")).scalar() == 1
        engine.dispose()
        db.drop()
        assert not _database_exists(server, db.dbname)
    # the end of the session stops the server and removes its folder
    with pytest.raises(psycopg2.OperationalError):
        server.connect(connect_timeout=3)
    assert not folder.exists()


def test_pg_ctl_that_fails_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "pg_ctl"
    broken.write_text("#!/bin/sh\necho 'pg_ctl (PostgreSQL) 15.0'\n[ \"$1\" = --version ] || exit 3\n")
    broken.chmod(0o755)
    with contextlib.ExitStack() as stack:
        with pytest.raises(PostgresUnavailable, match=rf"{broken} could not start a throwaway server"):
            resolve_postgres_server(stack, {POSTGRES_LOCAL_ENV: "0"}, pg_ctl=[str(broken)])


# --- 4. nothing: skip, naming what is missing -------------------------------------------------------

def test_nothing_available_skips_naming_what_is_missing() -> None:
    local = _nothing_answers()
    with contextlib.ExitStack() as stack:
        with pytest.raises(pytest.skip.Exception) as skipped:
            postgres_server_or_skip(stack, {}, local=local, pg_ctl=[])
    reason = str(skipped.value)
    assert f"{POSTGRES_URL_ENV} is not set" in reason
    assert f"no local PostgreSQL server answers at 127.0.0.1:{local[0]['port']}" in reason
    assert "/nonexistent/slm-pg-socket/.s.PGSQL.5432" in reason
    assert "no pg_ctl to start a throwaway server" in reason and "/usr/lib/postgresql/*/bin/pg_ctl" in reason


def test_nothing_available_fails_when_postgres_is_required() -> None:
    env = {POSTGRES_LOCAL_ENV: "0", POSTGRES_REQUIRED_ENV: "1"}
    with contextlib.ExitStack() as stack:
        with pytest.raises(pytest.fail.Exception, match=rf"lookup is off .*no pg_ctl.*{POSTGRES_REQUIRED_ENV}=1"):
            postgres_server_or_skip(stack, env, pg_ctl=[])


def test_missing_psycopg2_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # import psycopg2 -> ImportError
    with contextlib.ExitStack() as stack:
        with pytest.raises(pytest.skip.Exception, match="psycopg2 is not installed"):
            postgres_server_or_skip(stack, {})


def test_missing_pytest_postgresql_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytest_postgresql.executors", None)
    with contextlib.ExitStack() as stack:
        with pytest.raises(PostgresUnavailable, match="lookup is off .*pytest-postgresql is not installed"):
            resolve_postgres_server(stack, {POSTGRES_LOCAL_ENV: "0"}, pg_ctl=["/path/to/pg_ctl"])


# --- the databases the fixtures hand out ------------------------------------------------------------

def test_session_and_test_databases_are_fresh_and_separate(request: pytest.FixtureRequest,
                                                           postgres_server: PostgresServer,
                                                           postgres_url: str, postgres_db_url: str) -> None:
    assert request.node.get_closest_marker("postgres") is not None  # added at collection
    session_db, test_db = parse_dsn(postgres_url)["dbname"], parse_dsn(postgres_db_url)["dbname"]
    assert session_db != test_db and session_db.startswith("slm_test_") and test_db.startswith("slm_test_")
    with contextlib.closing(psycopg2.connect(postgres_db_url)) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE only_here (x int)")
        conn.commit()
    with contextlib.closing(psycopg2.connect(postgres_url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('only_here')")
        assert cur.fetchone()[0] is None


def test_role_without_createdb_gets_a_fresh_schema(postgres_server: PostgresServer, postgres_url: str) -> None:
    from psycopg2 import sql

    session_db = parse_dsn(postgres_url)["dbname"]
    role = f"slm_test_role_{os.getpid()}"
    with contextlib.closing(postgres_server.connect()) as admin:
        try:
            admin.cursor().execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB").format(sql.Identifier(role)))
        except psycopg2.errors.InsufficientPrivilege:
            pytest.skip(f"{postgres_server.conninfo.get('user')} may not create a role on {postgres_server.where}")
        try:
            admin.cursor().execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(session_db), sql.Identifier(role)))
            limited = PostgresServer("env", {**postgres_server.conninfo, "user": role, "dbname": session_db,
                                             "password": None})
            try:
                limited.connect().close()
            except psycopg2.OperationalError as exc:
                pytest.skip(f"cannot log in as a new role without a password on {postgres_server.where}: {exc}")
            db = limited.fresh_database()
            assert db.dbname == session_db and db.schema and db.schema.startswith("slm_test_")
            with contextlib.closing(psycopg2.connect(db.url)) as conn, conn.cursor() as cur:
                cur.execute("SHOW search_path")
                assert cur.fetchone()[0] == db.schema
                cur.execute("CREATE TABLE t (x int)")
                cur.execute("SELECT schemaname FROM pg_tables WHERE tablename = 't'")
                assert cur.fetchone()[0] == db.schema
                conn.commit()
            db.drop()
            assert _scalar(postgres_server, f"SELECT to_regnamespace('{db.schema}')", session_db) is None
        finally:
            with contextlib.closing(postgres_server.connect(session_db)) as conn:
                conn.cursor().execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.cursor().execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_url_round_trips_through_libpq() -> None:
    tcp = PostgresServer("env", {"host": "db.example", "port": 6543, "user": "u@x", "password": "p:w/d",
                                 "dbname": "postgres", "sslmode": "require"})
    assert parse_dsn(tcp.url("d1")) == {"host": "db.example", "port": "6543", "user": "u@x", "password": "p:w/d",
                                        "dbname": "d1", "sslmode": "require"}
    sock = PostgresServer("local", {"host": "/var/run/postgresql", "port": 5432, "user": "postgres",
                                    "dbname": "postgres"})
    assert parse_dsn(sock.url("d2", schema="s1")) == {"host": "/var/run/postgresql", "port": "5432",
                                                       "user": "postgres", "dbname": "d2",
                                                       "options": "-csearch_path=s1"}
