"""The commit guard on PostgreSQL: the same commit authority as `commit_guard`, without an
authorizer.

A `GuardedPostgresqlDatabase` (Peewee's `PostgresqlDatabase` over psycopg 3) connects in
autocommit mode with `default_transaction_read_only = on`, so the server itself refuses every
write (INSERT, UPDATE, DELETE, DDL, TRUNCATE, nextval, ..., however it is spelled or wrapped)
unless it runs in the transaction the coordinator opened with `BEGIN READ WRITE`; the refusal
(SQLSTATE 25006) becomes `CommitForbidden`, as on SQLite. Transaction control and session
settings (BEGIN, START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, PREPARE, SET, RESET,
DISCARD) are classified by their first word (after comments and parentheses) and refused unless
the coordinator is issuing them. Every statement goes by the extended query protocol, which
takes one statement per call, so nothing can ride behind a harmless first statement.

Known limits (in-process code set on bypassing): `SELECT set_config(...)` changes a setting
through a function call, and a raw `psycopg.Cursor` built by hand is not guarded.
"""
import re

import psycopg
from peewee import PostgresqlDatabase
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from .commit_guard import CONTROL, WRITE, CoordinatedDatabase, describe, refusal_message
from .commit_guard import CommitForbidden  # noqa: F401  (the error this guard raises)

_CONTROL_WORDS = frozenset({"abort", "begin", "commit", "discard", "end", "prepare", "release",
                            "reset", "rollback", "savepoint", "set", "start"})
_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*([A-Za-z_]+)", re.S)
SESSION_OPTIONS = "-c default_transaction_read_only=on -c timezone=UTC"


def is_control(sql):
    """True when statement text `sql` controls transactions or session settings."""
    text = sql if isinstance(sql, str) else bytes(sql).decode()
    match = _FIRST_WORD.match(text)
    return match is not None and match.group(1).lower() in _CONTROL_WORDS


class GuardedPgCursor(psycopg.Cursor):
    """A cursor that refuses what the commit guard refuses (see the module text)."""

    def execute(self, query, params=None, **kwargs):
        """Run one statement unless the guard refuses it."""
        return self._guarded(super().execute, query, params, **kwargs)

    def executemany(self, query, params_seq, **kwargs):
        """Run one statement per parameter set unless the guard refuses it."""
        return self._guarded(super().executemany, query, params_seq, **kwargs)

    def _guarded(self, run, query, params, **kwargs):
        conn = self.connection
        if not conn.issuing and is_control(query):
            conn.refuse(CONTROL, describe(CONTROL, query))
        try:
            return run(query, params, **kwargs)
        except pg_errors.ReadOnlySqlTransaction:
            conn.refuse(WRITE, describe(WRITE, query))

    def _execute_send(self, query, *, force_extended=False, binary=None):
        super()._execute_send(query, force_extended=True, binary=binary)  # one statement per call


class GuardedPgConnection(psycopg.Connection):
    """A psycopg connection of the commit guard: `unit` is the coordinator transaction open on
    it (None when none is), `issuing` is True only while the coordinator sends control."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.unit = None
        self.issuing = False
        self.refusals = []

    def refuse(self, kind, what):
        """Raise (and record) CommitForbidden for `what`, a statement of `kind`."""
        message = refusal_message(kind, what)
        self.refusals.append(message)
        raise CommitForbidden(message) from None

    def issue(self, statement):
        """Send transaction control (BEGIN, SAVEPOINT, ...): only while the coordinator issues it."""
        if not self.issuing:
            self.refuse(CONTROL, describe(CONTROL, statement))
        return self.cursor().execute(statement)

    def execute_built(self, sql, params):
        """Run a statement Peewee built (the hot path of `PreparedQuery`) through the guard."""
        return self.cursor().execute(sql, params)

    def commit(self):
        """COMMIT: only while the coordinator issues it; a transaction PostgreSQL aborted after
        a failed statement is not reported as committed."""
        if not self.issuing:
            self.refuse(CONTROL, "commit()")
        if self.unit is not None and self.info.transaction_status == TransactionStatus.INERROR:
            raise psycopg.OperationalError(
                "cannot commit: PostgreSQL aborted this transaction after a failed statement; "
                "nothing of it was committed")
        super().commit()

    def rollback(self):
        """ROLLBACK: only while the coordinator issues it."""
        if not self.issuing:
            self.refuse(CONTROL, "rollback()")
        super().rollback()


class GuardedPostgresqlDatabase(CoordinatedDatabase, PostgresqlDatabase):
    """A PostgresqlDatabase whose transactions belong to the transaction coordinator."""

    dialect = "postgresql"

    def __init__(self, url, **kwargs):
        super().__init__(url, prefer_psycopg3=True, **kwargs)
        self.refusals = []
        self.key = ("postgresql", url)

    def _connect(self):
        conn = GuardedPgConnection.connect(self.database, autocommit=True, options=SESSION_OPTIONS,
                                           cursor_factory=GuardedPgCursor, **self.connect_params)
        conn.refusals = self.refusals
        return conn
