"""The commit guard: SQLite itself refuses transaction control and writes from anyone but the
transaction coordinator.

Every connection of a `GuardedSqliteDatabase` is a `GuardedConnection`, which installs an
authorizer (`sqlite3.Connection.set_authorizer`). SQLite calls it for every statement it
prepares, after parsing, with the real action: transaction control (BEGIN, COMMIT, ROLLBACK,
SAVEPOINT, RELEASE), a write (INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, REINDEX, ANALYZE)
or a read. However the text is spelled (leading comments, odd case, `WITH … INSERT`), and
whether it arrives through Peewee or through the raw `db.connection()`:

- transaction control is allowed only while the coordinator is issuing it;
- a write is allowed only while a coordinator transaction is open on the connection;
- anything else raises `CommitForbidden` naming the caller's file:line; nothing is changed.

SQLite asks the authorizer only when it prepares a statement, and Python's sqlite3 module keeps
prepared statements in a cache keyed by their text. So the connection also remembers which
texts SQLite classified as control or write, and refuses a cached one in the wrong state before
it reaches SQLite; a write or control statement prepared by a bare `sqlite3.Cursor` (which
the connection cannot remember) is refused outright. `commit()` sends a COMMIT whose text ends
in a comment holding a random tag of the connection: SQLite prepares it once, and the cached
statement a bare cursor could replay is one it would have to read the tag for. ROLLBACK is sent
with `Connection.rollback()`, which prepares it afresh every time. PRAGMAs that change the file
or weaken later writes (user_version, journal_mode, foreign_keys, writable_schema, ...) and
ATTACH count as writes; a writable `blobopen` needs a coordinator transaction. If a statement
makes SQLite roll the whole transaction back (ON CONFLICT ROLLBACK, RAISE(ROLLBACK)), every
later statement of that coordinator block is refused and its COMMIT fails: nothing half-done
is committed.

Known limits (in-process code set on bypassing, not mistakes): a bare `sqlite3.Cursor` that
re-sends byte for byte a statement the guarded path already prepared reuses the cached
statement; another connection's `backup()` into this file, `set_authorizer(None)` and
assigning `unit` or reading the COMMIT's tag are not seen.

The public transaction methods Peewee offers (`commit`, `rollback`, `atomic`, `transaction`,
`savepoint`, `begin`, `manual_commit`) always refuse; the coordinator sends transaction
control itself, on the connection, with `issuing` set while it does.
"""
import itertools
import os
import sqlite3
import sys
import weakref

from peewee import SqliteDatabase

CONTROL = "transaction control"
WRITE = "write"
_CONTROL_ACTIONS = frozenset({sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT})
_WRITE_ACTIONS = frozenset(getattr(sqlite3, name) for name in (
    "SQLITE_INSERT", "SQLITE_UPDATE", "SQLITE_DELETE", "SQLITE_ALTER_TABLE", "SQLITE_REINDEX",
    "SQLITE_ANALYZE", "SQLITE_CREATE_INDEX", "SQLITE_CREATE_TABLE", "SQLITE_CREATE_TEMP_INDEX",
    "SQLITE_CREATE_TEMP_TABLE", "SQLITE_CREATE_TEMP_TRIGGER", "SQLITE_CREATE_TEMP_VIEW",
    "SQLITE_CREATE_TRIGGER", "SQLITE_CREATE_VIEW", "SQLITE_CREATE_VTABLE", "SQLITE_DROP_INDEX",
    "SQLITE_DROP_TABLE", "SQLITE_DROP_TEMP_INDEX", "SQLITE_DROP_TEMP_TABLE",
    "SQLITE_DROP_TEMP_TRIGGER", "SQLITE_DROP_TEMP_VIEW", "SQLITE_DROP_TRIGGER", "SQLITE_DROP_VIEW",
    "SQLITE_DROP_VTABLE") if hasattr(sqlite3, name))
# PRAGMAs that, given a value, change the file or weaken the guarantees of later writes.
_PRAGMA_WRITES = frozenset({
    "application_id", "auto_vacuum", "defer_foreign_keys", "foreign_keys",
    "ignore_check_constraints", "journal_mode", "legacy_alter_table", "locking_mode", "page_size",
    "query_only", "recursive_triggers", "schema_version", "secure_delete", "synchronous",
    "trusted_schema", "user_version", "writable_schema"})
_ATTACH_ACTIONS = frozenset({sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH})
_MAX_REMEMBERED = 4096  # classified texts kept per connection before it starts afresh

# Frames in these modules are plumbing between a caller and the database; the caller named
# in a refusal is the first frame outside them.
_PLUMBING_MODULES = frozenset({"peewee", "contextlib", "psycopg", __name__, "hoc_drivers.pg_guard"})


class CommitForbidden(RuntimeError):
    """A commit, rollback, transaction or write attempted outside the coordinator."""


def _caller():
    """Description of the first frame outside the database plumbing: module.function (file:line)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "?")
        if module not in _PLUMBING_MODULES and module.partition(".")[0] not in _PLUMBING_MODULES:
            code = frame.f_code
            return f"{module}.{code.co_name} ({code.co_filename}:{frame.f_lineno})"
        frame = frame.f_back
    return "unknown caller"


def refusal_message(kind, what):
    """The text of a refusal of `what` (a CONTROL or WRITE statement), naming the caller."""
    if kind is CONTROL:
        return (f"{what} refused: only the transaction coordinator may control transactions; "
                f"called from {_caller()}")
    return (f"{what} refused: no coordinator transaction is open "
            f"(use TransactionCoordinator.transaction()); called from {_caller()}")


def classify(action, arg1, arg2):
    """What an authorizer action is to the guard: CONTROL, WRITE, or None (a read)."""
    if action in _CONTROL_ACTIONS:
        return CONTROL
    if (action in _WRITE_ACTIONS or action in _ATTACH_ACTIONS
            or action == sqlite3.SQLITE_PRAGMA and arg2 is not None and arg1.lower() in _PRAGMA_WRITES):
        return WRITE
    return None


class GuardedConnection(sqlite3.Connection):
    """A sqlite3 connection whose authorizer enforces the commit guard (see the module text).

    `unit` is the coordinator transaction open on this connection (None when none is);
    `issuing` is True only while the coordinator sends transaction control.
    """

    # Slots: every statement reads these, and on a subclass of a C type an attribute in the
    # instance's __dict__ takes Python's slow generic lookup (__dict__ is kept for anything else).
    __slots__ = ("unit", "issuing", "refusals", "_kinds", "_sql", "_refused", "_commit_sql", "__dict__",
                 "__weakref__")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unit = None
        self.issuing = False
        self.refusals = []
        self._kinds = {}
        self._sql = None
        self._refused = None
        self._commit_sql = f"COMMIT /* hoc-drivers coordinator {os.urandom(8).hex()} */"

    def guard(self):
        """Install the authorizer (after the connection's own set-up PRAGMAs); every statement
        prepared before is expired, so it meets the authorizer when it runs again."""
        self.set_authorizer(self._authorize)
        return self

    def _authorize(self, action, arg1, arg2, dbname, source):
        kind = classify(action, arg1, arg2)
        if kind is None:
            return sqlite3.SQLITE_OK
        allowed = self.issuing if kind is CONTROL else self.unit is not None
        if self._sql is not None:
            self._kinds[self._sql] = kind
        elif not self.issuing:
            allowed = False  # prepared by a bare sqlite3.Cursor: it could not be remembered
        if allowed:
            return sqlite3.SQLITE_OK
        self._refused = kind
        return sqlite3.SQLITE_DENY

    def _check(self, sql):
        """Refuse a statement SQLite already classified (it may be cached) in the wrong state,
        and any statement in a coordinator transaction SQLite has already rolled back."""
        kind = self._kinds.get(sql)
        if kind is CONTROL and not self.issuing or kind is WRITE and self.unit is None:
            self._refuse(kind, describe(kind, sql))
        if self.unit is not None and not self.in_transaction and not self.issuing:
            self._refuse(WRITE, f"{describe(WRITE, sql)} after SQLite rolled the transaction back "
                                "(ON CONFLICT ROLLBACK, RAISE(ROLLBACK), a full disk, ...); it")
        if len(self._kinds) > _MAX_REMEMBERED:
            self._kinds.clear()
            self.set_authorizer(self._authorize)  # expires every cached statement

    def _refuse(self, kind, what):
        message = refusal_message(kind, what)
        self.refusals.append(message)
        raise CommitForbidden(message)

    def _translate(self, sql):
        """After a failed statement: raise CommitForbidden if the authorizer refused it."""
        kind, self._refused = self._refused, None
        if kind is not None:
            self._refuse(kind, describe(kind, sql))

    def cursor(self, factory=None):
        """A cursor that keeps the guard (a `GuardedCursor` unless another factory is given)."""
        return super().cursor(factory or GuardedCursor)

    def execute(self, sql, parameters=(), /):
        """Run one statement through a guarded cursor."""
        return self.cursor().execute(sql, parameters)

    def execute_built(self, sql, parameters):
        """Run a statement Peewee built (the hot path of `PreparedQuery`) on a `GuardedCursor`.

        Inside an open coordinator transaction that SQLite has not rolled back, a write is
        allowed and transaction control is not issued, so the only check left is that `sql` was
        never classified as control: the statement goes straight to SQLite (the authorizer still
        sees it whenever SQLite prepares it). Anywhere else it takes the full check."""
        if (self.unit is None or self.issuing or not self.in_transaction
                or self._kinds.get(sql) is CONTROL):
            return self.cursor().execute(sql, parameters)
        self._sql, self._refused = sql, None  # as `_run` does, in this frame: the path every hot statement takes
        try:
            return _execute(_cursor(self, GuardedCursor), sql, parameters)
        except sqlite3.DatabaseError:
            self._translate(sql)
            raise
        finally:
            self._sql = None

    def issue(self, statement):
        """Send transaction control (BEGIN, SAVEPOINT, ...): only while the coordinator issues it.

        The text is remembered as control (what SQLite classifies BEGIN, SAVEPOINT, RELEASE, ...
        as) before it is sent, so a replay of it from the statement cache is refused (`_check`),
        even after the remembered texts were emptied."""
        if not self.issuing:
            self._refuse(CONTROL, describe(CONTROL, statement))
        self._kinds[statement] = CONTROL
        _send_control(self, statement)

    def _run(self, run, target, sql, parameters):
        """`run(target, sql, parameters)` (target: a `GuardedCursor`) with `sql` known to the
        authorizer (so it remembers how SQLite classified the text), turning the authorizer's
        refusal into CommitForbidden (only a refusal of this statement: one a bare cursor got is
        forgotten)."""
        self._sql, self._refused = sql, None
        try:
            return run(target, sql, parameters)
        except sqlite3.DatabaseError:
            self._translate(sql)
            raise
        finally:
            self._sql = None

    def executemany(self, sql, parameters, /):
        """Run one statement for each parameter set through a guarded cursor."""
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script, /):
        """Run a script through a guarded cursor (each statement meets the authorizer)."""
        return self.cursor().executescript(script)

    def blobopen(self, *args, **kwargs):
        """Incremental blob I/O: writable blobs only inside a coordinator transaction."""
        if not kwargs.get("readonly", False) and self.unit is None:
            self._refuse(WRITE, "blobopen()")
        return super().blobopen(*args, **kwargs)

    def commit(self):
        """COMMIT: only while the coordinator issues it."""
        if not self.issuing:
            self._refuse(CONTROL, "commit()")
        if self.unit is not None and not self.in_transaction:
            raise sqlite3.OperationalError(
                "cannot commit: SQLite already rolled this transaction back (ON CONFLICT ROLLBACK, "
                "RAISE(ROLLBACK), a full disk, ...); nothing of it was committed")
        if self.in_transaction:  # as sqlite3's commit(): nothing to do outside a transaction
            self._kinds[self._commit_sql] = CONTROL  # remembered as `issue` remembers its text
            _send_control(self, self._commit_sql)

    def rollback(self):
        """ROLLBACK: only while the coordinator issues it."""
        if not self.issuing:
            self._refuse(CONTROL, "rollback()")
        super().rollback()


def describe(kind, sql):
    """How a refusal names statement `sql` of `kind` (its first 40 characters)."""
    text = " ".join(str(sql).split())
    return f"raw SQL {text[:40]!r}" if kind is CONTROL else f"write {text[:40]!r}"


class GuardedCursor(sqlite3.Cursor):
    """A cursor that refuses statements the commit guard refuses (see the module text)."""

    def execute(self, sql, parameters=(), /):
        """Run one statement unless the guard refuses it."""
        return self._guarded(_execute, sql, parameters)

    def executemany(self, sql, parameters, /):
        """Run one statement per parameter set unless the guard refuses it."""
        return self._guarded(sqlite3.Cursor.executemany, sql, parameters)

    def _guarded(self, run, sql, parameters):
        conn = self.connection
        conn._check(sql)
        return conn._run(run, self, sql, parameters)

    def executescript(self, script, /):
        """Run a script; SQLite prepares each statement afresh, so the authorizer sees each."""
        return self._guarded(lambda cursor, script, _: sqlite3.Cursor.executescript(cursor, script),
                             script, None)


_execute = sqlite3.Cursor.execute
# Transaction control goes out as sqlite3's own Connection.execute (a plain cursor of its own,
# never handed out): `_send_control(conn, sql, parameters)`.
_send_control = sqlite3.Connection.execute
# Cursors are made with the connection's own `cursor` (never by calling the class): the
# connection keeps a weak reference to every cursor made and drops the dead ones only there.
_cursor = sqlite3.Connection.cursor


class CoordinatedDatabase:
    """The commit guard's database side, shared by both backends (`GuardedSqliteDatabase`
    here, `pg_guard.GuardedPostgresqlDatabase`): Peewee's own transaction methods refuse, the
    coordinator transaction open on this thread's connection is `current_unit()`, and every
    refusal is also kept in `refusals` (newest last), so a test can assert that no code tried to
    commit behind the coordinator's back even if that code swallowed the error. Each backend's
    connection enforces the rest (the statement-level refusals) and offers the coordinator
    `issue(statement)`, `commit()`, `rollback()` and `execute_built(sql, params)`."""

    dialect = None  # "sqlite" or "postgresql": see `hoc_drivers.dialect`

    def _refuse(self, what):
        message = refusal_message(CONTROL, what)
        self.refusals.append(message)
        raise CommitForbidden(message)

    def get_context_options(self):
        """Peewee's SQL context options plus `dialect` (what `dialect.by_dialect` nodes read)."""
        return {**super().get_context_options(), "dialect": self.dialect}

    def atomic(self, *args, **kwargs):
        """Refused: transactions are the coordinator's (`coordinator.transaction()`)."""
        self._refuse("atomic()")

    def transaction(self, *args, **kwargs):
        """Refused: transactions are the coordinator's (`coordinator.transaction()`)."""
        self._refuse("transaction()")

    def savepoint(self, *args, **kwargs):
        """Refused: savepoints come from the coordinator transaction (`tx.savepoint()`)."""
        self._refuse("savepoint()")

    def manual_commit(self):
        """Refused: manual commit mode bypasses the coordinator."""
        self._refuse("manual_commit()")

    def begin(self, *args, **kwargs):
        """Refused: BEGIN is the coordinator's."""
        self._refuse("begin()")

    def commit(self):
        """Refused: COMMIT is the coordinator's."""
        self._refuse("commit()")

    def rollback(self):
        """Refused: ROLLBACK is the coordinator's."""
        self._refuse("rollback()")

    def in_transaction(self):
        """True while a coordinator transaction is open in this thread."""
        return self.current_unit() is not None

    def current_unit(self):
        """The coordinator transaction open on this thread's connection, or None."""
        conn = self._state.conn
        return None if conn is None else conn.unit


class GuardedSqliteDatabase(CoordinatedDatabase, SqliteDatabase):
    """A SqliteDatabase whose transactions belong to the transaction coordinator; SQLite's
    authorizer (`GuardedConnection`) refuses statements behind its back."""

    dialect = "sqlite"

    def __init__(self, database, *args, **kwargs):
        kwargs["factory"] = GuardedConnection
        super().__init__(database, *args, **kwargs)
        self.refusals = []
        self.key = _database_key(database, self)

    def _connect(self):
        conn = super()._connect().guard()
        conn.refusals = self.refusals
        return conn


# ---------------------------------------------------------------------------------------
# Per-database registries (guard caches, subscribers)

_registries = []
_memory_database_numbers = itertools.count(1)


def _database_key(name, db):
    name = str(name)
    if name == ":memory:" or name.startswith("file::memory:") or "mode=memory" in name:
        key = ("memory", next(_memory_database_numbers))
        weakref.finalize(db, forget_database, key)
        return key
    return os.path.realpath(name)


def database_key(db):
    """Which database `db` is, for per-database registries: the real path of its file (every
    connection to one file shares it), or ("memory", n) for an in-memory database, with an n
    never reused in this process."""
    return db.key


def per_database_registry():
    """A new dict to key by `database_key`; an in-memory database's entry is removed when that
    database object is collected."""
    registry = {}
    _registries.append(registry)
    return registry


def forget_database(key):
    """Remove database `key`'s entries from every per-database registry (an in-memory
    database's when it is collected; a test database's when the test fixtures empty it)."""
    # Plain dict pops, no lock: safe in whichever thread collects the database object.
    for registry in _registries:
        registry.pop(key, None)
