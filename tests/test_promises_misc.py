"""README promises that had no test of their own (see tests/test_promises_index.py): each test
is named after the promise it pins and runs against real SQLite and real servers on 127.0.0.1."""
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

import cli
from hoc_drivers.alert_driver import AlertDriver
from hoc_drivers.models.alerts import AlertQueueItem
from tests.test_alert_sender import alert_rows

SMTP_PASSWORD = "smtp-pa55-never-shown"


def queue_alert(coordinator, channel, destination, payload):
    """Queue one alert for the network in its own coordinator transaction."""
    with coordinator.transaction() as tx:
        AlertDriver(tx).insert_alert(None, payload, "test", channel=channel, destination=destination)


def aware(moment):
    """`moment` as an aware UTC datetime (rows may read back naive UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def test_delivery_time_alerts_send_claims_for_ten_alerts_times_a_10_second_deadline_plus_5_by_default(
        hoc_db, hoc_coordinator, receiver, run_cli):
    """README "Delivery time is bounded": `alerts send --timeout` defaults to 10 s, and a sender
    claims its batch (10 by default) for batch size x (deadline + 5 s)."""
    queue_alert(hoc_coordinator, "webhook", {"url": receiver.url}, {"n": 1})
    leases = []
    receiver.on_request = lambda: leases.append(
        AlertQueueItem.select(AlertQueueItem.next_attempt_at).scalar(hoc_db))
    before = datetime.now(timezone.utc)
    result = run_cli(hoc_db.database, "alerts", "send", "--once", "--json")
    after = datetime.now(timezone.utc)
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["sent"] == 1
    (lease_end,) = leases
    lease = timedelta(seconds=10 * (10 + 5))
    assert before + lease - timedelta(seconds=1) <= aware(lease_end) <= after + lease + timedelta(seconds=1)


@pytest.mark.parametrize("smtp_server", [{"extensions": ["AUTH PLAIN LOGIN"]}], indirect=True)
def test_secrets_stay_out_of_logs_the_smtp_password_is_never_logged_or_printed_by_alerts_send(
        hoc_db, hoc_coordinator, smtp_server, run_cli, monkeypatch, caplog):
    """README "Secrets stay out of logs": with the SMTP password in hand (a server offering AUTH
    but no STARTTLS), `--debug alerts send` logs, prints and sends no trace of it."""
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(smtp_server.server_address[1]))
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    queue_alert(hoc_coordinator, "email", {"recipients": ["ops@example.com"]}, {"subject": "s", "body": "b"})
    with caplog.at_level(logging.DEBUG):
        result = run_cli(hoc_db.database, "--debug", "alerts", "send", "--once", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    assert json.loads(result.stdout)["retried"] == 1
    (row,) = alert_rows(hoc_db)
    assert row.last_error == "refusing to send SMTP credentials without STARTTLS"
    assert caplog.records  # --debug did log the delivery
    for shown in (caplog.text, result.stdout, result.stderr, row.last_error, " ".join(smtp_server.commands)):
        assert SMTP_PASSWORD not in shown


def test_secrets_stay_out_of_logs_settings_shows_the_smtp_password_as_stars(monkeypatch):
    """README "Settings in one place" and "Secrets stay out of logs": `hoc-drivers settings`
    shows the SMTP password's source but the value only as ***."""
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    table = CliRunner().invoke(cli.cli, ["settings"])
    listed = CliRunner().invoke(cli.cli, ["settings", "--json"])
    assert table.exit_code == listed.exit_code == 0, table.output + listed.output
    assert SMTP_PASSWORD not in table.output + listed.output
    (line,) = [line for line in table.stdout.splitlines() if line.startswith("smtp.password")]
    assert line.split()[1:4] == ["***", "env", "$SMTP_PASSWORD"]
    (entry,) = [entry for entry in json.loads(listed.stdout) if entry["name"] == "smtp.password"]
    assert (entry["value"], entry["source"]) == ("***", "env $SMTP_PASSWORD")
