"""The coordinator's promises at their edges: what an outbox row holds, which id subscribers
get, facts once each, savepoints that undo only their own work, failures that stay the
caller's error and are logged by name, and events marked published exactly once."""
import gc
import logging
import sqlite3
from collections import deque
from dataclasses import dataclass

import peewee
import pytest

from hoc_drivers import bus
from hoc_drivers.db import init_database
from hoc_drivers.models.runs import Event
from hoc_drivers.transaction_coordinator import IDS_PER_MARK, TransactionCoordinator


def events(db):
    return list(Event.select().order_by(Event.created_at, Event.id).execute(db))


def test_an_outbox_row_holds_the_tenant_the_payload_and_the_transactions_time(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        event_id = tx.publish("run.completed", {"run": "r1"}, tenant_id="acme")
        now = tx.now
    (row,) = events(hoc_coordinator.db)
    assert (row.id, row.tenant_id, row.topic, row.payload) == (event_id, "acme", "run.completed", {"run": "r1"})
    assert row.created_at == now


def test_subscribers_get_the_outbox_rows_id_after_commit_and_from_a_flush(hoc_db, hoc_publisher):
    seen = []
    hoc_publisher.subscribe("*", lambda topic, payload, event_id: seen.append(event_id), with_event_id=True)
    coordinator = TransactionCoordinator(hoc_db, hoc_publisher)
    with coordinator.transaction() as tx:
        first = tx.publish("a", {})
    assert seen == [first]
    with coordinator.transaction():  # an event left unpublished, as after a crash
        hoc_db.execute_sql("INSERT INTO events (id, topic, payload, created_at) VALUES "
                           "('left-over', 'b', '{}', '2026-01-01T00:00:00.000000+00:00')")
    assert coordinator.flush_outbox() == 1
    assert seen == [first, "left-over"]


@dataclass(frozen=True)
class Changed:
    name: str


def test_each_distinct_fact_reaches_subscribers_once_however_often_it_was_noted(hoc_coordinator):
    got = []

    def handler(fact):
        got.append(fact)

    unsubscribe = bus.subscribe(hoc_coordinator.db, Changed, handler)
    try:
        with hoc_coordinator.transaction() as tx:
            tx.note(Changed("a"))
            tx.note(Changed("b"))
            tx.note(Changed("a"))
        with hoc_coordinator.transaction() as tx:
            tx.note(Changed("c"))
            tx.note(Changed("c"))
    finally:
        unsubscribe()
    assert got == [Changed("a"), Changed("b"), Changed("c")]


def test_a_subscriber_may_be_a_builtin_method_and_a_collected_owner_gets_nothing(hoc_coordinator):
    seen = []

    class Owner:
        def handle(self, fact):
            seen.append(("owner", fact))

    owner = Owner()
    db = hoc_coordinator.db
    ends = [bus.subscribe(db, Changed, seen.append), bus.subscribe(db, Changed, owner.handle)]
    try:
        assert len(bus.handlers_of(db, Changed)) == 2
        with hoc_coordinator.transaction() as tx:
            tx.note(Changed("a"))
        del owner, Owner
        gc.collect()  # the owner held only weakly: gone
        assert bus.handlers_of(db, Changed) == [seen.append]
        with hoc_coordinator.transaction() as tx:
            tx.note(Changed("b"))
    finally:
        for end in ends:
            end()
    assert seen == [Changed("a"), ("owner", Changed("a")), Changed("b")]
    assert bus.handlers_of(db, Changed) == []


def test_a_failing_savepoint_drops_only_the_callbacks_events_and_facts_it_added(hoc_coordinator):
    ran = []
    with hoc_coordinator.transaction() as tx:
        tx.on_commit(lambda: ran.append("outer 1"))
        tx.on_commit(lambda: ran.append("outer 2"))
        kept = tx.publish("kept", {})
        with pytest.raises(ValueError):
            with tx.savepoint():
                tx.on_commit(lambda: ran.append("inner"))
                tx.publish("dropped", {})
                raise ValueError("undo the inner block")
        assert [event_id for event_id, *_ in tx.events] == [kept]
    assert ran == ["outer 1", "outer 2"]
    assert [e.topic for e in events(hoc_coordinator.db)] == ["kept"]


def test_a_transaction_opens_on_a_database_whose_connection_was_closed(tmp_path):
    db = init_database(str(tmp_path / "closed.db"))
    db.close()
    coordinator = TransactionCoordinator(db)
    assert coordinator.current() is None
    with coordinator.transaction() as tx:
        tx.publish("a", {})
    assert len(events(db)) == 1


@pytest.mark.sqlite_only
def test_the_callers_error_survives_a_rollback_sqlite_already_did_and_nothing_is_logged(
        hoc_coordinator, caplog):
    sql = ("INSERT OR ROLLBACK INTO events (id, topic, payload, created_at) "
           "VALUES ('e1', 't', '{}', '2026-01-01')")
    with caplog.at_level(logging.ERROR), pytest.raises(KeyError, match="the caller's own"):
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql(sql.replace("OR ROLLBACK ", ""))
            with pytest.raises(sqlite3.IntegrityError):
                tx.db.connection().execute(sql)  # SQLite ends the transaction itself
            raise KeyError("the caller's own")
    assert caplog.records == [] and events(hoc_coordinator.db) == []


@pytest.mark.sqlite_only
def test_a_rollback_that_fails_is_logged_with_the_error_that_caused_it(hoc_coordinator, caplog):
    error = KeyError("the caller's own")
    with caplog.at_level(logging.ERROR), pytest.raises(KeyError) as raised:
        with hoc_coordinator.transaction() as tx:
            tx.db.connection().close()  # the ROLLBACK cannot be sent
            raise error
    assert raised.value is error
    (record,) = caplog.records
    assert record.getMessage() == f"ROLLBACK after {error!r} failed" and record.exc_info is not None


def test_a_failing_callback_is_logged_by_name_and_the_next_one_still_runs(hoc_coordinator, caplog):
    ran = []

    def broken():
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR):
        with hoc_coordinator.transaction() as tx:
            tx.on_commit(broken)
            tx.on_commit(lambda: ran.append("next"))
    assert ran == ["next"] and [str(e) for e in tx.callback_errors] == ["callback bug"]
    (record,) = caplog.records
    assert record.getMessage() == f"post-commit work failed: {broken!r}"


def test_mark_published_records_every_published_event(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        for n in range(3):
            tx.publish("a", {"n": n})
    assert all(e.published_at is None for e in events(hoc_coordinator.db))
    hoc_coordinator.mark_published()
    assert all(e.published_at is not None for e in events(hoc_coordinator.db))


def test_more_events_than_one_statement_can_mark_are_all_marked(hoc_coordinator):
    count = 2 * IDS_PER_MARK + 5
    with hoc_coordinator.transaction() as tx:
        for n in range(count):
            tx.publish("bulk", {"n": n})
    hoc_coordinator.mark_published()
    unmarked = Event.select().where(Event.published_at.is_null()).count(hoc_coordinator.db)
    assert (len(events(hoc_coordinator.db)), unmarked) == (count, 0)


def test_an_event_published_by_a_subscriber_transaction_is_not_published_again(hoc_db, hoc_publisher):
    coordinator = TransactionCoordinator(hoc_db, hoc_publisher)
    ids = []

    def react(topic, payload, event_id):
        ids.append(event_id)
        if topic == "first":  # a subscriber that writes in a transaction of its own
            with coordinator.transaction() as tx:
                tx.publish("second", {})

    hoc_publisher.subscribe("*", react, with_event_id=True)
    with coordinator.transaction() as tx:
        tx.publish("first", {})
    assert coordinator.flush_outbox() == 0  # both were published and are recorded as such
    assert len(ids) == 2 and len(set(ids)) == 2
    assert Event.select().where(Event.published_at.is_null()).count(hoc_db) == 0


def test_savepoints_counts_the_nesting_depth_through_successes_and_failures(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        assert tx.savepoints == 0
        with tx.savepoint():
            with tx.savepoint():
                with tx.savepoint():
                    assert tx.savepoints == 3
                assert tx.savepoints == 2
                with pytest.raises(ValueError):
                    with tx.savepoint():
                        raise ValueError
                assert tx.savepoints == 2
            assert tx.savepoints == 1
        assert tx.savepoints == 0
        with hoc_coordinator.transaction() as joined:  # an inner block is a savepoint too
            assert joined is tx and tx.savepoints == 1
        assert tx.savepoints == 0


@pytest.mark.sqlite_only
def test_a_savepoint_that_cannot_be_opened_leaves_the_depth_as_it_was(hoc_coordinator):
    depths = []
    with pytest.raises(sqlite3.ProgrammingError):  # (the closed connection fails the rest too)
        with hoc_coordinator.transaction() as tx:
            with tx.savepoint():
                with tx.savepoint():
                    tx.db.connection().close()
                    with pytest.raises(sqlite3.ProgrammingError):
                        with tx.savepoint():
                            pass
                    depths.append(tx.savepoints)
    assert depths == [2]


@pytest.mark.sqlite_only
def test_a_commit_that_fails_is_logged_with_its_error_when_the_rollback_fails_too(hoc_coordinator, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(peewee.ProgrammingError) as raised:
        with hoc_coordinator.transaction() as tx:
            tx.publish("a", {})
            tx.db.connection().close()  # the outbox write fails, and so does the ROLLBACK
    (record,) = caplog.records
    assert record.getMessage() == f"ROLLBACK after {raised.value!r} failed"


def test_a_failing_fact_handler_is_logged_by_name_and_the_next_handler_still_runs(hoc_coordinator, caplog):
    got = []

    def broken(fact):
        raise RuntimeError("handler bug")

    ends = [bus.subscribe(hoc_coordinator.db, Changed, broken), bus.subscribe(hoc_coordinator.db, Changed, got.append)]
    try:
        with caplog.at_level(logging.ERROR):
            with hoc_coordinator.transaction() as tx:
                tx.note(Changed("a"))
    finally:
        for end in ends:
            end()
    assert got == [Changed("a")] and [str(e) for e in tx.callback_errors] == ["handler bug"]
    (record,) = caplog.records
    assert record.getMessage() == f"post-commit work failed: {broken!r}" and record.exc_info is not None


def test_a_failing_fact_handler_method_is_logged_as_the_method_of_its_owner(hoc_coordinator, caplog):
    class Owner:
        def handle(self, fact):
            raise RuntimeError(f"owner bug on {fact.name}")

    owner = Owner()
    end = bus.subscribe(hoc_coordinator.db, Changed, owner.handle)
    try:
        with caplog.at_level(logging.ERROR):
            with hoc_coordinator.transaction() as tx:
                tx.note(Changed("a"))
    finally:
        end()
    assert [str(e) for e in tx.callback_errors] == ["owner bug on a"]
    (record,) = caplog.records
    assert record.getMessage() == f"post-commit work failed: {owner.handle!r}"


@pytest.mark.parametrize("topic, tenant_id, message", [
    ("", None, "topic is required"), (None, None, "topic is required"),
    ("a\x00b", None, "topic must not contain a NUL"),
    ("t", "", "tenant_id must be a non-empty string or None"), ("t", "a\x00", "tenant_id must not contain a NUL")])
def test_an_event_with_a_bad_topic_or_tenant_is_refused_when_published(hoc_coordinator, hoc_db, topic, tenant_id,
                                                                        message):
    with pytest.raises(ValueError, match=message):
        with hoc_coordinator.transaction() as tx:
            tx.publish("kept until the error", {})
            tx.publish(topic, {}, tenant_id)
    assert Event.select().count(hoc_db) == 0 and hoc_coordinator.publisher.published == deque()


class _Publisher:
    """A publisher whose delivery of topic "bad" fails (as a broker that is down would)."""

    def __init__(self):
        self.delivered = []

    def publish(self, topic, payload, event_id=None):
        if topic == "bad":
            raise ConnectionError("broker down")
        self.delivered.append(topic)


def test_an_event_the_publisher_fails_is_logged_kept_and_left_unmarked_while_the_rest_go_out(hoc_db, caplog):
    publisher = _Publisher()
    coordinator = TransactionCoordinator(hoc_db, publisher)
    with caplog.at_level(logging.ERROR):
        with coordinator.transaction() as tx:
            ids = [tx.publish(topic, {}) for topic in ("a", "bad", "c")]
    assert publisher.delivered == tx.published_topics == ["a", "c"]
    assert [str(e) for e in tx.callback_errors] == ["broker down"]
    (record,) = caplog.records
    assert record.getMessage() == f"post-commit work failed: {publisher.publish!r}"
    coordinator.mark_published()
    unmarked = [e.id for e in Event.select().where(Event.published_at.is_null()).execute(hoc_db)]
    assert unmarked == [ids[1]]  # flush_outbox publishes it again


def test_marks_that_fail_halfway_as_a_transaction_opens_are_all_undone(hoc_coordinator, monkeypatch):
    from hoc_drivers import transaction_coordinator

    with hoc_coordinator.transaction() as tx:
        for n in range(IDS_PER_MARK + 5):  # two marking statements
            tx.publish("bulk", {"n": n})
    real, built = transaction_coordinator._mark_events_published, []

    def second_fails(count):
        built.append(count)
        if len(built) == 2:
            raise RuntimeError("the second marking statement fails")
        return real(count)

    monkeypatch.setattr(transaction_coordinator, "_mark_events_published", second_fails)
    with pytest.raises(RuntimeError, match="second marking"), hoc_coordinator.transaction():
        pytest.fail("the block must not run when its transaction could not open")
    assert built == [IDS_PER_MARK, 5]
    unmarked = Event.select().where(Event.published_at.is_null()).count(hoc_coordinator.db)
    assert unmarked == IDS_PER_MARK + 5  # the first statement's marks rolled back with the rest
    assert hoc_coordinator.current() is None
    with hoc_coordinator.transaction() as tx:  # the connection is free for the next transaction
        tx.publish("after", {})
    assert Event.select().count(hoc_coordinator.db) == IDS_PER_MARK + 6
