"""The demo scenario: one realistic pass through all 13 drivers, as a narrative and as data.

The scenario's inputs live in `fixtures/demo_scenario.json` (shared with the tests). It works
offline and on an existing database: every step is either idempotent or uses fresh ids. It
leaves no pending work behind: its webhook alerts go to a receiver it starts on 127.0.0.1 (the
scenario's webhook URL is replaced by the receiver's), the sender delivers what is due, and the
receiver checks each request's HMAC signature.
"""
import asyncio
import hmac
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from decimal import Decimal
from pathlib import Path

from . import cross_domain, decisions, ledger
from .alert_driver import AlertQueueReader
from .alert_emitter import SIGNATURE_HEADER, AlertConfig, AlertEmitter, ThresholdSignal, sign_body
from .alert_sender import AlertSender
from .audit import audit_package
from .dag_executor import DAGExecutor, get_execution_plan
from .governance_signal_driver import GovernanceSignalReader, GovernanceSignalWriter
from .guard_read_driver import GuardReadDriver
from .guard_write_driver import GuardReader, GuardWriteDriver
from .idempotency import IdempotencyReader, claim_or_get, should_return_cached
from .models.base import new_id
from .models.runs import Trace
from .policy import compile_file
from .run_completion import RunCompletionTransaction
from .schema_parity import run_startup_parity_check
from .worker_write_service_async import WorkerWriteServiceAsync

# Installed, fixtures/ ships inside the package (setup.cfg); in a checkout it sits beside it.
_PACKAGE = Path(__file__).resolve().parent
FIXTURES = next((p for p in (_PACKAGE / "fixtures", _PACKAGE.parent / "fixtures") if p.is_dir()),
                _PACKAGE.parent / "fixtures")
SCENARIO = FIXTURES / "demo_scenario.json"


def load_scenario(path=SCENARIO):
    """The demo's inputs (tenant, signal, policies, anomaly, thresholds, ...)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"demo scenario not found: {path} (reinstall hoc-drivers)")
    return json.loads(Path(path).read_text(encoding="utf-8"))


@contextmanager
def webhook_receiver(secret):
    """A webhook receiver on 127.0.0.1 (a free port) for the duration of the block.

    Yields (url, received): each request that arrives appends {"path", "event_type", "verified"}
    to `received`, `verified` being whether its signature header is the HMAC of its body."""
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            verified = hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), sign_body(secret, body))
            received.append({"path": self.path, "verified": verified,
                             "event_type": json.loads(body).get("event_type")})
            self.send_response(204 if verified else 401)
            self.end_headers()

        def log_message(self, *args):
            """Quiet: the demo reports what arrived."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hoc-alerts", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _Narrative:
    """Collects the demo's steps: which driver, what happened, the figures."""

    def __init__(self):
        self.steps = []

    def add(self, driver, story, **figures):
        self.steps.append({"driver": driver, "story": story, **figures})


def _governance(coordinator, s, say):
    signal = s["signal"]
    with coordinator.transaction() as tx:
        GovernanceSignalWriter(tx).record_signal(signal["scope"], signal["type"], signal["decision"],
                                                 signal["by"], signal["reason"])
    reader = GovernanceSignalReader(coordinator.db)
    blocked = reader.is_blocked(signal["scope"])
    with coordinator.transaction() as tx:
        GovernanceSignalWriter(tx).clear_signal(signal["scope"], signal["type"], signal["by"])
    cleared = not reader.is_blocked(signal["scope"])
    say("governance_signal_driver",
        f"{signal['type']} {signal['decision']} on {signal['scope']}: blocked={blocked}; "
        f"cleared by {signal['by']}: blocked={not cleared}", blocked=blocked, cleared=cleared)
    return blocked and cleared


def _submission(coordinator, s, say):
    sub, tenant = s["submission"], s["tenant"]
    claims = []
    for _ in range(2):  # the client retries the same submission
        with coordinator.transaction() as tx:
            claims.append(claim_or_get(tx, tenant, sub["idempotency_key"], sub["agent"],
                                       sub["fingerprint"]))
    check = IdempotencyReader(coordinator.db).check_idempotency(tenant, sub["idempotency_key"])
    same = claims[0].run_id == claims[1].run_id
    say("idempotency", f"run submitted with key {sub['idempotency_key']!r} "
        f"({'new run' if claims[0].created else 'already claimed'}); the retry returned the cached "
        f"run {claims[1].run_id[:8]} (should_return_cached={should_return_cached(check)})",
        run_id=claims[1].run_id, retry_returned_same_run=same)
    return same and should_return_cached(check)


def _policies(coordinator, s, say):
    module = compile_file(str(FIXTURES / s["policies"]["file"]))
    plan = get_execution_plan(module)
    executor = DAGExecutor()
    outcomes = {}
    for name in s["policies"]["contexts"]:
        context = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        trace = executor.execute(module, context, plan)
        action = trace.final_action.value
        outcomes[Path(name).stem] = action
        deny = action == "deny"
        with coordinator.transaction() as tx:
            decisions.emit_policy_decision(
                tx, s["tenant"], None, s["policies"]["file"], evaluated=True, violated=deny,
                severity="error" if deny else "warning", reason=f"PLang final action: {action}",
                request_id=trace.execution_id,
                details={"execution_id": trace.execution_id, "final_action": action,
                         "decided_by": trace.decided_by})
    say("dag_executor", f"{plan.total_policies} PLang nodes in {len(plan.stages)} stages; "
        + ", ".join(f"{ctx} -> {action}" for ctx, action in outcomes.items()), outcomes=outcomes)
    recorded = decisions.list_decisions(coordinator.db, s["tenant"], decision_type="policy")
    say("decisions", f"policy decisions recorded for {s['tenant']}: {len(recorded)} in total",
        policy_decisions=len(recorded))
    return bool(outcomes) and len(recorded) >= len(outcomes)


def _costs(coordinator, s, say):
    anomaly, breach, tenant = s["cost_anomaly"], s["limit_breach"], s["tenant"]
    with coordinator.transaction() as tx:
        incident_id = cross_domain.create_incident_from_cost_anomaly(
            tx, tenant, anomaly["anomaly_id"], anomaly["type"], anomaly["severity"],
            anomaly["current_cents"], anomaly["expected_cents"], anomaly["entity_type"],
            anomaly["entity_id"])
        breach_id = cross_domain.record_limit_breach(
            tx, tenant, breach["limit_id"], breach["type"], Decimal(breach["value"]),
            Decimal(breach["limit"]), incident_id=incident_id)
    overage = (anomaly["current_cents"] - anomaly["expected_cents"]) / 100
    say("cross_domain", f"cost anomaly {anomaly['anomaly_id']} (+${overage:.2f}) became incident "
        f"{incident_id[:8]}; limit {breach['limit_id']} breach {breach_id[:8]} recorded",
        incident_id=incident_id, breach_id=breach_id)
    return incident_id


def _alerts(coordinator, s, say, incident_id):
    t, tenant = s["threshold"], s["tenant"]
    config = AlertConfig(policy_id=t["policy_id"], tenant_id=tenant,
                         enabled_channels=["ui", "webhook"], webhook_url=t["webhook_url"],
                         webhook_secret=t["webhook_secret"])
    run_id = f"demo-run-{new_id()[:8]}"
    sent = []
    for _ in range(2):  # the metric stays near the threshold: the repeat is throttled
        with coordinator.transaction() as tx:
            near = ThresholdSignal(tenant, run_id, t["policy_id"], t["metric"], t["near_value"],
                                   t["threshold"])
            sent.append(AlertEmitter(tx).emit_near_threshold(near, config))
    with coordinator.transaction() as tx:
        breach = ThresholdSignal(tenant, run_id, t["policy_id"], t["metric"], t["breach_value"],
                                 t["threshold"], signal_type="breach")
        breach_sent = AlertEmitter(tx).emit_breach(breach, config, action_taken="run halted")
    say("alert_emitter", f"near-threshold alert at {near.percentage:.0f}%: sent={sent[0]}, "
        f"repeat throttled={not sent[1]}; breach alert (bypasses throttling): sent={breach_sent}",
        near_sent=sent[0], repeat_throttled=not sent[1], breach_sent=breach_sent)
    return sent[0] and not sent[1] and breach_sent


def _delivery(coordinator, say, url, received):
    totals = AlertSender(coordinator).drain()
    ours = [r for r in received if r["verified"]]
    stats = AlertQueueReader(coordinator.db).fetch_queue_stats()
    say("alert_driver", f"alert sender delivered {totals['sent']} alert(s); the demo's receiver at "
        f"{url} got {len(received)} signed request(s) ({', '.join(r['event_type'] for r in received)}), "
        f"{len(ours)} with a valid {SIGNATURE_HEADER}; queue: {stats['pending']} pending, "
        f"{stats['sent']} sent, {stats['failed']} failed", delivered=totals, received=received, queue=stats)
    return len(received) >= 2 and len(ours) == len(received)


def _kill_switch(coordinator, s, say):
    tenant, ks = s["tenant"], s["kill_switch"]
    guard = GuardReadDriver(coordinator.db)
    before = guard.get_status(tenant)["is_frozen"]
    guard.get_status(tenant)  # served from the cache
    with coordinator.transaction() as tx:
        writer = GuardWriteDriver(tx)
        state, _ = writer.get_or_create_killswitch_state(tenant, "tenant", tenant)
        if not state.is_frozen:
            writer.freeze_killswitch(state, ks["by"], ks["reason"])
    after = guard.get_status(tenant)["is_frozen"]
    stats = guard.cache.stats()
    cache = {"hits": sum(stats["hits"].values()), "misses": sum(stats["misses"].values())}
    say("guard_write_driver", f"kill switch of {tenant} frozen by {ks['by']} ({ks['reason']})",
        frozen=True)
    say("guard_cache", f"guard status before: frozen={before} (then a cache hit); right after "
        f"the freeze: frozen={after} — invalidated on commit, no stale read "
        f"(hits {cache['hits']}, misses {cache['misses']})", before=before, after=after, cache=cache)
    with coordinator.transaction() as tx:  # leave the tenant usable for the next demo run
        GuardWriteDriver(tx).unfreeze_killswitch(
            GuardReader(coordinator.db).get_killswitch_state(tenant, "tenant", tenant), ks["by"])
    return after and not before


def _failed_run(coordinator, s, say):
    tenant, run = s["tenant"], s["failed_run"]
    run_id, trace_id = f"demo-run-{new_id()[:8]}", f"demo-trace-{new_id()[:8]}"
    with coordinator.transaction():
        Trace.insert(trace_id=trace_id, tenant_id=tenant, run_id=run_id).execute(coordinator.db)
    result = RunCompletionTransaction(coordinator).execute(
        tenant, run_id, "failed", agent_id=run["agent"], error_message=run["error_message"],
        trace_id=trace_id)
    say("transaction_coordinator",
        f"failed run {run_id} completed atomically (incident + policy evaluation + trace), "
        f"then published {', '.join(result.events_published)}",
        incident_id=result.incident_result.result_id, phase=result.phase.value)
    return result.is_complete() and result.all_domains_succeeded()


def _ledger(coordinator, s, say):
    counts = {}
    for entry in s["ledger"]:
        for _ in range(3):
            with coordinator.transaction() as tx:
                ledger.emit_signal(tx, entry["artifact"], entry["signal_type"],
                                   entry["evidence"], "hoc-drivers demo", field=entry["field"])
        rows = ledger.get_signals(coordinator.db, artifact=entry["artifact"],
                                  signal_type=entry["signal_type"])
        counts[entry["artifact"]] = rows[0]["seen_count"]
    say("ledger", "discovery signals aggregated by key: "
        + ", ".join(f"{a} seen {n}x" for a, n in counts.items()), seen_counts=counts)
    return all(n >= 3 for n in counts.values())


def _worker(coordinator, s, say):
    w, tenant = s["worker_run"], s["tenant"]
    service = WorkerWriteServiceAsync(coordinator)
    run_id = f"demo-worker-{new_id()[:8]}"

    async def work():
        await service.upsert_worker_run(tenant, run_id, {"task": w["task"], "status": "running"})
        await service.insert_cost_record(tenant, run_id, w["model"], w["input_tokens"],
                                         w["output_tokens"], w["cost_cents"])
        await service.upsert_worker_run(tenant, run_id, {"status": "completed", "success": True,
                                                         "cost_cents": w["cost_cents"]})
        return await service.insert_cost_advisory(tenant, run_id, w["daily_spend_cents"],
                                                  w["warn_threshold_cents"], {})

    advisory = asyncio.run(work())
    say("worker_write_service_async", f"worker run {run_id} written through the awaitable "
        f"facade: running -> completed, cost {w['cost_cents']} cents; advisory "
        f"{advisory.anomaly_type} ({advisory.severity})", run_id=run_id)
    return advisory.anomaly_type == "BUDGET_WARNING"


def run_demo(db, coordinator, scenario=None):
    """Run the scenario on `db`; returns {"ok", "steps": [...], "events", "summary"}."""
    s = scenario or load_scenario()
    narrative = _Narrative()
    say = narrative.add
    parity = run_startup_parity_check(db)
    say("schema_parity", "start-up schema check: " + ("database matches the models"
        if parity["ok"] else f"{len(parity['errors'])} difference(s)"), ok=parity["ok"])
    checks = {"schema_parity": parity["ok"],
              "governance": _governance(coordinator, s, say),
              "idempotency": _submission(coordinator, s, say),
              "policies": _policies(coordinator, s, say)}
    incident_id = _costs(coordinator, s, say)
    with webhook_receiver(s["threshold"]["webhook_secret"]) as (url, received):
        s = {**s, "threshold": {**s["threshold"], "webhook_url": url}}
        checks["alerts"] = _alerts(coordinator, s, say, incident_id)
        checks["alert_delivery"] = _delivery(coordinator, say, url, received)
    checks["kill_switch"] = _kill_switch(coordinator, s, say)
    checks["run_completion"] = _failed_run(coordinator, s, say)
    checks["ledger"] = _ledger(coordinator, s, say)
    checks["worker"] = _worker(coordinator, s, say)
    rows = audit_package()
    violations = [r.script for r in rows if r.verdict != "OK"]
    checks["audit"] = not violations
    say("audit", f"self-audit: {len(rows) - len(violations)}/{len(rows)} driver modules pass; "
        "only transaction_coordinator.py commits"
        + (f"; violations: {', '.join(violations)}" if violations else ""), violations=violations)
    failed = [name for name, passed in checks.items() if not passed]
    published = len(coordinator.publisher.published)
    summary = (f"demo finished on {db.database}: {len(narrative.steps)} steps, "
               f"{published} events published after commit, "
               + ("every check passed" if not failed else f"failed checks: {', '.join(failed)}"))
    return {"ok": not failed, "checks": checks, "steps": narrative.steps,
            "events_published": published, "summary": summary}
