"""Facts across processes on PostgreSQL: a commit in one process reaches the guard cache and the
serving alert sender of another through NOTIFY, delivered on COMMIT and dropped on ROLLBACK; a
listener that loses its connection connects again and the cache drops everything.

Each test races real processes (forked by `run_at_once`) against one real PostgreSQL server and
waits a bounded time for the real notification; no clock moves past a TTL.
"""
import threading

import pytest

from hoc_drivers import bus, settings
from hoc_drivers.alert_sender import AlertSender
from hoc_drivers.db import connect_database
from hoc_drivers.facts import AlertQueued, FactsMissed, GuardStateChanged, from_payload, to_payloads
from hoc_drivers.guard_cache import GuardCache
from hoc_drivers.guard_read_driver import GuardReadDriver
from hoc_drivers.guard_write_driver import GuardWriteDriver
from hoc_drivers.testing import other_connection, run_at_once
from hoc_drivers.transaction_coordinator import TransactionCoordinator
from tests.test_alert_sender import HttpReceiver, emit_breach, webhook_config

needs_postgresql = pytest.mark.skipif(
    settings.get("testing.backend") != "postgresql",
    reason="about PostgreSQL's NOTIFY (SQLite: other processes' commits show by PRAGMA data_version)")

WAIT = 5  # seconds a notification may take to arrive (it takes milliseconds)


class Seen:
    """The facts of `fact_type` this process's subscribers get on `db`, as they arrive."""

    def __init__(self, db, fact_type):
        self.facts = []
        self._arrived = threading.Condition()
        self.unsubscribe = bus.subscribe(db, fact_type, self._add)

    def _add(self, fact):
        with self._arrived:
            self.facts.append(fact)
            self._arrived.notify_all()

    def wait_for(self, fact):
        """True once `fact` has arrived (False if it does not within WAIT seconds)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: fact in self.facts, WAIT)


def _in_another_process(work, db):
    """Run `work(coordinator)` in a forked process with its own connection to `db`."""
    def child(url, barrier):
        work(TransactionCoordinator(connect_database(url)))
    assert run_at_once(child, db.database, processes=1) == [0]


def _freeze(tenant, roll_back=False):
    def work(coordinator):
        try:
            with coordinator.transaction() as tx:
                writer = GuardWriteDriver(tx)
                state, _ = writer.get_or_create_killswitch_state(tenant, "tenant", tenant)
                writer.freeze_killswitch(state, "ops", "runaway spend")
                if roll_back:
                    raise RuntimeError("abandon the freeze")
        except RuntimeError:
            pass
    return work


@pytest.fixture
def reader(hoc_db, hoc_clock):
    """A guard read driver whose cache's clock never moves: only a notification can drop it."""
    return GuardReadDriver(hoc_db, cache=GuardCache(timer=hoc_clock))


def test_a_fact_survives_the_round_trip_through_a_payload_and_others_are_refused():
    facts = [GuardStateChanged("acme", "snapshot"), AlertQueued(), GuardStateChanged("acme", "snapshot")]
    payloads = to_payloads(facts)
    assert len(payloads) == 2  # one per distinct fact
    assert [from_payload(p)[1] for p in payloads] == facts[:2]
    assert from_payload(payloads[0])[0] == from_payload(payloads[1])[0]  # this process's mark
    for text in ("x", "x 5", 'x ["FactsMissed"]', 'x ["GuardStateChanged"]', "x not json",
                 'x ["GuardStateChanged", ["acme"]]', 'x ["GuardStateChanged", {"a": 1}]',
                 'x ["GuardStateChanged", 7]', "x " + "[" * 100_000):  # anyone may NOTIFY the channel
        with pytest.raises(ValueError):
            from_payload(text)


@needs_postgresql
def test_a_freeze_committed_in_another_process_is_seen_on_the_next_read(hoc_db, reader):
    assert reader.get_status("acme")["is_frozen"] is False
    seen = Seen(hoc_db, GuardStateChanged)
    generation = reader.cache.generation("acme")  # as a reader takes it before reading
    _in_another_process(_freeze("acme"), hoc_db)
    assert seen.wait_for(GuardStateChanged("acme"))
    assert reader.get_status("acme")["is_frozen"] is True  # the clock never moved: not the TTL
    assert reader.cache.stats()["misses"] == {"status": 2}
    # a value read before the other process's commit is not stored after it
    assert reader.cache.set_status("acme", {"stale": True}, generation=generation) is False


@needs_postgresql
def test_a_freeze_rolled_back_in_another_process_notifies_nothing(hoc_db, reader):
    assert reader.get_status("acme")["is_frozen"] is False
    seen = Seen(hoc_db, GuardStateChanged)
    _in_another_process(_freeze("acme", roll_back=True), hoc_db)
    _in_another_process(_freeze("marker"), hoc_db)  # notifications arrive in commit order
    assert seen.wait_for(GuardStateChanged("marker"))
    assert seen.facts == [GuardStateChanged("marker")]
    assert reader.get_status("acme")["is_frozen"] is False
    assert reader.cache.stats()["hits"] == {"status": 1}  # the entry survived


@needs_postgresql
def test_this_process_gets_its_own_facts_once(hoc_db, hoc_coordinator):
    seen = Seen(hoc_db, GuardStateChanged)
    _freeze("acme")(hoc_coordinator)          # after COMMIT, in this process: at once
    assert seen.facts == [GuardStateChanged("acme")]
    _in_another_process(_freeze("marker"), hoc_db)
    assert seen.wait_for(GuardStateChanged("marker"))
    assert seen.facts == [GuardStateChanged("acme"), GuardStateChanged("marker")]


@needs_postgresql
def test_an_alert_queued_in_another_process_wakes_a_serving_sender(hoc_db, hoc_coordinator):
    receiver = HttpReceiver()
    sender = AlertSender(hoc_coordinator)
    woken = Seen(hoc_db, AlertQueued)
    totals = {}
    thread = threading.Thread(target=lambda: totals.update(sender.serve(poll_seconds=3600)))
    thread.start()
    try:
        _in_another_process(lambda coordinator: emit_breach(coordinator, webhook_config(receiver.url)),
                            hoc_db)
        assert woken.wait_for(AlertQueued())
        assert receiver.wait_for(1, timeout=WAIT)  # long before the hour of its poll
    finally:
        sender.stop()
        thread.join(20)
        receiver.down()
    assert totals["sent"] == 1


@needs_postgresql
def test_a_listener_whose_connection_is_killed_clears_the_cache_and_listens_again(hoc_db, reader):
    from hoc_drivers.pg_guard import fact_listener

    assert reader.get_status("acme")["is_frozen"] is False
    missed = Seen(hoc_db, FactsMissed)
    changed = Seen(hoc_db, GuardStateChanged)
    listener = fact_listener(hoc_db)
    reconnects = listener.reconnects
    killer = other_connection(hoc_db)
    try:
        killer.execute("SELECT pg_terminate_backend(%s)", (listener.connection.info.backend_pid,))
    finally:
        killer.close()
    assert missed.wait_for(FactsMissed())
    assert listener.reconnects == reconnects + 1
    assert reader.cache.get_status("acme") is None  # dropped: anything may have changed
    assert reader.get_status("acme")["is_frozen"] is False
    _in_another_process(_freeze("acme"), hoc_db)
    assert changed.wait_for(GuardStateChanged("acme"))
    assert reader.get_status("acme")["is_frozen"] is True
