"""The demo scenario: one realistic pass through the drivers, as a narrative and as data."""
from .audit import audit_package
from .models.base import new_id
from .models.runs import Trace
from .schema_parity import run_startup_parity_check
from .transaction_coordinator import RunCompletionTransaction

TENANT = "demo-tenant"


def _step(steps, driver, story, **data):
    steps.append({"driver": driver, "story": story, **data})


def run_demo(db, coordinator):
    """Run the scenario on `db`; returns {"ok", "steps": [...], "summary"}."""
    steps = []
    parity = run_startup_parity_check(db)
    _step(steps, "schema_parity", "start-up schema check: "
          + ("database matches the models" if parity["ok"] else
             f"{len(parity['errors'])} difference(s)"), ok=parity["ok"])

    run_id, trace_id = f"demo-run-{new_id()[:8]}", f"demo-trace-{new_id()[:8]}"
    with coordinator.transaction():
        Trace.insert(trace_id=trace_id, tenant_id=TENANT, run_id=run_id).execute()
    result = RunCompletionTransaction(coordinator).execute(
        run_id, TENANT, "failed", agent_id="planner-agent",
        error_message="step 4: AGENT_CRASH (worker OOM)", trace_id=trace_id)
    _step(steps, "transaction_coordinator",
          f"failed run {run_id} completed atomically: incident + policy evaluation + trace, "
          f"then events {', '.join(result.events_published)}",
          incident_id=result.incident_result.result_id, phase=result.phase.value)

    rows = audit_package()
    violations = [r.script for r in rows if r.verdict != "OK"]
    _step(steps, "audit", f"self-audit: {len(rows) - len(violations)}/{len(rows)} driver modules pass"
          + (f"; violations: {', '.join(violations)}" if violations else ""), violations=violations)
    ok = parity["ok"] and not violations
    return {"ok": ok, "steps": steps,
            "summary": "demo finished: all checks passed" if ok else "demo finished with problems"}
