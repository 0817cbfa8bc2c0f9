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

Facts across processes: the first `bus.subscribe` of a process on a database calls
`listen_for_facts()`, which starts that process's one `FactListener` there: its own autocommit
connection (not a guarded one; it only LISTENs) and a daemon thread that hands each fact another
process committed (`facts.from_payload`) to this process's subscribers. When that connection is
lost it connects again (retrying with backoff) and then hands them `FactsMissed()`: whatever
was committed while it was deaf is unknown.

Known limits (in-process code set on bypassing): `SELECT set_config(...)` changes a setting
through a function call, and a raw `psycopg.Cursor` built by hand is not guarded.
"""
import logging
import os
import re
import threading
import time

import psycopg
from peewee import PostgresqlDatabase
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from .commit_guard import CONTROL, WRITE, CoordinatedDatabase, describe, refusal_message
from .commit_guard import CommitForbidden  # noqa: F401  (the error this guard raises)
from .bus import deliver
from .dialect import FACTS_CHANNEL
from .facts import FactsMissed, from_payload, origin

log = logging.getLogger(__name__)

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

    def listen_for_facts(self):
        """Start this process's `FactListener` of this database unless it runs (`bus.subscribe`
        calls this); when it can connect, it listens before this returns."""
        key = (os.getpid(), self.key)  # a forked child starts its own (the parent's stays put)
        with _listeners_lock:
            if key not in _listeners:
                _listeners[key] = FactListener(self.key, self.database, self.connect_params)


_listeners = {}  # (pid, database key) -> FactListener, for the life of the process
_listeners_lock = threading.Lock()
_RETRY_SECONDS = (0.05, 5.0)  # first and longest wait between two attempts to connect again
# A listener only reads: TCP keepalives (seconds) tell it its server or host is gone.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def fact_listener(db):
    """This process's `FactListener` of PostgreSQL database `db`, or None before any subscriber."""
    return _listeners.get((os.getpid(), db.key))


class FactListener:
    """One process's listener for the facts other processes commit to one database.

    `connection` is its psycopg connection (None while it has none) and `reconnects` counts the
    times it connected again (after losing its connection, or failing to make the first)."""

    def __init__(self, key, url, connect_params):
        self.key = key
        self._connect_args = (url, connect_params)
        self.reconnects = 0
        try:
            self.connection = self._connect()
        except psycopg.Error:
            log.warning("cannot listen for facts on %s yet; retrying", url, exc_info=True)
            self.connection = None
        threading.Thread(target=self._run, name="hoc-drivers fact listener", daemon=True).start()

    def _connect(self):
        url, params = self._connect_args
        conn = psycopg.connect(url, autocommit=True, options=SESSION_OPTIONS,
                               application_name="hoc-drivers fact listener",
                               **{**_KEEPALIVES, **params})
        conn.execute(f"LISTEN {FACTS_CHANNEL}")
        return conn

    def _run(self):
        while True:
            if self.connection is None:
                self.connection = self._connect_again()
                self.reconnects += 1
                deliver(self.key, FactsMissed())
            try:
                for notification in self.connection.notifies():
                    self._hand_on(notification.payload)
            except Exception as error:  # the connection lost, or a bug: listen afresh either way
                log.warning("fact listener lost its connection (%s); connecting again", error)
            self.connection.close()
            self.connection = None

    def _hand_on(self, payload):
        """Deliver the fact of one notification, unless this process sent it."""
        try:
            sender, fact = from_payload(payload)
        except ValueError:
            log.warning("ignoring a notification on %s that is no fact: %r", FACTS_CHANNEL, payload)
            return
        if sender != origin():
            deliver(self.key, fact)

    def _connect_again(self):
        """A new listening connection, retrying with growing waits until one succeeds."""
        wait, longest = _RETRY_SECONDS
        while True:
            try:
                return self._connect()
            except psycopg.Error:
                log.debug("fact listener: cannot connect yet", exc_info=True)
                time.sleep(wait)
                wait = min(wait * 2, longest)
