"""CLI: `alerts enqueue|stats|send|retry-failed|purge` and `guard status|snapshot`."""
import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hoc_drivers.db import connect_database, init_database
from hoc_drivers.guard_write_driver import GuardWriteDriver
from hoc_drivers.models.alerts import AlertQueueItem, canonical_json
from hoc_drivers.models.base import new_id, utcnow
from hoc_drivers.transaction_coordinator import TransactionCoordinator

SECRET = "cli-webhook-secret"
ENQUEUE = ["alerts", "enqueue", "--tenant", "acme", "--policy", "budget", "--run", "run-42",
           "--metric", "cost", "--current", "85", "--threshold", "100"]


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 that records each POST body."""
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    server.bodies = bodies
    server.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield server
    server.shutdown()
    server.server_close()


def queue_rows(path):
    db = connect_database(str(path))
    rows = list(AlertQueueItem.select().execute(db))
    db.close()
    return rows


def add_alerts(path, count, **fields):
    db = init_database(str(path))
    with TransactionCoordinator(db).transaction() as tx:
        AlertQueueItem.insert_many([{"id": new_id(), "payload": {"n": n}, "alert_type": "test",
                                     **fields} for n in range(count)]).execute(tx.db)
    db.close()


@pytest.mark.parametrize("args, message", [
    (["--channel", "webhook", "--webhook-url", "ftp://example.com/hook"], "--webhook-url must be an http(s) URL"),
    (["--channel", "webhook", "--webhook-url", "example.com/hook"], "--webhook-url must be an http(s) URL"),
    (["--channel", "email", "--email", "ops@"], "invalid e-mail address 'ops@'"),
    (["--channel", "email", "--email", "ops@example.com", "--email", "x y@z.com"], "invalid e-mail address"),
    (["--channel", "pager"], "unknown alert channel 'pager'"),
    (["--channel", "webhook"], "--webhook-url must be an http(s) URL, got None"),
    (["--near-percentage", "-5"], "near_threshold_percentage must be a non-negative number"),
    (["--action", "stop"], "--action applies to breach alerts only"),
])
def test_enqueue_bad_input_is_one_clear_line_and_queues_nothing(run_cli, tmp_path, args, message):
    path = tmp_path / "hoc.db"
    result = run_cli(path, *ENQUEUE, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not path.exists()


def test_enqueue_negative_threshold(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    args = [a if a != "100" else "-100" for a in ENQUEUE]
    result = run_cli(path, *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --threshold must be a non-negative number, got -100.0"
    assert not path.exists()


def test_enqueue_zero_threshold_is_bad_input_not_a_silent_nothing(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    result = run_cli(path, *[a if a != "100" else "0" for a in ENQUEUE])
    assert result.exit_code == 2 and result.stderr.strip() == "error: --threshold must be above 0"
    assert queue_rows(path) == []


def test_enqueue_queues_a_signed_webhook_and_never_prints_the_secret(run_cli, tmp_path, receiver):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    result = run_cli(path, *ENQUEUE, "--channel", "ui", "--channel", "webhook",
                     "--webhook-url", receiver.url, "--webhook-secret", SECRET, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["alert_sent"], data["channels"], data["signal_type"]) == (True, ["ui", "webhook"], "near")
    (row,) = queue_rows(path)
    body = canonical_json(row.payload).encode()
    assert row.destination["headers"]["X-Signature"] == \
        "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    sent = run_cli(path, "alerts", "send", "--once", "--json")
    assert sent.exit_code == 0 and json.loads(sent.stdout)["sent"] == 1
    stats = run_cli(path, "alerts", "stats", "--all-tenants")
    for output in (result.output, sent.output, stats.output):
        assert SECRET not in output
    ((headers, received),) = receiver.bodies
    assert headers["X-Signature"] == row.destination["headers"]["X-Signature"]


def test_webhook_secret_from_the_environment(tmp_path):
    from click.testing import CliRunner

    import cli

    path = tmp_path / "hoc.db"
    init_database(str(path)).close()
    result = CliRunner(env={"HOC_ALERT_WEBHOOK_SECRET": SECRET}).invoke(
        cli.cli, ["--db", str(path), *ENQUEUE, "--breach", "--action", "stop",
                  "--channel", "webhook", "--webhook-url", "https://hooks.example.com/x"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    (row,) = queue_rows(path)
    assert row.destination["headers"]["X-Signature"].startswith("sha256=")
    assert row.payload["action_taken"] == "stop" and row.alert_type == "threshold_breach"


def test_a_near_alert_below_the_near_threshold_is_not_sent(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    args = [a if a != "85" else "79.9" for a in ENQUEUE]
    result = run_cli(path, *args, "--channel", "webhook", "--webhook-url", "http://127.0.0.1:1/",
                     "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["alert_sent"] is False and "below the near threshold (80%)" in data["reason"]
    assert not path.exists() or queue_rows(path) == []


def test_stats_send_with_progress_retry_failed(run_cli, tmp_path, receiver):
    path = tmp_path / "hoc.db"
    add_alerts(path, 150, channel="webhook", destination={"url": receiver.url})
    add_alerts(path, 1, channel="slack", destination={"url": receiver.url}, status="failed",
               attempts=10)
    stats = json.loads(run_cli(path, "alerts", "stats", "--all-tenants", "--json").stdout)
    assert (stats["pending"], stats["sent"], stats["failed"]) == (150, 0, 1)
    assert stats["oldest_pending_age_seconds"] >= 0
    sent = run_cli(path, "alerts", "send", "--batch", "40", "--json")
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout) == {"processed": 150, "sent": 150, "retried": 0, "failed": 0,
                                       "lost": 0, "errors": 0}
    assert "sending alerts" in sent.stderr
    assert len(receiver.bodies) == 150
    revived = run_cli(path, "alerts", "retry-failed", "--max-retries", "2", "--json")
    assert json.loads(revived.stdout) == {"revived": 1}
    small = run_cli(path, "alerts", "send")
    assert small.exit_code == 0 and "sending alerts" not in small.stderr
    assert "sent       1" in small.stdout
    stats = json.loads(run_cli(path, "alerts", "stats", "--all-tenants", "--json").stdout)
    assert (stats["pending"], stats["sent"], stats["failed"], stats["oldest_pending"]) == (0, 151, 0, None)


def test_purge_deletes_old_delivered_alerts_in_steps(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    old = utcnow() - timedelta(days=40)
    add_alerts(path, 2500, status="sent", created_at=old)
    add_alerts(path, 3, status="pending", created_at=old)
    add_alerts(path, 4, status="sent")
    result = run_cli(path, "alerts", "purge", "--days", "30", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["deleted"] == 2500 and data["statuses"] == ["sent", "failed"]
    assert "purging alerts" in result.stderr
    assert len(queue_rows(path)) == 7
    bad = run_cli(path, "alerts", "purge", "--days", "-1")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")


def test_send_batch_must_be_positive(run_cli, tmp_path):
    result = run_cli(tmp_path / "hoc.db", "alerts", "send", "--batch", "0")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_guard_status_shows_a_freeze_and_snapshot_counts_today(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    before = json.loads(run_cli(path, "guard", "status", "--tenant", "acme", "--json").stdout)
    assert before["is_frozen"] is False and before["open_incidents"] == 0
    db = connect_database(str(path))
    coordinator = TransactionCoordinator(db)
    with coordinator.transaction() as tx:
        writer = GuardWriteDriver(tx)
        state, _ = writer.get_or_create_killswitch_state("acme", "tenant", "acme")
        writer.freeze_killswitch(state, "ops@acme", "runaway spend")
    assert run_cli(path, "run", "complete", "run-1", "--tenant", "acme", "--status",
                   "failed").exit_code == 0
    after = run_cli(path, "guard", "status", "--tenant", "acme", "--json")
    data = json.loads(after.stdout)
    assert (data["is_frozen"], data["frozen_by"], data["open_incidents"]) == (True, "ops@acme", 1)
    table = run_cli(path, "guard", "status", "--tenant", "acme")
    assert "is_frozen           True" in table.stdout
    snapshot = json.loads(run_cli(path, "guard", "snapshot", "--tenant", "acme", "--json").stdout)
    assert (snapshot["incidents_today"], snapshot["runs_today"]) == (1, 0)
    other = json.loads(run_cli(path, "guard", "status", "--tenant", "other", "--json").stdout)
    assert other["is_frozen"] is False and other["open_incidents"] == 0


@pytest.mark.parametrize("args, message", [
    (["guard", "status"], "Missing option '--tenant'"),
    (["guard", "snapshot", "--tenant", "  "], "'--tenant': must not be empty"),
])
def test_guard_bad_input(run_cli, tmp_path, args, message):
    path = tmp_path / "never.db"
    result = run_cli(path, *args)
    assert result.exit_code == 2 and message in result.stderr
    assert not path.exists()


def test_an_operator_sees_which_alerts_failed_for_a_tenant_and_why(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    add_alerts(path, 1, tenant_id="acme", status="failed", attempts=10, channel="webhook",
               destination={"url": "https://hooks.acme.test/x"}, last_error="HTTP 503 from receiver")
    add_alerts(path, 1, tenant_id="acme", channel="email", destination={"recipients": ["ops@acme.test"]},
               created_at=utcnow() - timedelta(days=3))
    add_alerts(path, 1, tenant_id="globex", status="failed", last_error="globex's own")
    refused = run_cli(path, "alerts", "list")
    assert refused.exit_code == 2 and "--all-tenants" in refused.stderr
    failed = json.loads(run_cli(path, "alerts", "list", "--tenant", "acme", "--status", "failed", "--json").stdout)
    assert [(a["tenant_id"], a["attempts"], a["last_error"]) for a in failed] == \
        [("acme", 10, "HTTP 503 from receiver")]
    table = run_cli(path, "alerts", "list", "--tenant", "acme").stdout
    assert "NEXT_ATTEMPT_AT" in table and "HTTP 503 from receiver" in table and "globex" not in table
    for args, count in ((["--channel", "email"], 1), (["--destination", "hooks.acme"], 1),
                        (["--since", "1d"], 1), (["--since", "2000-01-01"], 2)):
        listed = run_cli(path, "alerts", "list", "--tenant", "acme", *args, "--json")
        assert len(json.loads(listed.stdout)) == count, args
    assert len(json.loads(run_cli(path, "alerts", "list", "--all-tenants", "--json").stdout)) == 3
    bad = run_cli(path, "alerts", "list", "--tenant", "acme", "--since", "yesterday")
    assert bad.exit_code == 2 and "neither an ISO time" in bad.stderr
    stats = json.loads(run_cli(path, "alerts", "stats", "--tenant", "acme", "--json").stdout)
    assert (stats["failed"], stats["pending"]) == (1, 1)
    shown = json.loads(run_cli(path, "alerts", "show", failed[0]["id"], "--tenant", "acme", "--json").stdout)
    assert shown["destination"] == {"url": "https://hooks.acme.test/x"} and shown["being_delivered"] is False
    other = run_cli(path, "alerts", "show", failed[0]["id"], "--tenant", "globex")
    assert other.exit_code == 1 and "not found for tenant 'globex'" in other.stderr


def test_retry_and_delete_one_alert_but_not_one_being_delivered(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    add_alerts(path, 1, tenant_id="acme", status="failed", attempts=10, last_error="boom")
    add_alerts(path, 1, tenant_id="acme", claim_token="sender-1", next_attempt_at=utcnow() + timedelta(minutes=5))
    busy, failed = sorted(queue_rows(path), key=lambda a: a.status != "pending")
    retried = json.loads(run_cli(path, "alerts", "retry", failed.id, "--tenant", "acme", "--json").stdout)
    assert (retried["status"], retried["max_attempts"]) == ("pending", 11)
    for command in ("retry", "delete"):
        result = run_cli(path, "alerts", command, busy.id, "--tenant", "acme")
        assert result.exit_code == 1 and "is being delivered" in result.stderr, result.stderr
    assert run_cli(path, "alerts", "delete", failed.id, "--tenant", "acme").exit_code == 0
    assert [a.id for a in queue_rows(path)] == [busy.id]


def test_two_cli_enqueues_with_a_stored_config_throttle_the_second(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    args = [a for a in ENQUEUE if a not in ("--policy", "budget")]
    missing = run_cli(path, *args, "--config", "budget-ui")
    assert missing.exit_code == 1 and "alerts config set" in missing.stderr
    stored = run_cli(path, "alerts", "config", "set", "budget-ui", "--tenant", "acme", "--policy", "budget",
                     "--min-interval", "300", "--json")
    assert stored.exit_code == 0 and json.loads(stored.stdout)["min_alert_interval_seconds"] == 300
    first = json.loads(run_cli(path, *args, "--config", "budget-ui", "--json").stdout)
    second = run_cli(path, *args, "--config", "budget-ui", "--json")
    assert first["alert_sent"] is True and second.exit_code == 0
    assert json.loads(second.stdout)["alert_sent"] is False and "throttled" in json.loads(second.stdout)["reason"]
    shown = json.loads(run_cli(path, "alerts", "config", "show", "budget-ui", "--tenant", "acme", "--json").stdout)
    assert shown["alerts_sent_count"] == 1 and shown["last_alert_at"] is not None
    history = json.loads(run_cli(path, "alerts", "history", "--tenant", "acme", "--json").stdout)
    assert [h["alert_sent"] for h in history] == [False, True]
    mixed = run_cli(path, *args, "--config", "budget-ui", "--channel", "webhook")
    assert mixed.exit_code == 2 and "drop --channel" in mixed.stderr
