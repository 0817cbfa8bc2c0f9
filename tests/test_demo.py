"""The demo touches all 13 drivers, leaves their rows behind, and can run again."""
import json
import sqlite3
import time

from hoc_drivers.audit import DRIVERS
from hoc_drivers.demo import load_scenario

TABLES_THE_DEMO_FILLS = {
    "governance_signal_driver": "governance_signals", "idempotency": "runs",
    "decisions": "decision_records", "cross_domain": "limit_breaches",
    "alert_emitter": "notifications", "alert_driver": "costsim_alert_queue",
    "guard_write_driver": "killswitch_state", "transaction_coordinator": "events",
    "ledger": "discovery_ledger", "worker_write_service_async": "worker_runs",
}


def test_demo_runs_twice_and_every_driver_leaves_its_mark(run_cli, tmp_path):
    path = tmp_path / "demo.db"
    started = time.perf_counter()
    first = run_cli(path, "demo", "--json")
    elapsed = time.perf_counter() - started
    assert first.exit_code == 0, first.output + first.stderr
    report = json.loads(first.output)
    assert report["ok"] and all(report["checks"].values())
    assert {step["driver"] for step in report["steps"]} == set(DRIVERS) | {"audit"}
    assert elapsed < 15, f"demo took {elapsed:.1f} s"

    conn = sqlite3.connect(path)
    for driver, table in TABLES_THE_DEMO_FILLS.items():
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, driver
    tenant = load_scenario()["tenant"]
    kinds = {row[0] for row in conn.execute(
        "SELECT source_type FROM incidents WHERE tenant_id = ?", (tenant,))}
    assert kinds == {"cost_anomaly", "run"}
    steps = {step["driver"]: step for step in report["steps"]}
    assert steps["guard_cache"]["before"] is False and steps["guard_cache"]["after"] is True
    assert steps["dag_executor"]["outcomes"] == {"benign": "route", "pii": "deny"}
    assert steps["schema_parity"]["ok"]
    delivery = steps["alert_driver"]  # delivered to the demo's own receiver, signature checked
    assert delivery["queue"]["pending"] == 0 and delivery["delivered"]["sent"] == 2
    assert [(r["event_type"], r["verified"]) for r in delivery["received"]] == [
        ("threshold_near", True), ("threshold_breach", True)]

    second = run_cli(path, "demo")
    assert second.exit_code == 0, second.output + second.stderr
    assert "every check passed" in second.output
    assert conn.execute("SELECT count(*) FROM incidents WHERE source_type = 'cost_anomaly'"
                        ).fetchone()[0] == 1  # one incident per anomaly, however often
    assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1  # the retry was cached
