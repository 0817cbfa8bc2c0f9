"""Opening SQLite and the guarded database: only the transaction coordinator may commit.

`open_database(path)` gives a `GuardedSqliteDatabase`: WAL journal, foreign keys on,
synchronous NORMAL and a busy timeout. The guard refuses, at run time, every transaction
control call (`commit`, `rollback`, `atomic`, `transaction`, `manual_commit`, `savepoint`,
`begin`, and raw BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE SQL) that does not come
from `hoc_drivers.transaction_coordinator`, and every write made outside a transaction.
"""
import itertools
import os
import sys
import threading
import weakref

from peewee import SqliteDatabase

DEFAULT_DB_PATH = "hoc.db"
DB_ENV_VAR = "HOC_DRIVERS_DB"
BUSY_TIMEOUT_MS = 30_000
COORDINATOR_MODULE = "hoc_drivers.transaction_coordinator"

# Frames in these modules are plumbing between a caller and the database; the caller
# named in a refusal is the first frame outside them.
_PLUMBING_MODULES = frozenset({"peewee", "contextlib", __name__})
_TRANSACTION_SQL = ("BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE")
_WRITE_SQL = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "WITH")
PRAGMAS = (
    ("journal_mode", "wal"),
    ("foreign_keys", 1),
    ("synchronous", "normal"),
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("mmap_size", 256 * 1024 * 1024),
)


class CommitForbidden(RuntimeError):
    """A commit, rollback, transaction or write attempted outside the coordinator."""


class DatabaseOpenError(RuntimeError):
    """The database file cannot be created or opened."""


def _caller():
    """Return (module name, description) of the first frame outside the database plumbing."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if module not in _PLUMBING_MODULES:
            code = frame.f_code
            return module, f"{module}.{code.co_name} ({code.co_filename}:{frame.f_lineno})"
        frame = frame.f_back
    return "?", "unknown caller"


class GuardedSqliteDatabase(SqliteDatabase):
    """A SqliteDatabase whose transaction control belongs to the transaction coordinator.

    Every refusal is also kept in `refusals` (newest last), so a test can assert that no
    code tried to commit behind the coordinator's back even if that code swallowed the error.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.refusals = []

    def _refuse(self, message):
        self.refusals.append(message)
        raise CommitForbidden(message)

    def _require_coordinator(self, operation):
        module, where = _caller()
        if module != COORDINATOR_MODULE:
            self._refuse(f"{operation} refused: only the transaction coordinator may control "
                         f"transactions; called from {where}")

    def atomic(self, *args, **kwargs):
        """Coordinator only: a transaction or savepoint block."""
        self._require_coordinator("atomic()")
        return super().atomic(*args, **kwargs)

    def transaction(self, *args, **kwargs):
        """Coordinator only: a transaction block."""
        self._require_coordinator("transaction()")
        return super().transaction(*args, **kwargs)

    def manual_commit(self):
        """Always refused: manual commit mode bypasses the coordinator."""
        self._refuse(f"manual_commit() refused: never allowed; called from {_caller()[1]}")

    def savepoint(self):
        """Coordinator only: a savepoint inside the current transaction."""
        self._require_coordinator("savepoint()")
        return super().savepoint()

    def begin(self, *args, **kwargs):
        """Coordinator only: BEGIN."""
        self._require_coordinator("begin()")
        return super().begin(*args, **kwargs)

    def commit(self):
        """Coordinator only: COMMIT."""
        self._require_coordinator("commit()")
        return super().commit()

    def rollback(self):
        """Coordinator only: ROLLBACK."""
        self._require_coordinator("rollback()")
        return super().rollback()

    def execute_sql(self, sql, params=None):
        """Run SQL; transaction control SQL is the coordinator's and writes need a transaction."""
        verb = sql.lstrip()[:9].upper()
        if verb.startswith(_TRANSACTION_SQL):
            self._require_coordinator(f"raw SQL {verb.split()[0]!r}")
        elif verb.startswith(_WRITE_SQL) and not self.in_transaction():
            if not verb.startswith("WITH") or _is_write(sql):
                self._refuse("write refused: no coordinator transaction is open "
                             f"(use TransactionCoordinator.transaction()); called from {_caller()[1]}")
        return super().execute_sql(sql, params)


def _is_write(sql):
    """True when a WITH statement ends in a write rather than a SELECT."""
    upper = sql.upper()
    return any(f" {word} " in upper for word in ("INSERT", "UPDATE", "DELETE", "REPLACE"))


def resolve_db_path(path=None):
    """The database path: the explicit one, else $HOC_DRIVERS_DB, else ./hoc.db."""
    return path or os.environ.get(DB_ENV_VAR) or DEFAULT_DB_PATH


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


def open_database(path=None):
    """Open (creating if missing, mode 0600) the SQLite database at `path` and connect it."""
    path = resolve_db_path(path)
    if os.path.isdir(path):
        raise DatabaseOpenError(f"cannot open database {path}: it is a directory")
    _create_owner_only(path)
    if path != ":memory:" and not os.access(path, os.R_OK | os.W_OK):
        raise DatabaseOpenError(f"cannot open database {path}: not readable and writable")
    db = GuardedSqliteDatabase(
        path,
        pragmas=PRAGMAS,
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=False,
    )
    try:
        db.connect(reuse_if_open=True)
    except Exception as exc:
        raise DatabaseOpenError(f"cannot open database {path}: {exc}") from None
    return db



def init_database(path=None):
    """Open the database, bind every model to it and create missing tables (idempotent)."""
    from . import models
    from .transaction_coordinator import TransactionCoordinator

    db = models.bind(open_database(path))
    with TransactionCoordinator(db).transaction():
        db.create_tables(models.ALL_MODELS)
    return db


def connect_database(path=None):
    """Open an existing database and bind every model to it, without creating tables."""
    from . import models

    return models.bind(open_database(path))


# ---------------------------------------------------------------------------------------
# Per-database registries (guard caches, running alert senders)

_registries = []
_key_lock = threading.Lock()
_memory_database_numbers = itertools.count(1)


def database_key(db):
    """Which database `db` is, for per-database registries: the real path of its file (every
    connection to one file shares it), or ("memory", n) for an in-memory database, with an n
    never reused in this process."""
    key = getattr(db, "_hoc_database_key", None)
    if key is not None:
        return key
    with _key_lock:
        key = getattr(db, "_hoc_database_key", None)
        if key is None:
            name = str(db.database)
            if name == ":memory:" or name.startswith("file::memory:") or "mode=memory" in name:
                key = ("memory", next(_memory_database_numbers))
                weakref.finalize(db, _forget_memory_database, key)
            else:
                key = os.path.realpath(name)
            db._hoc_database_key = key
    return key


def per_database_registry():
    """A new dict to key by `database_key`; an in-memory database's entry is removed when
    that database object is collected."""
    registry = {}
    _registries.append(registry)
    return registry


class DatabaseMembers:
    """Objects registered per database file, held weakly (a guard cache serving it, a sender
    waiting on it); thread-safe."""

    def __init__(self):
        self._sets = per_database_registry()
        self._lock = threading.Lock()

    def add(self, db, member):
        """Register `member` for `db`'s file."""
        with self._lock:
            self._sets.setdefault(database_key(db), weakref.WeakSet()).add(member)

    def discard(self, db, member):
        """Unregister `member` from `db`'s file (no error if it was not registered)."""
        with self._lock:
            self._sets.get(database_key(db), weakref.WeakSet()).discard(member)

    def members(self, db):
        """The members registered for `db`'s file, as a list."""
        with self._lock:
            return list(self._sets.get(database_key(db), ()))


def _forget_memory_database(key):
    # Plain dict pops, no lock: safe in whichever thread collects the database object.
    for registry in _registries:
        registry.pop(key, None)

