"""Transaction Coordinator for Cross-Domain Writes: the only code that commits.

`TransactionCoordinator(db).transaction()` is the unit of work: BEGIN IMMEDIATE on entry,
COMMIT on normal exit, ROLLBACK on an exception. Nested use joins the outer transaction
through a savepoint. During the work, writers record on the transaction `tx` what they
changed: events (`tx.publish`, written to the `events` outbox before COMMIT), facts
(`tx.note`, see `hoc_drivers.facts`) and `tx.on_commit` callbacks. After COMMIT succeeds, and
never after a rollback, the facts go to the database's subscribers (`bus.subscribe`; on
PostgreSQL also to other processes' through a notification sent before COMMIT), the events to
the publisher, then the callbacks run; a failing one is logged and recorded, never
hiding the others. Events are delivered at least once: published ones are marked at the next
transaction, by `mark_published()` and at a normal exit; after a crash `flush_outbox()` publishes
the unmarked again, with the same event id for subscribers to deduplicate on. Run completion
lives in `run_completion` (its seed names import from here).
"""
import atexit
import logging
import threading
import weakref
from contextlib import nullcontext
from functools import lru_cache

from .bus import EventPublisher, dispatch
from .commit_guard import CommitForbidden
from .dialect import begin_statement, failed_statement_aborts_transaction, notify_facts_sql
from .facts import to_payloads
from .models.base import (PLACEHOLDER, PreparedQuery, json_text, new_ordered_id, timestamp_text,
                          utcnow)
from .models.runs import Event
from .run_completion import (DomainResult, RunCompletionTransaction, TransactionFailed,  # noqa: F401
                             TransactionPhase, TransactionResult)
from .validation import optional_text, require_database, require_text

ACCESS = "READ+WRITE"

log = logging.getLogger(__name__)


class Transaction:
    """The open unit of work handed to writers: its database, its one timestamp `now` (taken
    when it began; writers stamp their rows with it, `now_text` as stored), whether a failing
    statement aborts it (`statements_abort`: PostgreSQL's rule) and what it changed (`events`:
    (event id, tenant id, topic, payload) each, in publishing order)."""

    __slots__ = ("db", "now", "_now_text", "is_open", "callbacks", "events", "facts", "published_topics",
                 "callback_errors", "savepoints", "statements_abort")

    def __init__(self, db, statements_abort):
        self.db = db
        self.now = utcnow()
        self._now_text = None
        self.is_open = True
        self.callbacks = []
        self.events = []
        self.facts = []
        self.published_topics = []
        self.callback_errors = []
        self.savepoints = 0
        self.statements_abort = statements_abort  # a failing statement aborts the whole transaction

    @property
    def now_text(self):
        """`now` as stored (made on first use: some transactions store no timestamp), by
        `timestamp_text`, which remembers the last time it converted: a writer storing `now`
        through a field (`UtcDateTimeField.db_value`) before any other time is converted gets
        this text back without converting it again."""
        if self._now_text is None:
            self._now_text = timestamp_text(self.now)
        return self._now_text

    def require_open(self):
        """Raise CommitForbidden unless this transaction is still open."""
        if not self.is_open:
            raise CommitForbidden("write refused: this coordinator transaction has already "
                                  "ended; open a new one with coordinator.transaction()")

    def on_commit(self, callback):
        """Run `callback()` after COMMIT succeeds; dropped if the transaction rolls back."""
        self.callbacks.append(callback)
        return callback

    def failed(self, work, error):
        """Log and keep `error`, raised by `work` after COMMIT (`callback_errors`)."""
        log.error("post-commit work failed: %r", work, exc_info=error)
        self.callback_errors.append(error)

    def note(self, fact):
        """Record a fact about what this transaction changed (see `hoc_drivers.facts`); the
        database's subscribers get it after COMMIT, once however often it was noted."""
        self.facts.append(fact)

    def publish(self, topic, payload, tenant_id=None):
        """Add an event to the outbox (written before COMMIT, published after). Returns its id,
        which sorts by time (`new_ordered_id`: the outbox's index grows at its end). `topic` is
        non-empty text, `tenant_id` text or None (ValueError naming the argument otherwise)."""
        require_text(topic, "topic")
        optional_text(tenant_id, "tenant_id")
        return self.publish_validated(topic, payload, tenant_id)

    def publish_validated(self, topic, payload, tenant_id=None):
        """`publish` for a writer whose topic and tenant are already checked (its own constant
        topic, a tenant it validated), so they are not looked at again."""
        event_id = new_ordered_id()
        self.events.append((event_id, tenant_id, topic, payload))
        return event_id

    def savepoint(self):
        """A savepoint in this transaction: a failing block undoes only its own writes."""
        return _Savepoint(self)

    def statement_savepoint(self):
        """Around a statement whose failure the caller handles and goes on: a savepoint where a
        failing statement would abort the whole transaction (PostgreSQL); nothing on SQLite,
        which undoes a failing statement by itself."""
        return self.savepoint() if self.statements_abort else _NO_SAVEPOINT

    def write_outbox(self):
        """Write this transaction's events to the `events` table in one statement (up to
        EVENTS_PER_INSERT a statement; their text was checked by `publish`)."""
        now = self.now_text
        params = [value for event_id, tenant_id, topic, payload in self.events  # every payload encoded first
                  for value in (event_id, tenant_id, topic, json_text(payload), now)]
        for start in range(0, len(params), _VALUES_PER_INSERT):
            chunk = params[start:start + _VALUES_PER_INSERT]
            _insert_events(len(chunk) // len(_EVENT_COLUMNS)).execute_validated(self.db, chunk)


# Statements stay within 999 bound values, the lowest limit SQLite builds have had
# (SQLITE_MAX_VARIABLE_NUMBER), however many events one transaction publishes or marks.
EVENTS_PER_INSERT = 999 // 5
IDS_PER_MARK = 999 - 1


_NO_SAVEPOINT = nullcontext()


_EVENT_COLUMNS = (Event.id, Event.tenant_id, Event.topic, Event.payload, Event.created_at)
_VALUES_PER_INSERT = EVENTS_PER_INSERT * len(_EVENT_COLUMNS)


@lru_cache(maxsize=64)
def _insert_events(count):
    """INSERT of `count` outbox events, built once per count; its parameters are the events'
    values one after another (id, tenant_id, topic, payload as JSON text, created_at as stored)."""
    return PreparedQuery(lambda: Event.insert_many([(PLACEHOLDER,) * len(_EVENT_COLUMNS)] * count,
                                                   fields=_EVENT_COLUMNS))



@lru_cache(maxsize=64)
def _mark_events_published(count):
    """UPDATE setting published_at on `count` events, built once per count."""
    return PreparedQuery(lambda: Event.update({Event.published_at: PLACEHOLDER})
                         .where(Event.id.in_([PLACEHOLDER] * count)))


def _connection(db):
    """This thread's open connection of `db`, else a new one."""
    return db._state.conn or db.connection()


def _send(conn, statement):
    """Send transaction control other than the end (BEGIN, SAVEPOINT, RELEASE, ROLLBACK TO) on
    connection `conn`; with `_TransactionScope._end`, the only code that sends transaction
    control."""
    conn.issuing = True
    try:
        conn.issue(statement)
    finally:
        conn.issuing = False


class _Savepoint:
    """Context manager: SAVEPOINT on entry, RELEASE on success, ROLLBACK TO on an exception."""

    def __init__(self, tx):
        self.tx = tx

    def __enter__(self):
        tx = self.tx
        tx.require_open()
        self._marks = (len(tx.callbacks), len(tx.events), len(tx.facts))
        tx.savepoints += 1
        self._name = f'"hoc_savepoint_{tx.savepoints}"'  # by depth: a handful of cached texts
        try:
            _send(_connection(tx.db), f"SAVEPOINT {self._name}")
        except BaseException:
            tx.savepoints -= 1
            raise
        return tx

    def __exit__(self, exc_type, exc, tb):
        tx = self.tx
        try:
            if exc_type is not None:
                _send(_connection(tx.db), f"ROLLBACK TO {self._name}")
            _send(_connection(tx.db), f"RELEASE {self._name}")
        finally:
            tx.savepoints -= 1
            if exc_type is not None:
                del tx.callbacks[self._marks[0]:]
                del tx.events[self._marks[1]:]
                del tx.facts[self._marks[2]:]
        return False


class _TransactionScope:
    """One `with coordinator.transaction()` block: outermost opens the transaction, inner joins."""

    __slots__ = ("coordinator", "_conn", "_tx", "_inner")

    def __init__(self, coordinator):
        self.coordinator = coordinator

    def __enter__(self):
        coordinator = self.coordinator
        db = coordinator.db
        conn = self._conn = db._state.conn or db.connection()  # the transaction's, from BEGIN to its end
        tx = conn.unit
        if tx is not None:
            self._inner = _Savepoint(tx)
            return self._inner.__enter__()
        self._inner = None
        tx = self._tx = Transaction(db, coordinator._statements_abort)
        _send(conn, coordinator._begin)
        conn.unit = tx
        try:
            if coordinator._published_unmarked:  # read without the lock: only a hint
                coordinator._mark_published(tx)
        except BaseException:
            self._end(False)
            raise
        return tx

    def _end(self, commit):
        """End the transaction: COMMIT when `commit`, else ROLLBACK, with the connection's own
        methods (`GuardedConnection.commit`); it is closed whatever the outcome."""
        self._tx.is_open = False
        conn = self._conn
        conn.issuing = True
        try:
            if commit:
                conn.commit()
            else:
                conn.rollback()
        finally:
            conn.issuing = False
            conn.unit = None

    def _roll_back_after(self, error):
        """ROLLBACK because of `error`, which stays the error the caller sees: a failure of the
        ROLLBACK itself (SQLite may already have rolled back, e.g. on a full disk) is logged."""
        try:
            self._end(False)
        except Exception:
            log.exception("ROLLBACK after %r failed", error)

    def __exit__(self, exc_type, exc, tb):
        if self._inner is not None:
            return self._inner.__exit__(exc_type, exc, tb)
        if exc_type is not None:
            self._roll_back_after(exc)
            return False
        tx = self._tx
        try:
            if tx.events:
                tx.write_outbox()
            if tx.facts and self.coordinator._notify_facts is not None:  # PostgreSQL only
                tx.db.execute_sql(self.coordinator._notify_facts, (to_payloads(tx.facts),))
            self._end(True)
        except BaseException as error:
            self._roll_back_after(error)
            raise
        if tx.facts or tx.events or tx.callbacks:
            self.coordinator._after_commit(tx)
        return False


class TransactionCoordinator:
    """The sole commit authority over one database."""

    def __init__(self, db, publisher=None):
        self.db = require_database(db)
        self.publisher = publisher or EventPublisher()
        self._published_lock = threading.Lock()
        self._published_unmarked = []
        self._marked_at_exit = False  # in _unmarked_at_exit (which keeps it while it lives)
        self._notify_facts = notify_facts_sql(self.db)  # facts to other processes, or None
        self._statements_abort = failed_statement_aborts_transaction(self.db)
        self._begin = begin_statement(self.db)  # what opens its transactions

    def transaction(self):
        """Open (or join) the unit of work: `with coordinator.transaction() as tx: ...`."""
        return _TransactionScope(self)

    def current(self):
        """The transaction open on this database in this thread, or None."""
        return self.db.current_unit()

    def _after_commit(self, tx):
        """Hand the facts to the database's subscribers, publish the events, run the callbacks.

        A failure is logged and kept in `tx.callback_errors`; it never stops the others."""
        for fact in dict.fromkeys(tx.facts) if len(tx.facts) > 1 else tx.facts:
            dispatch(self.db.key, fact, tx.failed)
        if tx.events:
            self._publish(tx)
        for callback in tx.callbacks:
            try:
                callback()
            except Exception as error:
                tx.failed(callback, error)

    def _publish(self, tx):
        """Publish the events of committed `tx`, remembering the published ones to mark."""
        published, topics, publish = [], tx.published_topics, self.publisher.publish
        for event_id, _, topic, payload in tx.events:
            try:
                publish(topic, payload, event_id)
            except Exception as error:
                tx.failed(publish, error)
                continue
            topics.append(topic)
            published.append(event_id)
        if published:
            with self._published_lock:
                self._published_unmarked += published
            if not self._marked_at_exit:
                _unmarked_at_exit.add(self)
                self._marked_at_exit = True

    def _mark_published(self, tx):
        """Inside a new transaction, record the events published after earlier commits."""
        with self._published_lock:
            ids, self._published_unmarked = self._published_unmarked, []
        for start in range(0, len(ids), IDS_PER_MARK):
            chunk = ids[start:start + IDS_PER_MARK]
            _mark_events_published(len(chunk)).execute_validated(tx.db, [tx.now_text, *chunk])  # our own ids

    def mark_published(self):
        """Record now that the events this coordinator published are published (it is also
        done at the start of its next transaction, and for every coordinator when the process
        exits normally)."""
        if self._published_unmarked:
            with self.transaction() as tx:
                self._mark_published(tx)

    def flush_outbox(self):
        """Mark published events and publish every event left unpublished (e.g. by a crash)."""
        with self.transaction():
            pending = list(Event.select().where(Event.published_at.is_null())
                           .order_by(Event.created_at).execute(self.db))
        unmarked = set(self._published_unmarked)
        for event in pending:
            if event.id not in unmarked:
                self.publisher.publish(event.topic, event.payload, event.id)
                with self._published_lock:
                    self._published_unmarked.append(event.id)
        self.mark_published()
        return len(pending)


_unmarked_at_exit = weakref.WeakSet()  # coordinators that published events not yet marked


@atexit.register
def _mark_published_at_exit():
    """A clean exit leaves no published event unmarked (flush_outbox would publish it again)."""
    for coordinator in list(_unmarked_at_exit):
        try:
            coordinator.mark_published()
        except Exception:
            log.warning("could not mark the published events of %s", coordinator.db.database,
                        exc_info=True)


def get_transaction_coordinator(db, publisher=None):
    """A coordinator of database `db` (the seed's name; opens nothing, creates no file)."""
    return TransactionCoordinator(db, publisher)


create_transaction_coordinator = get_transaction_coordinator  # the seed's other name for it
