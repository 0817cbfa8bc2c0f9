"""idempotency: tenant-scoped lookups, the TTL edge, claim-or-get under concurrency, conflicts."""
import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest

from hoc_drivers import idempotency
from hoc_drivers.db import CommitForbidden
from hoc_drivers.idempotency import (IdempotencyConflict, IdempotencyReader, IdempotencyResult,
                                     IdempotencyWriter, should_return_cached)
from hoc_drivers.models.runs import Run
from hoc_drivers.testing import ManualClock

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
DAY = 86_400


@pytest.fixture
def clock():
    """The drivers' clock: aware UTC, T0 until the test advances it (by a timedelta)."""
    return ManualClock(T0)


@pytest.fixture
def claim(hoc_coordinator, clock):
    """claim(key, tenant, agent=None, fingerprint=None, **kw): one committed claim_or_get."""
    def claim(key, tenant_id, agent_id=None, fingerprint=None, **kwargs):
        with hoc_coordinator.transaction() as tx:
            return IdempotencyWriter(tx, clock).claim_or_get(tenant_id, key, agent_id, fingerprint, **kwargs)
    return claim


@pytest.fixture
def reader(hoc_db, clock):
    return IdempotencyReader(hoc_db, clock)


@pytest.fixture
def all_runs(hoc_db):
    def all_runs():
        query = Run.select().order_by(Run.created_at, Run.id)
        return [(r.id, r.tenant_id, r.idempotency_key) for r in query.execute(hoc_db)]
    return all_runs


def test_an_unknown_key_does_not_exist(reader):
    assert reader.check_idempotency("acme", "nope") == IdempotencyResult(False, None, None, False)
    assert reader.get_existing_run("acme", "nope") is None


def test_a_claimed_key_is_found_with_its_run(claim, reader):
    made = claim("order-7", "acme", "billing", "fp-1")
    assert made.created and made.status == "queued" and made.replaced_run_id is None
    result = reader.check_idempotency("acme", "order-7")
    assert result == IdempotencyResult(True, made.run_id, "queued", False)
    assert should_return_cached(result)
    run = reader.get_existing_run("acme", "order-7", "billing")
    assert (run.id, run.tenant_id, run.agent_id, run.request_fingerprint) == (
        made.run_id, "acme", "billing", "fp-1")
    assert run.created_at == T0 and run.created_at.tzinfo == timezone.utc


def test_the_key_expires_exactly_when_its_age_reaches_the_ttl(claim, reader, clock):
    claim("order-7", "acme", status="succeeded")
    clock.advance(timedelta(seconds=DAY, microseconds=-1))
    result = reader.check_idempotency("acme", "order-7")
    assert not result.is_expired and should_return_cached(result)
    clock.advance(timedelta(microseconds=1))  # age == TTL: expired
    result = reader.check_idempotency("acme", "order-7")
    assert result.exists and result.is_expired and result.status == "succeeded"
    assert not should_return_cached(result)


@pytest.mark.parametrize("age, expired", [
    (timedelta(seconds=DAY, microseconds=-1), False),
    (timedelta(seconds=DAY), True),                      # (ours) the server edition: not yet
    (timedelta(seconds=DAY, microseconds=1), True),
])
def test_the_ttl_boundary_is_the_same_for_lookups_and_claims(claim, reader, clock, age, expired):
    old = claim("order-7", "acme", "billing", "fp-1", status="succeeded")
    clock.advance(age)
    assert reader.check_idempotency("acme", "order-7").is_expired is expired
    assert idempotency.check_idempotency(reader.db, "acme", "order-7", clock=clock).is_expired is expired
    if expired:
        assert claim("order-7", "acme", "billing", "fp-2").replaced_run_id == old.run_id
    else:
        with pytest.raises(IdempotencyConflict):
            claim("order-7", "acme", "billing", "fp-2")


def test_the_ttl_can_be_given_or_set_on_the_module(claim, hoc_db, clock, monkeypatch):
    claim("order-7", "acme")
    clock.advance(timedelta(seconds=60))
    assert IdempotencyReader(hoc_db, clock, ttl_seconds=60).check_idempotency("acme", "order-7").is_expired
    assert not IdempotencyReader(hoc_db, clock, ttl_seconds=61).check_idempotency("acme", "order-7").is_expired
    monkeypatch.setattr(idempotency, "IDEMPOTENCY_TTL_SECONDS", 60)
    assert idempotency.check_idempotency(hoc_db, "acme", "order-7", clock=clock).is_expired


def test_a_run_created_in_the_future_is_not_expired(claim, reader, clock):
    claim("order-7", "acme")
    clock.advance(timedelta(seconds=-3600))
    assert not reader.check_idempotency("acme", "order-7").is_expired


@pytest.mark.parametrize("environ, ttl", [({}, 86_400), ({"IDEMPOTENCY_TTL_SECONDS": "60"}, 60),
                                          ({"IDEMPOTENCY_TTL_SECONDS": " "}, 86_400)])
def test_ttl_from_environment(environ, ttl):
    assert idempotency.ttl_from_environment(environ) == ttl


@pytest.mark.parametrize("raw, message", [("a day", "whole number"), ("0", "positive"), ("-5", "positive"),
                                          (str(10**20), "at most 3153600000")])
def test_a_bad_ttl_in_the_environment_is_a_clear_error(raw, message):
    with pytest.raises(ValueError, match=f"IDEMPOTENCY_TTL_SECONDS must be.*{message}"):
        idempotency.ttl_from_environment({"IDEMPOTENCY_TTL_SECONDS": raw})


@pytest.mark.parametrize("status, cached", [
    ("succeeded", True), ("failed", True), ("queued", True), ("running", True), ("retry", True),
    ("halted", False), ("aborted", False), ("cancelled", False), ("SUCCEEDED", False), (None, False)])
def test_should_return_cached_statuses(status, cached):
    assert should_return_cached(IdempotencyResult(True, "r1", status, False)) is cached
    assert not should_return_cached(IdempotencyResult(True, "r1", status, True))
    assert not should_return_cached(IdempotencyResult(False))


def test_tenant_a_never_sees_tenant_b_runs(claim, reader, all_runs):
    a = claim("order-7", "tenant-a", fingerprint="fp-a")
    b = claim("order-7", "tenant-b", fingerprint="fp-b")  # same key, other tenant: no conflict
    assert a.created and b.created and a.run_id != b.run_id
    assert reader.check_idempotency("tenant-a", "order-7").run_id == a.run_id
    assert reader.check_idempotency("tenant-b", "order-7").run_id == b.run_id
    assert reader.get_existing_run("tenant-b", "order-7").id == b.run_id
    assert not reader.check_idempotency("tenant-c", "order-7").exists
    assert reader.get_existing_run("tenant-c", "order-7") is None
    assert len(all_runs()) == 2


@pytest.mark.parametrize("tenant_id", [None, "", "  "])
def test_the_tenant_is_mandatory(reader, claim, tenant_id, all_runs):
    for call in (lambda: reader.get_existing_run(tenant_id, "k"),
                 lambda: reader.check_idempotency(tenant_id, "k"),
                 lambda: claim("k", tenant_id)):
        with pytest.raises(ValueError, match="tenant_id is required"):
            call()
    assert all_runs() == []


@pytest.mark.parametrize("key, message", [("", "idempotency key is required"), (None, "is required"),
                                          ("k" * 256, "too long")])
def test_bad_keys_are_rejected(reader, claim, key, message, all_runs):
    with pytest.raises(ValueError, match=message):
        reader.check_idempotency("acme", key)
    with pytest.raises(ValueError, match=message):
        claim(key, "acme")
    assert all_runs() == []


def test_the_agent_narrows_lookups(claim, reader):
    made = claim("order-7", "acme", "billing")
    assert reader.get_existing_run("acme", "order-7", "support") is None
    assert not reader.check_idempotency("acme", "order-7", "support").exists
    assert reader.check_idempotency("acme", "order-7", "billing").run_id == made.run_id


def test_claiming_again_returns_the_same_run(claim, all_runs):
    first = claim("order-7", "acme", "billing", "fp-1")
    again = claim("order-7", "acme", "billing", "fp-1")
    without_details = claim("order-7", "acme")
    assert (again.run_id, again.created) == (first.run_id, False)
    assert (without_details.run_id, without_details.created) == (first.run_id, False)
    assert len(all_runs()) == 1


def test_a_different_fingerprint_is_a_conflict_and_writes_nothing(claim, all_runs):
    first = claim("order-7", "acme", "billing", "fp-1")
    with pytest.raises(IdempotencyConflict, match="already used for a different request") as caught:
        claim("order-7", "acme", "billing", "fp-2")
    assert (caught.value.run_id, caught.value.key, caught.value.tenant_id) == (first.run_id, "order-7", "acme")
    assert len(all_runs()) == 1


def test_a_fingerprint_never_matches_a_claim_made_without_one(claim):
    claim("order-7", "acme")
    with pytest.raises(IdempotencyConflict):
        claim("order-7", "acme", fingerprint="fp-1")


def test_another_agent_is_a_conflict(claim):
    claim("order-7", "acme", "billing")
    with pytest.raises(IdempotencyConflict, match="not agent 'support'"):
        claim("order-7", "acme", "support")


def test_an_expired_claim_is_replaced_by_a_new_run(claim, reader, clock, hoc_db):
    old = claim("order-7", "acme", "billing", "fp-1", status="succeeded")
    clock.advance(timedelta(seconds=DAY - 1))
    with pytest.raises(IdempotencyConflict):
        claim("order-7", "acme", "billing", "fp-2")
    clock.advance(timedelta(seconds=1))
    new = claim("order-7", "acme", "billing", "fp-2")
    assert new.created and new.replaced_run_id == old.run_id and new.run_id != old.run_id
    assert reader.check_idempotency("acme", "order-7") == IdempotencyResult(True, new.run_id, "queued", False)
    released = Run.select().where(Run.id == old.run_id).get(hoc_db)
    assert released.idempotency_key is None and released.status == "succeeded"
    assert released.updated_at == clock.now
    assert claim("order-7", "acme", "billing", "fp-2").run_id == new.run_id


def test_claim_takes_a_status_and_a_run_id(claim, reader):
    made = claim("order-7", "acme", status="running", run_id="run-0007")
    assert made.run_id == "run-0007"
    assert reader.check_idempotency("acme", "order-7").status == "running"


@pytest.mark.parametrize("status", ["bogus", "QUEUED", "", None, 5])
def test_claim_refuses_an_unknown_status(claim, status, all_runs):
    with pytest.raises(ValueError, match="unknown run status"):
        claim("order-7", "acme", status=status)
    assert all_runs() == []
    assert claim("order-7", "acme", status="cancelled").status == "cancelled"


@pytest.mark.parametrize("ttl", ["x", float("nan"), 1.5, True, 0, -1, 2**70])
def test_a_bad_ttl_argument_is_refused(hoc_coordinator, hoc_db, clock, ttl, all_runs):
    with hoc_coordinator.transaction() as tx:
        with pytest.raises(ValueError, match="ttl_seconds must be a whole number of seconds"):
            idempotency.claim_or_get(tx, "acme", "order-7", clock=clock, ttl_seconds=ttl)
    with pytest.raises(ValueError, match="ttl_seconds must be a whole number of seconds"):
        idempotency.check_idempotency(hoc_db, "acme", "order-7", clock=clock, ttl_seconds=ttl)
    assert all_runs() == []


def test_claiming_is_refused_outside_a_coordinator_transaction(hoc_coordinator, hoc_db, clock, all_runs):
    with hoc_coordinator.transaction() as closed:
        pass
    with pytest.raises(CommitForbidden, match="transaction has already ended"):
        IdempotencyWriter(closed, clock).claim_or_get("acme", "order-7")
    with pytest.raises(CommitForbidden):
        idempotency.claim_or_get(closed, "acme", "order-7", clock=clock)
    with pytest.raises(TypeError, match="a writer takes the coordinator's transaction first"):
        idempotency.claim_or_get(hoc_db, "acme", "order-7", clock=clock)
    assert all_runs() == []


def test_the_module_functions(hoc_coordinator, hoc_db, clock):
    with hoc_coordinator.transaction() as tx:
        made = idempotency.claim_or_get(tx, "acme", "order-7", "billing", "fp-1", clock=clock)
    assert idempotency.get_existing_run(hoc_db, "acme", "order-7").id == made.run_id
    with pytest.raises(TypeError, match="a reader takes the database first"):
        idempotency.get_existing_run(None, "acme", "order-7")  # no bound database to fall back on
    result = idempotency.check_idempotency(hoc_db, "acme", "order-7", clock=clock)
    assert result.to_dict() == {"exists": True, "run_id": made.run_id, "status": "queued", "is_expired": False}
    assert made.to_dict() == {"run_id": made.run_id, "status": "queued", "created": True,
                              "replaced_run_id": None}


@pytest.mark.sqlite_only
def test_the_key_lookup_uses_the_unique_index(hoc_db):
    sql, params = idempotency._SELECT_BY_KEY._build().sql()
    plan = " / ".join(row[3] for row in hoc_db.execute_sql("EXPLAIN QUERY PLAN " + sql, ["acme", "k"]))
    assert "USING INDEX runs_tenant_id_idempotency_key (tenant_id=? AND idempotency_key=?)" in plan
    assert "SCAN" not in plan


def _claim_in_own_process(path, barrier, results):
    """Child process: its own database and coordinator; claim the shared key at the barrier."""
    from hoc_drivers.db import connect_database
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    db = connect_database(path)
    coordinator = TransactionCoordinator(db)
    barrier.wait(timeout=30)
    try:
        with coordinator.transaction() as tx:
            made = idempotency.claim_or_get(tx, "acme", "order-7", "billing", "fp-1")
        results.put((made.run_id, made.created))
    except Exception as exc:
        results.put(("error", repr(exc)))
    finally:
        db.close()


def test_eight_processes_claiming_one_key_create_one_run(hoc_db, all_runs):
    processes_count = 8
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes_count), context.Queue()
    processes = [context.Process(target=_claim_in_own_process, args=(hoc_db.database, barrier, results))
                 for _ in range(processes_count)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert all(run_id != "error" for run_id, _ in outcomes), outcomes
    assert len({run_id for run_id, _ in outcomes}) == 1
    assert sorted(created for _, created in outcomes) == [False] * 7 + [True]
    assert [(tenant, key) for _, tenant, key in all_runs()] == [("acme", "order-7")]
