"""Promises of the coordinator's outbox and of run completion's tenant isolation (README
"Guarantees"), each test named after the promise it pins."""
import peewee
import pytest

from hoc_drivers.bus import subscribe
from hoc_drivers.facts import GuardStateChanged
from hoc_drivers.models.runs import Event, Incident, PreventionRecord, Run
from hoc_drivers.testing import in_open_transaction, other_connection, refuse_writes
from hoc_drivers.transaction_coordinator import RunCompletionTransaction, TransactionPhase


def committed_run_ids(db):
    """Run ids another connection sees: only what was really committed."""
    other = other_connection(db)
    try:
        return [row[0] for row in other.execute("SELECT id FROM runs ORDER BY id")]
    finally:
        other.close()


def test_events_of_a_rolled_back_savepoint_are_neither_stored_nor_published(
        hoc_db, hoc_coordinator, hoc_publisher):
    with hoc_coordinator.transaction() as tx:
        tx.publish("kept", {"n": 1})
        with pytest.raises(KeyError):
            with tx.savepoint():
                tx.publish("undone", {"n": 2})
                raise KeyError
        with pytest.raises(KeyError):
            with hoc_coordinator.transaction() as inner:  # a nested block is a savepoint too
                inner.publish("undone", {"n": 3})
                raise KeyError
        tx.publish("kept", {"n": 4})
    assert list(hoc_publisher.published) == [("kept", {"n": 1}), ("kept", {"n": 4})]
    assert sorted(e.payload["n"] for e in Event.select().execute(hoc_db)) == [1, 4]


def test_facts_of_a_rolled_back_savepoint_reach_no_subscriber(hoc_db, hoc_coordinator):
    seen = []
    unsubscribe = subscribe(hoc_db, GuardStateChanged, lambda fact: seen.append(fact))
    try:
        with hoc_coordinator.transaction() as tx:
            tx.note(GuardStateChanged("kept"))
            with pytest.raises(KeyError):
                with tx.savepoint():
                    tx.note(GuardStateChanged("undone"))
                    raise KeyError
    finally:
        unsubscribe()
    assert seen == [GuardStateChanged("kept")]


def test_one_failing_fact_subscriber_does_not_stop_the_others_nor_the_events(
        hoc_db, hoc_coordinator, hoc_publisher):
    seen = []

    def broken(fact):
        raise ConnectionError("subscriber down")

    unsubscribes = [subscribe(hoc_db, GuardStateChanged, broken),
                    subscribe(hoc_db, GuardStateChanged, lambda fact: seen.append(fact))]
    try:
        with hoc_coordinator.transaction() as tx:
            tx.note(GuardStateChanged("acme"))
            tx.publish("after", {})
            tx.on_commit(lambda: seen.append("callback"))
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
    assert seen == [GuardStateChanged("acme"), "callback"]
    assert list(hoc_publisher.published) == [("after", {})]
    assert [type(e) for e in tx.callback_errors] == [ConnectionError]


def test_one_failing_event_subscriber_does_not_stop_the_others(hoc_coordinator, hoc_publisher):
    seen = []
    hoc_publisher.subscribe("run.completed", lambda topic, payload: 1 / 0)
    hoc_publisher.subscribe("run.completed", lambda topic, payload: seen.append(payload))
    hoc_publisher.subscribe("*", lambda topic, payload: seen.append(topic))
    with hoc_coordinator.transaction() as tx:
        tx.publish("run.completed", {"run_id": "r"})
        tx.publish("policy.evaluated", {"run_id": "r"})
    assert seen == [{"run_id": "r"}, "run.completed", "policy.evaluated"]


def test_a_failed_mark_published_leaves_no_dead_transaction_for_later_work_to_join(
        hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        refuse_writes(tx, "events", "marking refused", event="UPDATE")
        tx.publish("run.completed", {})
    # the next transaction first marks that event published: the trigger makes it fail
    with pytest.raises(peewee.IntegrityError, match="marking refused"):
        with hoc_coordinator.transaction() as tx:
            Run.insert(id="never", tenant_id="t1").execute(tx.db)
    assert hoc_coordinator.current() is None and not in_open_transaction(hoc_db)
    with hoc_coordinator.transaction() as tx:
        Run.insert(id="later", tenant_id="t1").execute(tx.db)
    assert committed_run_ids(hoc_db) == ["later"]


def test_flush_outbox_publishes_left_over_events_oldest_first(hoc_db, hoc_coordinator,
                                                              hoc_publisher):
    raw = other_connection(hoc_db)
    mark = hoc_db.param
    raw.cursor().executemany(
        f"INSERT INTO events (id, topic, payload, created_at) VALUES ({mark}, {mark}, '{{}}', {mark})",
        [("a", "third", "2026-01-03 00:00:00.000000"),
         ("b", "first", "2026-01-01 00:00:00.000000"),
         ("c", "second", "2026-01-02 00:00:00.000000")])
    raw.commit()
    raw.close()
    assert hoc_coordinator.flush_outbox() == 3
    assert [topic for topic, _ in hoc_publisher.published] == ["first", "second", "third"]
    assert Event.select().where(Event.published_at.is_null()).count(hoc_db) == 0
    assert hoc_coordinator.flush_outbox() == 0 and len(hoc_publisher.published) == 3


def complete(coordinator, tenant_id, run_id="r1"):
    return RunCompletionTransaction(coordinator).execute(tenant_id, run_id, "failed",
                                                         error_message="AGENT_CRASH")


def test_a_replayed_run_completion_reports_its_own_tenants_records(hoc_db, hoc_coordinator):
    first = {tenant: complete(hoc_coordinator, tenant) for tenant in ("acme", "globex")}
    for tenant in ("globex", "acme"):  # a replay finds the tenant's rows, never the other's
        again = complete(hoc_coordinator, tenant)
        assert again.phase is TransactionPhase.ALREADY_COMPLETED
        assert again.policy_result.result_id == first[tenant].policy_result.result_id
        assert again.incident_result.result_id == first[tenant].incident_result.result_id
    policies = {p.id: p.tenant_id for p in PreventionRecord.select().execute(hoc_db)}
    incidents = {i.id: i.tenant_id for i in Incident.select().execute(hoc_db)}
    for tenant, result in first.items():
        assert policies[result.policy_result.result_id] == tenant
        assert incidents[result.incident_result.result_id] == tenant


def test_a_run_completion_bumps_the_incident_count_of_its_own_tenants_run_only(
        hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        Run.insert(id="r1", tenant_id="acme").execute(tx.db)
    complete(hoc_coordinator, "globex")  # another tenant naming acme's run id
    assert Run.select().where(Run.id == "r1").get(hoc_db).incident_count == 0
    complete(hoc_coordinator, "acme")
    complete(hoc_coordinator, "acme")  # a replay counts nothing
    assert Run.select().where(Run.id == "r1").get(hoc_db).incident_count == 1
