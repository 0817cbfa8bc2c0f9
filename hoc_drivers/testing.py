"""pytest plugin (entry point `pytest11`): fixtures for projects that embed hoc-drivers.

The backend comes from `HOC_TEST_BACKEND`: `sqlite` (the default) or `postgresql`, which starts
one PostgreSQL server per session with `pgserver` (the `pg` extra) in a temporary folder,
creates the schema once and empties every table before each test (TRUNCATE … RESTART IDENTITY
CASCADE). Tests about SQLite itself carry the `sqlite_only` marker and are skipped on
PostgreSQL.

Fixtures: `hoc_db` (an initialised database: a temporary file, or the session's PostgreSQL
database emptied), `hoc_memory_db` (initialised `:memory:`; on PostgreSQL a second
database emptied), `hoc_coordinator` (a TransactionCoordinator over `hoc_db`),
`hoc_publisher` (its in-process publisher, with `.published` events), `hoc_clock` (a manual
clock: `.advance(seconds)`), `hoc_guard_cache` (a GuardCache on that clock) and
`hoc_no_stray_commits` (fails the test if any code tried to commit, or to write, outside the
coordinator — even if it swallowed the CommitForbidden). `assert_no_stray_commits(db)` is the
same check as a plain function; `run_at_once(target, *args)` races `target` in forked processes.
"""
import shutil
import sqlite3
import tempfile

import pytest



def _backend():
    """The fixtures' backend: setting `testing.backend` ($HOC_TEST_BACKEND), sqlite by default."""
    from hoc_drivers import settings

    return settings.get("testing.backend")


def pytest_configure(config):
    """Register the `sqlite_only` marker."""
    config.addinivalue_line("markers", "sqlite_only: a test about SQLite itself (skipped on PostgreSQL)")


_SQLITE_ONLY = "about SQLite itself (HOC_TEST_BACKEND=postgresql)"


def pytest_terminal_summary(terminalreporter):
    """Say which backend the session ran on, how many tests ran there, and why any were skipped
    (on PostgreSQL only the `sqlite_only` tests should be)."""
    stats = terminalreporter.stats
    ran = sum(len([r for r in stats.get(key, []) if r.when == "call"]) for key in ("passed", "failed"))
    skipped = stats.get("skipped", [])  # a test's (or a whole module's) one skip report
    sqlite_only = sum(_SQLITE_ONLY in str(report.longrepr) for report in skipped)
    terminalreporter.write_line(
        f"hoc-drivers test backend {_backend()}: {ran} tests ran, {sqlite_only} skipped as "
        f"sqlite_only, {len(skipped) - sqlite_only} skipped for other reasons")


def pytest_collection_modifyitems(config, items):
    """On PostgreSQL, skip the tests marked `sqlite_only`."""
    if _backend() == "postgresql":
        skip = pytest.mark.skip(reason=_SQLITE_ONLY)
        for item in items:
            if item.get_closest_marker("sqlite_only"):
                item.add_marker(skip)


class ManualClock:
    """A monotonic clock that moves only when told: call it for the time, `.advance(s)` to move."""

    def __init__(self, start=1_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        """Move the clock forward by `seconds`."""
        self.now += seconds


def run_at_once(target, *args, processes=4, timeout=60):
    """Run `target(*args, barrier)` in `processes` forked processes; returns their exit codes.

    Each process should call `barrier.wait()` right before the work that must race, so they
    really run it at the same moment (concurrency tests against one database file).
    """
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    children = [context.Process(target=target, args=(*args, barrier)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout)
    return [child.exitcode for child in children]


def other_connection(db):
    """A second, unguarded DB-API connection to database `db`, as another process would have
    (sqlite3 for a file; psycopg in autocommit mode for PostgreSQL: its `commit()` does
    nothing). Its parameter mark is `db.param`."""
    from hoc_drivers import dialect

    if dialect.of(db) == dialect.POSTGRESQL:
        import psycopg

        return psycopg.connect(db.database, autocommit=True)
    return sqlite3.connect(db.database)


def in_open_transaction(db):
    """True when this thread's connection to `db` has a transaction open as the database driver
    sees it (sqlite3's `in_transaction`, psycopg's transaction status), not as the coordinator
    records it: to check nothing was left open or ended early behind the coordinator's back."""
    from hoc_drivers import dialect

    conn = db.connection()
    if dialect.of(db) == dialect.POSTGRESQL:
        from psycopg.pq import TransactionStatus

        return conn.info.transaction_status != TransactionStatus.IDLE
    return conn.in_transaction


def schema_snapshot(db):
    """Every schema object of `db` as (type, name, definition) rows, read by another connection."""
    from hoc_drivers import dialect

    conn = other_connection(db)
    try:
        return conn.execute(dialect.catalog_sql(db)).fetchall()
    finally:
        conn.close()


def content_snapshot(db):
    """Everything `db` holds as another connection reads it, to compare before and after: SQLite's
    dump of the file; on PostgreSQL the schema and every row of every table of the models."""
    from hoc_drivers import dialect
    from hoc_drivers.models import ALL_MODELS

    conn = other_connection(db)
    try:
        if dialect.of(db) == dialect.SQLITE:
            return list(conn.iterdump())
        return [schema_snapshot(db)] + [
            conn.execute(f'SELECT * FROM "{model._meta.table_name}" ORDER BY 1').fetchall()
            for model in ALL_MODELS]
    finally:
        conn.close()


def assert_no_stray_commits(db):
    """Fail when `db` refused any commit, transaction or write made outside the coordinator."""
    refusals = getattr(db, "refusals", [])
    assert not refusals, "commit/write outside the coordinator:\n" + "\n".join(refusals)


class _PostgresqlTestDatabase:
    """The session's PostgreSQL database: created once, emptied for each test."""

    def __init__(self, url):
        from hoc_drivers.db import init_database

        self.url = url
        db = init_database(url)
        self.schema = schema_snapshot(db)
        db.close()

    def emptied(self):
        """The database connected, every table emptied (TRUNCATE … RESTART IDENTITY CASCADE of
        those holding rows);
        a schema a test changed (a dropped table, an injected trigger) is created afresh."""
        from hoc_drivers.commit_guard import forget_database
        from hoc_drivers.db import connect_database, init_database
        from hoc_drivers.models import ALL_MODELS
        from hoc_drivers.transaction_coordinator import TransactionCoordinator

        db = connect_database(self.url)
        if schema_snapshot(db) != self.schema:
            with TransactionCoordinator(db).transaction():
                db.execute_sql("DROP SCHEMA public CASCADE")
                db.execute_sql("CREATE SCHEMA public")
            init_database(self.url).close()
        tables = [f'"{model._meta.table_name}"' for model in ALL_MODELS]
        filled = " UNION ALL ".join(f"(SELECT {i} FROM {table} LIMIT 1)" for i, table in enumerate(tables))
        with TransactionCoordinator(db).transaction():
            used = [tables[i] for (i,) in db.execute_sql(filled).fetchall()]
            if used:  # TRUNCATE costs per table: only those a test wrote to
                db.execute_sql(f"TRUNCATE {', '.join(used)} RESTART IDENTITY CASCADE")
        forget_database(db.key)
        return db


@pytest.fixture(scope="session")
def _hoc_postgresql():
    """The session's PostgreSQL databases (`_PostgresqlTestDatabase`s: for `hoc_db`, and another
    for `hoc_memory_db`), or None on SQLite."""
    if _backend() != "postgresql":
        yield None
        return
    try:
        import pgserver

        # its own folder: pytest's numbered temporary folders are pruned by other pytest runs
        server = pgserver.get_server(tempfile.mkdtemp(prefix="hoc-pg-"), cleanup_mode="delete")
        server.psql("CREATE DATABASE hoc_test; CREATE DATABASE hoc_test_other;")
    except Exception as error:  # noqa: BLE001 (any reason it cannot start ends the run, loudly)
        pytest.exit(f"HOC_TEST_BACKEND=postgresql, but no PostgreSQL server could be started "
                    f"({type(error).__name__}: {error}); install the pg extra: pip install -e '.[test,pg]'",
                    returncode=3)
    yield [_PostgresqlTestDatabase(server.get_uri(name)) for name in ("hoc_test", "hoc_test_other")]
    server.cleanup()


def refuse_writes(tx, table, message, event="INSERT", when=None):
    """Failure injection inside coordinator transaction `tx`: from now on `event` statements on
    `table` (rows for which SQL condition `when` over NEW / OLD holds) fail with `message`, an
    IntegrityError, on either backend (a trigger; the PostgreSQL fixtures drop it again)."""
    from hoc_drivers import dialect

    name = f"hoc_test_refuse_{table}_{event.lower()}"
    for sql in dialect.refusing_trigger(name, table, event, message, when)[dialect.of(tx.db)]:
        tx.db.execute_sql(sql)


@pytest.fixture(scope="session")
def _hoc_schema_template(tmp_path_factory):
    """One initialised database file per session; each test gets a copy (fast: no DDL)."""
    from hoc_drivers.db import init_database

    path = tmp_path_factory.mktemp("hoc-template") / "template.db"
    db = init_database(str(path))
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


@pytest.fixture
def hoc_db(tmp_path, _hoc_schema_template, _hoc_postgresql):
    """An initialised hoc-drivers database: a temporary file, or on PostgreSQL the session's
    database with every table emptied."""
    from hoc_drivers.db import connect_database

    if _hoc_postgresql is not None:
        db = _hoc_postgresql[0].emptied()
    else:
        path = tmp_path / "hoc-test.db"
        shutil.copy2(_hoc_schema_template, path)
        db = connect_database(str(path))
    yield db
    db.close()


@pytest.fixture
def hoc_memory_db(_hoc_schema_template, _hoc_postgresql):
    """An initialised in-memory hoc-drivers database (single thread only); on PostgreSQL the
    session's other database (not `hoc_db`'s) emptied."""
    from hoc_drivers.db import connect_database

    if _hoc_postgresql is not None:
        db = _hoc_postgresql[1].emptied()
        yield db
        db.close()
        return
    db = connect_database(":memory:")
    template = sqlite3.connect(_hoc_schema_template)
    template.backup(db.connection())
    template.close()
    yield db
    db.close()


@pytest.fixture
def hoc_publisher():
    """An in-process event publisher that keeps what it published in `.published`."""
    from hoc_drivers.transaction_coordinator import EventPublisher

    return EventPublisher()


@pytest.fixture
def hoc_coordinator(hoc_db, hoc_publisher):
    """A TransactionCoordinator over `hoc_db`, publishing to `hoc_publisher`."""
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    return TransactionCoordinator(hoc_db, hoc_publisher)


@pytest.fixture
def hoc_clock():
    """A manual clock for TTL tests: `hoc_clock.advance(5)` makes five seconds pass."""
    return ManualClock()


@pytest.fixture
def hoc_guard_cache(hoc_clock):
    """A fresh GuardCache whose timer is `hoc_clock`."""
    from hoc_drivers.guard_cache import GuardCache

    return GuardCache(timer=hoc_clock)


@pytest.fixture
def hoc_no_stray_commits(hoc_db):
    """Use in a test to fail it if anything tried to commit or write behind the coordinator."""
    yield hoc_db
    assert_no_stray_commits(hoc_db)
