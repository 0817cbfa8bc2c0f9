"""Opening a database for the drivers.

`open_database(url)` gives, for a `postgresql://` URL, a `GuardedPostgresqlDatabase` (see
`pg_guard`: the same commit authority, enforced by the server's read-only default; needs the
`pg` extra), and for a path (or `sqlite:///path`) a `GuardedSqliteDatabase` (see `commit_guard`: only the transaction
coordinator may commit, and SQLite's authorizer enforces it): WAL journal, foreign keys on,
synchronous NORMAL and a busy timeout. `init_database` also creates missing tables and records
the schema version (`PRAGMA user_version`; a file of an older version is refused: `migrate`);
`connect_database` opens one without creating tables; with `create=False` it (like
`open_database`) refuses a file that does not exist (DatabaseMissing) instead of creating an
empty one. No model is bound to a database: every driver runs its statements on the database
(or transaction) it is given.
"""
import os

from . import models, settings
from .commit_guard import CommitForbidden, GuardedSqliteDatabase, database_key  # noqa: F401
from .dialect import set_schema_version_sql
from .gates import BUSY_TIMEOUT_MS
from .schema_parity import SCHEMA_VERSION, check_schema_version
from .transaction_coordinator import TransactionCoordinator

try:  # the `pg` extra (psycopg 3)
    from .pg_guard import GuardedPostgresqlDatabase
except ImportError:
    GuardedPostgresqlDatabase = None

POSTGRESQL_SCHEMES = ("postgresql://", "postgres://")
SQLITE_SCHEME = "sqlite:///"

PRAGMAS = (
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("synchronous", "normal"),
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("mmap_size", 256 * 1024 * 1024),
)


class DatabaseOpenError(RuntimeError):
    """The database file cannot be created or opened."""


class DatabaseMissing(DatabaseOpenError):
    """The database file does not exist and was not to be created; `path` names it."""

    def __init__(self, path):
        self.path = path
        super().__init__(f"database {path} does not exist")


def resolve_db_path(path=None):
    """The database path: the explicit one, else setting `database.path` ($HOC_DRIVERS_DB, the
    settings file, ./hoc.db)."""
    return path or settings.get("database.path")


def _create_owner_only(path):
    """Create a missing database file with mode 0600 before SQLite opens it."""
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DatabaseOpenError(f"cannot open database {path}: directory {directory} does not exist")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseOpenError(f"cannot create database {path}: {exc.strerror}") from None


def is_postgresql_url(url):
    """True when `url` names a PostgreSQL database (postgresql://…)."""
    return isinstance(url, str) and url.startswith(POSTGRESQL_SCHEMES)


def _open_postgresql(url):
    """Connect the guarded PostgreSQL database at `url`."""
    if GuardedPostgresqlDatabase is None:
        raise DatabaseOpenError(f"cannot open database {url}: PostgreSQL needs the pg extra "
                                "(pip install 'hoc-drivers[pg]')")
    db = GuardedPostgresqlDatabase(url)
    try:
        db.connect(reuse_if_open=True)
    except Exception as exc:
        raise DatabaseOpenError(f"cannot open database {url}: {exc}") from None
    return db


def open_database(path=None, create=True, foreign_keys=True):
    """Open the database at `path` and connect it: a `postgresql://` URL is a PostgreSQL
    database (which must exist; `create` and `foreign_keys` are SQLite's); a path (or
    `sqlite:///path`) is a SQLite file: a missing one is created (mode 0600), or with
    `create=False` refused (DatabaseMissing). `foreign_keys=False` (for `migrate`'s table
    rebuilds only) leaves foreign-key enforcement off on this connection."""
    path = resolve_db_path(path)
    if is_postgresql_url(path):
        return _open_postgresql(path)
    path = str(path).removeprefix(SQLITE_SCHEME)
    if os.path.isdir(path):
        raise DatabaseOpenError(f"cannot open database {path}: it is a directory")
    if not create and path != ":memory:" and not os.path.exists(path):
        raise DatabaseMissing(path)
    _create_owner_only(path)
    if path != ":memory:" and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseOpenError(f"cannot open database {path}: not readable and writable")
    db = GuardedSqliteDatabase(
        path,
        pragmas={**dict(PRAGMAS), "foreign_keys": int(foreign_keys)},
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=False,
    )
    try:
        db.connect(reuse_if_open=True)
    except Exception as exc:
        raise DatabaseOpenError(f"cannot open database {path}: {exc}") from None
    return db


def init_database(path=None):
    """Open the database, create missing tables, indexes and triggers and record the schema
    version (idempotent); a file of an older schema version is refused (OlderSchema)."""
    db = open_database(path)
    with TransactionCoordinator(db).transaction():
        check_schema_version(db)
        models.create_schema(db)
        db.execute_sql(set_schema_version_sql(db, SCHEMA_VERSION))
    return db


def connect_database(path=None, create=True):
    """Open a database without creating tables (`create`: as in `open_database`)."""
    return open_database(path, create)
