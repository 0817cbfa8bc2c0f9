"""Threshold alerts: validation, throttling edges, breach bypass, channels queued in the transaction."""
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from hoc_drivers.testing import refuse_writes
from hoc_drivers.alert_emitter import (AlertConfig, AlertConfigReader, AlertConfigWriter, AlertEmitter,
                                      NotificationReader, NotificationWriter, ThresholdSignal)
from hoc_drivers.models.alerts import AlertQueueItem, Notification, canonical_json

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "s3cr3t-webhook-key"


def config(**fields):
    return AlertConfig(**{"policy_id": "POL-001", "tenant_id": "tenant-001", **fields})


def signal(**fields):
    return ThresholdSignal(**{"tenant_id": "tenant-001", "run_id": "run-1", "policy_id": "POL-001",
                              "metric": "token_usage", "current_value": 8000,
                              "threshold_value": 10000, "timestamp": T0, **fields})


def all_channels(**fields):
    return config(enabled_channels=["ui", "webhook", "slack", "email"],
                  webhook_url="https://hooks.example.com/alert", webhook_secret=SECRET,
                  slack_webhook_url="http://127.0.0.1:8080/slack", slack_channel="#alerts",
                  email_recipients=["admin@example.com", "alerts@example.com"], **fields)


@pytest.fixture
def emit(hoc_coordinator):
    """emit("near" | "breach", signal, config, *args) inside one coordinator transaction."""
    def run(kind, sig, cfg, *args):
        with hoc_coordinator.transaction() as tx:
            emitter = AlertEmitter(tx)
            if kind == "near":
                return emitter.emit_near_threshold(sig, cfg, *args)
            return emitter.emit_breach(sig, cfg, *args)
    return run


def queued(db):
    return list(AlertQueueItem.select().order_by(AlertQueueItem.channel).execute(db))


def test_config_defaults_and_helpers():
    cfg = config()
    assert (cfg.near_threshold_percentage, cfg.breach_alert_enabled, cfg.enabled_channels,
            cfg.min_alert_interval_seconds, cfg.max_alerts_per_run, cfg.email_recipients) == \
        (80, True, ["ui"], 60, 10, [])
    assert [cfg.should_alert(p) for p in (79.9, 80.0, 90.0)] == [False, True, True]
    assert cfg.is_throttled(T0) is False and cfg.can_send_alert(0, T0) is True
    cfg.record_alert_sent(T0)
    assert (cfg.last_alert_at, cfg.alerts_sent_count) == (T0, 1)
    assert cfg.is_throttled(T0 + timedelta(seconds=1)) is True


def test_signal_percentage():
    assert signal().percentage == 80.0
    assert signal(threshold_value=0).percentage == 0.0
    assert signal(threshold_value=0, signal_type="breach").percentage == 100.0


def test_the_secret_is_never_shown():
    cfg = all_channels()
    assert SECRET not in repr(cfg)
    assert SECRET not in json.dumps(cfg.to_dict(), default=str)
    assert cfg.to_dict()["webhook_secret_set"] is True


@pytest.mark.parametrize("fields, message", [
    ({"enabled_channels": ["sms"]}, "unknown alert channel 'sms'"),
    ({"enabled_channels": ["webhook"], "webhook_url": "ftp://example.com/x"}, "webhook_url must be an http"),
    ({"enabled_channels": ["webhook"], "webhook_url": "javascript:alert(1)"}, "webhook_url must be an http"),
    ({"enabled_channels": ["webhook"], "webhook_url": "http://"}, "webhook_url must be an http"),
    ({"enabled_channels": ["webhook"], "webhook_url": "http://a b.com"}, "webhook_url must be an http"),
    ({"enabled_channels": ["webhook"]}, "webhook_url must be an http"),
    ({"enabled_channels": ["slack"], "slack_webhook_url": "file:///etc/passwd"}, "slack_webhook_url"),
    ({"enabled_channels": ["email"]}, "email_recipients is empty"),
    ({"email_recipients": ["not-an-address"]}, "invalid e-mail address"),
    ({"email_recipients": ["a@b"]}, "invalid e-mail address"),
    ({"email_recipients": ["a b@example.com"]}, "invalid e-mail address"),
    ({"email_recipients": ["a@example.com\r\nBcc: x@evil.com"]}, "invalid e-mail address"),
    ({"email_recipients": ["Name <a@example.com>"]}, "invalid e-mail address"),
    ({"near_threshold_percentage": -1}, "near_threshold_percentage must be a non-negative"),
    ({"min_alert_interval_seconds": -0.5}, "min_alert_interval_seconds"),
    ({"max_alerts_per_run": -1}, "max_alerts_per_run"),
    ({"max_alerts_per_run": 2.5}, "max_alerts_per_run must be a non-negative integer"),
    ({"near_threshold_percentage": float("nan")}, "near_threshold_percentage"),
    ({"tenant_id": ""}, "tenant_id is required"),
    ({"slack_channel": "#a\nb"}, "control characters"),
])
def test_bad_config_is_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        config(**fields)


@pytest.mark.parametrize("fields, message", [
    ({"threshold_value": -1}, "threshold_value must be a non-negative"),
    ({"current_value": -5}, "current_value must be a non-negative"),
    ({"signal_type": "maybe"}, "signal_type must be 'near' or 'breach'"),
    ({"metric": "cost\r\nX-Injected: 1"}, "control characters"),
    ({"run_id": ""}, "run_id is required"),
])
def test_bad_signal_is_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        signal(**fields)


def test_a_config_made_invalid_later_queues_nothing(emit, hoc_db):
    cfg = all_channels()
    cfg.enabled_channels.append("pager")
    with pytest.raises(ValueError, match="unknown alert channel 'pager'"):
        emit("near", signal(), cfg)
    cfg = all_channels()
    cfg.email_recipients.append("bad@")
    with pytest.raises(ValueError, match="invalid e-mail address"):
        emit("breach", signal(signal_type="breach"), cfg, "stop")
    sig = signal()
    sig.threshold_value = -1
    with pytest.raises(ValueError, match="threshold_value"):
        emit("near", sig, all_channels())
    with pytest.raises(ValueError, match="does not match config"):
        emit("near", signal(tenant_id="someone-else"), all_channels())
    assert queued(hoc_db) == [] and Notification.select().count(hoc_db) == 0


def test_near_alert_throttling_interval_boundary_is_exact(emit, hoc_db):
    cfg = config()
    with freeze_time(T0):
        assert emit("near", signal(), cfg) is True
    assert (cfg.last_alert_at, cfg.alerts_sent_count) == (T0, 1)
    with freeze_time(T0 + timedelta(seconds=60) - timedelta(microseconds=1)):
        assert emit("near", signal(), cfg) is False
    assert Notification.select().count(hoc_db) == 1
    with freeze_time(T0 + timedelta(seconds=60)):
        assert emit("near", signal(), cfg) is True
    assert cfg.alerts_sent_count == 2 and Notification.select().count(hoc_db) == 2


def test_naive_timestamps_read_back_from_sqlite_are_taken_as_utc(emit, hoc_db):
    naive = T0.replace(tzinfo=None)
    cfg = all_channels(last_alert_at=naive)
    sig = signal(timestamp=naive)
    with freeze_time(T0 + timedelta(seconds=30)):
        assert emit("near", sig, cfg) is False  # throttled, not a TypeError
    with freeze_time(T0 + timedelta(seconds=60)):
        assert emit("near", sig, cfg) is True
    slack, webhook = (a for a in queued(hoc_db) if a.channel in ("webhook", "slack"))
    assert webhook.payload["timestamp"] == T0.isoformat()
    assert slack.payload["attachments"][0]["ts"] == int(T0.timestamp())


def test_near_alert_max_per_run_boundary_is_exact(emit):
    with freeze_time(T0):
        assert emit("near", signal(), config(max_alerts_per_run=3), 2) is True
        assert emit("near", signal(), config(max_alerts_per_run=3), 3) is False
        assert emit("near", signal(), config(max_alerts_per_run=0), 0) is False
        assert emit("near", signal(), config(min_alert_interval_seconds=0), 0) is True


def test_breach_bypasses_throttling_and_does_not_count(emit):
    cfg = all_channels(max_alerts_per_run=0, last_alert_at=T0, alerts_sent_count=4)
    sig = signal(signal_type="breach", current_value=12000)
    with freeze_time(T0 + timedelta(seconds=1)):
        assert cfg.can_send_alert(0) is False
        assert emit("breach", sig, cfg, "stop") is True
    assert sig.alert_sent is True and sig.alert_channels == ["ui", "webhook", "slack", "email"]
    assert sig.alert_sent_at == T0 + timedelta(seconds=1)
    assert (cfg.last_alert_at, cfg.alerts_sent_count) == (T0, 4)


def test_disabled_alerts_send_nothing(emit, hoc_db):
    assert emit("near", signal(), config(near_threshold_enabled=False)) is False
    assert emit("breach", signal(signal_type="breach"), config(breach_alert_enabled=False), "stop") is False
    assert queued(hoc_db) == [] and Notification.select().count(hoc_db) == 0


def test_ui_channel_writes_a_notification(emit, hoc_db):
    with freeze_time(T0):
        assert emit("breach", signal(signal_type="breach", current_value=12000), config(), "pause")
    (note,) = Notification.select().execute(hoc_db)
    assert (note.tenant_id, note.notification_type, note.title, note.run_id, note.policy_id) == \
        ("tenant-001", "breach", "Policy BREACH: token_usage", "run-1", "POL-001")
    assert (note.current_value, note.threshold_value, note.percentage, note.action_taken) == \
        (12000, 10000, 120.0, "pause")
    assert note.created_at == T0 and queued(hoc_db) == []


def test_network_channels_are_queued_in_the_callers_transaction(emit, hoc_db):
    sig = signal()
    with freeze_time(T0):
        assert emit("near", sig, all_channels()) is True
    email, slack, webhook = queued(hoc_db)
    assert {a.status for a in (email, slack, webhook)} == {"pending"}
    assert {a.tenant_id for a in (email, slack, webhook)} == {"tenant-001"}
    assert {a.alert_type for a in (email, slack, webhook)} == {"threshold_near"}
    assert webhook.destination["url"] == "https://hooks.example.com/alert"
    assert webhook.payload == {
        "event_type": "threshold_near", "signal_id": sig.signal_id, "tenant_id": "tenant-001",
        "run_id": "run-1", "policy_id": "POL-001", "metric": "token_usage",
        "current_value": 8000, "threshold_value": 10000, "percentage": 80.0,
        "step_index": None, "action_taken": None, "timestamp": T0.isoformat()}
    body = canonical_json(webhook.payload).encode()
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert webhook.destination["headers"] == {"X-Signature": expected}
    assert slack.destination == {"url": "http://127.0.0.1:8080/slack"}
    assert slack.payload["channel"] == "#alerts"
    (attachment,) = slack.payload["attachments"]
    assert attachment["color"] == "#ffcc00"
    assert attachment["title"].endswith("Policy NEAR THRESHOLD: token_usage")
    assert {f["title"]: f["value"] for f in attachment["fields"]}["Percentage"] == "80.0%"
    assert attachment["ts"] == int(T0.timestamp())
    assert email.destination == {"recipients": ["admin@example.com", "alerts@example.com"]}
    assert email.payload["subject"] == "[AOS Alert] NEAR THRESHOLD: token_usage"
    assert "Percentage: 80.0%" in email.payload["body"]


def test_the_secret_is_stored_nowhere(emit, hoc_db):
    emit("breach", signal(signal_type="breach"), all_channels(), "kill")
    for table in ("costsim_alert_queue", "notifications"):
        for row in hoc_db.execute_sql(f"SELECT * FROM {table}"):
            assert SECRET not in json.dumps(row, default=str)


def test_a_rolled_back_transaction_queues_nothing(hoc_coordinator, hoc_db):
    with pytest.raises(RuntimeError):
        with hoc_coordinator.transaction() as tx:
            assert AlertEmitter(tx).emit_breach(signal(signal_type="breach"), all_channels(), "stop")
            raise RuntimeError("caller fails after alerting")
    assert queued(hoc_db) == [] and Notification.select().count(hoc_db) == 0


def test_a_failing_channel_fails_alone(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        refuse_writes(tx, "notifications", "notifications unavailable")
    sig = signal()
    with hoc_coordinator.transaction() as tx:
        assert AlertEmitter(tx).emit_near_threshold(sig, all_channels()) is True
    assert sig.alert_channels == ["webhook", "slack", "email"]
    assert len(queued(hoc_db)) == 3 and Notification.select().count(hoc_db) == 0


def test_channel_names_are_normalised_and_deduplicated():
    cfg = config(enabled_channels=["UI", "ui", "Slack"], slack_webhook_url="https://hooks.slack.com/x")
    assert cfg.enabled_channels == ["ui", "slack"]


def test_emit_decides_from_the_signal(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        below = AlertEmitter(tx).emit(signal(current_value=7999), config())
        with pytest.raises(ValueError, match="action_taken applies to breach alerts only"):
            AlertEmitter(tx).emit(signal(), config(), "stop")
    assert below["alert_sent"] is False and below["channels"] == []
    assert below["reason"] == "below the near threshold (80%)"
    assert Notification.select().count(hoc_db) == 0
    with hoc_coordinator.transaction() as tx:
        near = AlertEmitter(tx).emit(signal(), config())
        breach = AlertEmitter(tx).emit(signal(signal_type="breach", current_value=12000), config(), "stop")
    assert (near["alert_sent"], near["channels"], near["percentage"]) == (True, ["ui"], 80.0)
    assert (breach["alert_sent"], breach["signal_type"], "reason" in breach) == (True, "breach", False)
    assert Notification.select().count(hoc_db) == 2


def test_a_stored_config_throttles_across_transactions_and_keeps_the_signals(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        AlertConfigWriter(tx).save("tenant-001", "tokens", config(max_alerts_per_run=2,
                                                                  min_alert_interval_seconds=60))

    def emit_at(moment, **fields):
        with freeze_time(moment), hoc_coordinator.transaction() as tx:  # a fresh emitter each time
            return AlertEmitter(tx).emit_stored("tokens", signal(**fields))

    assert emit_at(T0)["alert_sent"] is True
    throttled = emit_at(T0 + timedelta(seconds=59))
    assert throttled["alert_sent"] is False and throttled["reason"].startswith("throttled")
    assert emit_at(T0 + timedelta(seconds=60))["alert_sent"] is True
    assert emit_at(T0 + timedelta(seconds=200))["alert_sent"] is False  # the run had its 2
    assert emit_at(T0 + timedelta(seconds=201), run_id="run-2")["alert_sent"] is True
    stored = AlertConfigReader(hoc_db).get("tenant-001", "tokens")
    assert (stored["alerts_sent_count"], stored["last_alert_at"]) == (3, T0 + timedelta(seconds=201))
    history = AlertConfigReader(hoc_db).list_signals("tenant-001", run_id="run-1")
    assert [s.alert_sent for s in history] == [False, True, False, True]
    assert Notification.select().count(hoc_db) == 3
    with pytest.raises(LookupError, match="no alert config 'other'"), hoc_coordinator.transaction() as tx:
        AlertEmitter(tx).emit_stored("other", signal())


def test_saving_a_config_again_replaces_settings_and_keeps_throttling_state(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        AlertConfigWriter(tx).save("tenant-001", "tokens", config())
        AlertEmitter(tx).emit_stored("tokens", signal())
        AlertConfigWriter(tx).save("tenant-001", "tokens", config(near_threshold_percentage=90))
    stored = AlertConfigReader(hoc_db).get("tenant-001", "tokens")
    assert (stored["near_threshold_percentage"], stored["alerts_sent_count"]) == (90, 1)
    assert AlertConfigReader(hoc_db).get("tenant-002", "tokens") is None


def test_notifications_are_read_per_tenant_and_acknowledged_once(hoc_coordinator, hoc_db, emit):
    emit("near", signal(), config())
    emit("breach", signal(signal_type="breach"), config(), "stop")
    emit("near", signal(tenant_id="other"), config(tenant_id="other"))
    reader = NotificationReader(hoc_db)
    newest, oldest = reader.list("tenant-001")
    assert (newest.notification_type, oldest.notification_type) == ("breach", "near_threshold")
    with freeze_time(T0), hoc_coordinator.transaction() as tx:
        assert NotificationWriter(tx).ack("tenant-001", oldest.id).read_at == T0
        assert NotificationWriter(tx).ack("other", oldest.id) is None
    with hoc_coordinator.transaction() as tx:
        assert NotificationWriter(tx).ack("tenant-001", oldest.id).read_at == T0  # kept
    assert [n.id for n in reader.list("tenant-001", unread=True)] == [newest.id]
    with pytest.raises(ValueError, match="tenant_id is required"):
        reader.list("")
