"""cross_domain: mandatory cost-anomaly incidents and limit breaches (SPEC §1)."""
from decimal import Decimal

import pytest

from hoc_drivers.testing import refuse_writes
from hoc_drivers.cross_domain import (GovernanceError, create_incident_from_cost_anomaly,
                                      record_limit_breach, table_exists)
from hoc_drivers.db import CommitForbidden, GuardedSqliteDatabase
from hoc_drivers.models.cost import LimitBreach
from hoc_drivers.models.runs import Incident, Run


def anomaly(tx, tenant="t1", anomaly_id="an-1", anomaly_type="BUDGET_EXCEEDED", severity="HIGH",
            current=15000, expected=10000, **extra):
    return create_incident_from_cost_anomaly(tx, tenant, anomaly_id, anomaly_type, severity,
                                             current, expected, **extra)


def by_id(db, model, row_id):
    """The row of `model` with that id, read on `db`."""
    return model.select().where(model.id == row_id).get(db)


@pytest.fixture
def guard_cache(hoc_db, hoc_guard_cache):
    """A fresh cache serving the test's database (so its commits invalidate it)."""
    return hoc_guard_cache.serve(hoc_db)


def test_docstring_example_fields(hoc_coordinator, hoc_no_stray_commits, hoc_db):
    with hoc_coordinator.transaction() as tx:
        incident_id = anomaly(tx, "tenant-123", "anomaly-456")
    incident = by_id(hoc_db, Incident, incident_id)
    assert isinstance(incident_id, str) and len(incident_id) == 32
    assert incident.title == "Cost anomaly: BUDGET_EXCEEDED (+$50.00)"
    assert (incident.severity, incident.status, incident.trigger_type) == ("high", "open", "budget_breach")
    assert incident.trigger_value == "5000"
    assert incident.cost_delta_cents == Decimal("5000")
    assert str(incident.cost_impact) == "50.00"  # the overage in currency units, as the server
    assert incident.description == ("Detected BUDGET_EXCEEDED anomaly. Current: $150.00, "
                                     "Expected: $100.00.")
    assert (incident.source_type, incident.category, incident.impact_scope) == (
        "cost_anomaly", "COST_ANOMALY", "tenant")
    assert (incident.cause_type, incident.lifecycle_state, incident.domain) == (
        "SYSTEM", "ACTIVE", "Analytics")
    assert incident.affected_agent_id is None and incident.affected_count == 1
    assert (incident.tenant_id, incident.anomaly_id) == ("tenant-123", "anomaly-456")
    assert incident.started_at == incident.created_at == incident.updated_at
    assert incident.started_at.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("given, stored", [
    ("CRITICAL", "critical"), ("HIGH", "high"), ("MEDIUM", "medium"), ("LOW", "low"),
    ("high", "high"), ("Low", "low"), ("SEVERE", "medium"), ("", "medium"),
])
def test_severity_map(hoc_coordinator, given, stored, hoc_db):
    with hoc_coordinator.transaction() as tx:
        incident_id = anomaly(tx, severity=given)
    assert by_id(hoc_db, Incident, incident_id).severity == stored


@pytest.mark.parametrize("anomaly_type, trigger", [
    ("BUDGET_EXCEEDED", "budget_breach"), ("USER_SPIKE", "cost_spike"),
    ("TENANT_SPIKE", "cost_spike"), ("DRIFT", "cost_drift"), ("FEATURE_SPIKE", "cost_anomaly"),
    ("BUDGET_WARNING", "cost_anomaly"),
    ("budget_exceeded", "cost_anomaly"),  # the lookup is case-sensitive, as the server edition
])
def test_trigger_type_map(hoc_coordinator, anomaly_type, trigger, hoc_db):
    with hoc_coordinator.transaction() as tx:
        incident_id = anomaly(tx, anomaly_type=anomaly_type)
    assert by_id(hoc_db, Incident, incident_id).trigger_type == trigger


def test_agent_entity_and_generated_description(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        agent = anomaly(tx, anomaly_id="a", anomaly_type="user_spike", current=450, expected=100,
                        entity_type="agent", entity_id="agent-7")
        user = anomaly(tx, anomaly_id="u", entity_type="user", entity_id="user_heavy")
        bare_id = anomaly(tx, anomaly_id="b", entity_id="x")
        given = anomaly(tx, anomaly_id="g", description="custom text")
    agent, user, bare_id, given = (by_id(hoc_db, Incident, i) for i in (agent, user, bare_id, given))
    assert agent.title == "Cost anomaly: user_spike (+$3.50)"
    assert (agent.impact_scope, agent.affected_agent_id) == ("agent", "agent-7")
    assert agent.description == ("Detected user_spike anomaly. Current: $4.50, Expected: $1.00. "
                                 "Entity: agent/agent-7")
    assert (user.impact_scope, user.affected_agent_id) == ("user", None)
    assert (bare_id.impact_scope, bare_id.description.endswith("$100.00.")) == ("tenant", True)
    assert given.description == "custom text"


@pytest.mark.parametrize("current, expected, title, trigger_value, cost_impact", [
    (100, 100, "(+$0.00)", "0", "0.00"),
    (50, 100, "(+$-0.50)", "-50", "-0.50"),
    (Decimal("100"), 0, "(+$1.00)", "100", "1.00"),
    (15000.0, 10000, "(+$50.00)", "5000.0", "50.00"),  # a whole float is accepted, as the server edition
    (123456789, 1, "(+$1234567.88)", "123456788", "1234567.88"),
    (10**30 + 7, 0, f"(+${10**28}.07)", str(10**30 + 7), f"{10**28}.07"),  # beyond 28 digits: exact
])
def test_overage_edges(hoc_coordinator, current, expected, title, trigger_value, cost_impact):
    with hoc_coordinator.transaction() as tx:
        incident = by_id(tx.db, Incident, anomaly(tx, current=current, expected=expected))
    assert incident.title.endswith(title)
    assert incident.trigger_value == trigger_value
    assert incident.cost_delta_cents == Decimal(trigger_value)
    assert str(incident.cost_impact) == cost_impact


def test_one_incident_per_tenant_and_anomaly(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        first = anomaly(tx, "t1", "an-1")
        again = anomaly(tx, "t1", "an-1", severity="LOW", current=1, expected=0)
    with hoc_coordinator.transaction() as tx:
        later = anomaly(tx, "t1", "an-1")
        other_tenant = anomaly(tx, "t2", "an-1")
    assert first == again == later
    assert other_tenant != first
    assert by_id(hoc_db, Incident, first).severity == "high"  # the repeat changed nothing
    assert Incident.select().where(Incident.tenant_id == "t1").count(hoc_db) == 1
    assert Incident.select().count(hoc_db) == 2


def test_invalid_input_raises_governance_error_and_rolls_back_the_caller(hoc_coordinator, hoc_db):
    with pytest.raises(GovernanceError) as caught:
        with hoc_coordinator.transaction() as tx:
            Run.insert(id="run-1", tenant_id="t1").execute(tx.db)
            anomaly(tx, severity=None)
    error = caught.value
    assert (error.domain, error.operation, error.entity_id) == (
        "Analytics", "create_incident_from_cost_anomaly", "an-1")
    assert Run.select().count(hoc_db) == 0 and Incident.select().count(hoc_db) == 0


@pytest.mark.parametrize("field, value", [
    ("tenant", ""), ("anomaly_id", " "), ("current", "15000"), ("expected", None),
    ("current", True), ("current", 1.5), ("expected", Decimal("100.5")),
    ("current", float("nan")), ("expected", Decimal("Infinity")),
    ("entity_id", 5), ("entity_type", ["agent"]), ("description", 5),
])
def test_bad_arguments_are_governance_errors(hoc_coordinator, field, value, hoc_db):
    with hoc_coordinator.transaction() as tx:
        with pytest.raises(GovernanceError) as caught:
            anomaly(tx, **{field: value})
    assert str(caught.value.__cause__).startswith(field)  # the message names the argument
    assert Incident.select().count(hoc_db) == 0


def test_database_failure_is_wrapped_and_the_whole_transaction_rolls_back(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        refuse_writes(tx, "incidents", "incident store unavailable")
    with pytest.raises(GovernanceError) as caught:
        with hoc_coordinator.transaction() as tx:
            Run.insert(id="run-1", tenant_id="t1").execute(tx.db)
            anomaly(tx)
    assert "incident store unavailable" in str(caught.value)
    assert type(caught.value.__cause__).__name__ == "IntegrityError"
    assert Run.select().count(hoc_db) == 0


def test_governance_error_text():
    error = GovernanceError("boom", "Policies", "record_limit_breach", "lim-1")
    assert str(error) == "[Policies] record_limit_breach: boom (entity_id=lim-1)"
    assert str(GovernanceError("boom", "Analytics", "op")) == "[Analytics] op: boom"
    assert repr(error) == ("GovernanceError(domain='Policies', operation='record_limit_breach', "
                           "entity_id='lim-1', message='boom')")


def test_writes_outside_a_coordinator_transaction_are_refused(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as closed:
        pass
    with pytest.raises(CommitForbidden):
        anomaly(closed)
    with pytest.raises(CommitForbidden):
        record_limit_breach(closed, "t1", "lim-1", "BREACHED", 1, 2)
    assert Incident.select().count(hoc_db) == LimitBreach.select().count(hoc_db) == 0


def test_new_incident_invalidates_the_tenant_guard_cache_after_commit(hoc_coordinator, guard_cache):
    guard_cache.set_status("t1", {"open_incidents": 0})
    guard_cache.set_status("t2", {"open_incidents": 0})
    with hoc_coordinator.transaction() as tx:
        anomaly(tx, "t1")
        assert guard_cache.get_status("t1") is not None  # not before COMMIT
    assert guard_cache.get_status("t1") is None
    assert guard_cache.get_status("t2") is not None


def test_rolled_back_incident_invalidates_nothing(hoc_coordinator, guard_cache, hoc_db):
    guard_cache.set_status("t1", {"open_incidents": 0})
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            anomaly(tx, "t1")
            raise RuntimeError("caller failed later")
    assert guard_cache.get_status("t1") == {"open_incidents": 0}
    assert Incident.select().count(hoc_db) == 0


def test_existing_incident_registers_no_invalidation(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        anomaly(tx)
    with hoc_coordinator.transaction() as tx:
        anomaly(tx)
        assert tx.callbacks == [] and tx.facts == []


def test_limit_breach_is_stored_exactly(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        Run.insert(id="run-789", tenant_id="t1").execute(tx.db)
        incident_id = anomaly(tx)
        breach_id = record_limit_breach(tx, "t1", "limit-456", "BREACHED", Decimal("150.0000"),
                                        Decimal("100.00"), run_id="run-789",
                                        incident_id=incident_id, details={"window": "daily"})
    breach = by_id(hoc_db, LimitBreach, breach_id)
    assert len(breach_id) == 32
    assert breach.value_at_breach == Decimal("150.0000") and str(breach.value_at_breach) == "150.0000"
    assert str(breach.limit_value) == "100.00"
    assert (breach.run_id, breach.incident_id, breach.details) == (
        "run-789", incident_id, {"window": "daily"})
    assert breach.breached_at.utcoffset().total_seconds() == 0 and breach.recovered_at is None


@pytest.mark.parametrize("breach_type", ["BREACHED", "EXHAUSTED", "THROTTLED", "VIOLATED"])
def test_every_breach_type_is_accepted(hoc_coordinator, breach_type, hoc_db):
    with hoc_coordinator.transaction() as tx:
        breach_id = record_limit_breach(tx, "t1", "lim", breach_type, None, "0.1")
    breach = by_id(hoc_db, LimitBreach, breach_id)
    assert (breach.breach_type, breach.value_at_breach, breach.limit_value) == (
        breach_type, None, Decimal("0.1"))


@pytest.mark.parametrize("kwargs, message", [
    ({"breach_type": "breached"}, "unknown breach_type"),
    ({"breach_type": "EXCEEDED"}, "unknown breach_type"),
    ({"limit_value": None}, "limit_value must be a decimal number"),
    ({"limit_value": "lots"}, "limit_value must be a decimal number"),
    ({"value_at_breach": float("nan")}, "value_at_breach must be finite"),
    ({"details": ["not", "an", "object"]}, "details must be a JSON object"),
    ({"run_id": "run-of-t2"}, "run 'run-of-t2' not found for tenant 't1'"),
    ({"incident_id": "missing"}, "incident 'missing' not found for tenant 't1'"),
])
def test_bad_breach_raises_governance_error_and_writes_nothing(hoc_coordinator, kwargs, message, hoc_db):
    with hoc_coordinator.transaction() as tx:
        Run.insert(id="run-of-t2", tenant_id="t2").execute(tx.db)
    arguments = {"breach_type": "BREACHED", "value_at_breach": 5, "limit_value": 4, **kwargs}
    with pytest.raises(GovernanceError) as caught:
        with hoc_coordinator.transaction() as tx:
            record_limit_breach(tx, "t1", "lim-1", **arguments)
    assert message in str(caught.value)
    assert (caught.value.domain, caught.value.entity_id) == ("Policies", "lim-1")
    assert LimitBreach.select().count(hoc_db) == 0


def test_table_exists(hoc_db, tmp_path):
    assert table_exists(hoc_db, "incidents") is True
    assert table_exists(hoc_db, "limit_breaches") is True
    assert table_exists(hoc_db, "no_such_table") is False
    unreachable = GuardedSqliteDatabase(str(tmp_path / "missing-dir" / "x.db"))
    assert table_exists(unreachable, "incidents") is False
