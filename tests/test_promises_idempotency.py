"""Idempotency keys: tenant- and agent-scoped lookups, conflicts that name what they found,
and module functions that pass every argument on (found by mutation testing)."""
from datetime import datetime, timedelta, timezone

import pytest

from hoc_drivers import idempotency
from hoc_drivers.guard_cache import GuardCache
from hoc_drivers.idempotency import IdempotencyConflict, IdempotencyReader
from hoc_drivers.models.runs import Run
from hoc_drivers.testing import ManualClock


def claim(coordinator, tenant_id, key, **options):
    with coordinator.transaction() as tx:
        return idempotency.claim_or_get(tx, tenant_id, key, **options)


@pytest.mark.parametrize("agent_id", ["", 5, "   "])
def test_lookups_refuse_an_unusable_agent(hoc_db, agent_id):
    reader = IdempotencyReader(hoc_db)
    for lookup in (reader.get_existing_run, reader.check_idempotency,
                   lambda *args: idempotency.get_existing_run(hoc_db, *args),
                   lambda *args: idempotency.check_idempotency(hoc_db, *args)):
        with pytest.raises(ValueError, match="agent_id"):
            lookup("acme", "k", agent_id)


def test_a_lookup_narrowed_to_an_agent_stays_within_the_tenant_and_key(hoc_db, hoc_coordinator):
    mine = claim(hoc_coordinator, "acme", "k", agent_id="planner")
    claim(hoc_coordinator, "globex", "k", agent_id="bot")
    claim(hoc_coordinator, "acme", "other-key", agent_id="bot")
    assert idempotency.get_existing_run(hoc_db, "acme", "k", "bot") is None
    assert idempotency.get_existing_run(hoc_db, "acme", "k", "planner").id == mine.run_id
    assert not idempotency.check_idempotency(hoc_db, "acme", "k", "bot").exists
    assert idempotency.check_idempotency(hoc_db, "acme", "k", "planner").run_id == mine.run_id


def test_a_conflict_names_the_key_the_tenant_and_the_run_holding_it(hoc_coordinator):
    held = claim(hoc_coordinator, "acme", "k", agent_id="planner", request_fingerprint="f1")
    for options in ({"request_fingerprint": "f2"}, {"agent_id": "bot"}):
        with pytest.raises(IdempotencyConflict) as conflict:
            claim(hoc_coordinator, "acme", "k", **options)
        assert (conflict.value.key, conflict.value.tenant_id, conflict.value.run_id) == \
            ("k", "acme", held.run_id)


def test_claim_or_get_stores_the_agent_fingerprint_and_run_id_given(hoc_db, hoc_coordinator):
    made = claim(hoc_coordinator, "acme", "k", agent_id="planner", request_fingerprint="f1",
                 run_id="run-given", status="running")
    assert (made.run_id, made.status, made.created) == ("run-given", "running", True)
    run = Run.select().where(Run.id == "run-given").get(hoc_db)
    assert (run.tenant_id, run.agent_id, run.request_fingerprint, run.idempotency_key) == \
        ("acme", "planner", "f1", "k")


@pytest.mark.parametrize("field, value, message", [
    ("agent_id", "", "agent_id must be a non-empty string or None, got ''"),
    ("request_fingerprint", "", "request fingerprint must be a non-empty string or None, got ''"),
    ("run_id", 7, "run id must be a non-empty string or None, got 7"),
    ("status", "done", "unknown run status 'done' (expected one of: "
                       + ", ".join(idempotency.RUN_STATUSES) + ")"),
])
def test_a_claim_with_a_bad_argument_is_refused_naming_it_and_writes_nothing(
        hoc_db, hoc_coordinator, field, value, message):
    with pytest.raises(ValueError) as refused:
        claim(hoc_coordinator, "acme", "k", **{field: value})
    assert str(refused.value) == message
    assert Run.select().count(hoc_db) == 0


def test_a_new_claim_refreshes_the_tenants_cached_snapshot_after_commit(hoc_db, hoc_coordinator,
                                                                      hoc_clock):
    cache = GuardCache(timer=hoc_clock).serve(hoc_db)
    cache.set_snapshot("acme", {"runs_today": 0})
    cache.set_snapshot("globex", {"runs_today": 0})
    cache.set_status("acme", {"is_frozen": False})
    claim(hoc_coordinator, "acme", "k")
    assert cache.get_snapshot("acme") is None                      # one more run today
    assert cache.get_snapshot("globex") == {"runs_today": 0}
    assert cache.get_status("acme") == {"is_frozen": False}        # only the snapshot changed
    cache.set_snapshot("acme", {"runs_today": 1})
    claim(hoc_coordinator, "acme", "k")                            # the same run again: no change
    assert cache.get_snapshot("acme") == {"runs_today": 1}
    later = ManualClock(datetime.now(timezone.utc) + timedelta(days=2))
    claim(hoc_coordinator, "acme", "k", clock=later)                # expired: a new run replaces it
    assert cache.get_snapshot("acme") is None
    assert cache.get_status("acme") == {"is_frozen": False}


def test_a_claimed_run_records_when_it_was_created_and_updated(hoc_db, hoc_coordinator):
    now = ManualClock(datetime(2026, 5, 1, 12, tzinfo=timezone.utc))
    made = claim(hoc_coordinator, "acme", "k", clock=now)
    run = Run.select().where(Run.id == made.run_id).get(hoc_db)
    assert run.created_at == run.updated_at == now()


def test_a_key_of_exactly_the_maximum_length_is_accepted(hoc_db, hoc_coordinator):
    made = claim(hoc_coordinator, "acme", "k" * 255)
    assert idempotency.get_existing_run(hoc_db, "acme", "k" * 255).id == made.run_id
    with pytest.raises(ValueError, match=r"^idempotency key is too long \(256 characters; at most 255\)$"):
        claim(hoc_coordinator, "acme", "k" * 256)


def test_the_ttl_given_to_a_claim_decides_when_its_key_expires(hoc_coordinator):
    now = ManualClock(datetime(2026, 5, 1, 12, tzinfo=timezone.utc))
    first = claim(hoc_coordinator, "acme", "k", clock=now, ttl_seconds=1, status="running")
    assert claim(hoc_coordinator, "acme", "k", clock=now, ttl_seconds=1) == \
        idempotency.IdempotencyClaim(first.run_id, "running", created=False)
    now.now += timedelta(seconds=1)                                # age == ttl: expired
    again = claim(hoc_coordinator, "acme", "k", clock=now, ttl_seconds=1, status="retry")
    assert (again.created, again.status, again.replaced_run_id) == (True, "retry", first.run_id)


@pytest.mark.parametrize("ttl", [0, 1.5])
def test_a_bad_ttl_is_refused_with_the_whole_rule(hoc_db, ttl):
    with pytest.raises(ValueError) as refused:
        IdempotencyReader(hoc_db, ttl_seconds=ttl)
    assert str(refused.value) == (f"ttl_seconds must be a whole number of seconds from 1 to "
                                  f"{idempotency.MAX_TTL_SECONDS} (or None), got {ttl!r}")
