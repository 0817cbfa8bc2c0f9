"""Security: tenant isolation, injection strings, secrets, file mode, fuzzed CLI arguments."""
import hashlib
import json
import logging
import os
import re
import stat

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli
from hoc_drivers.testing import content_snapshot, schema_snapshot
from hoc_drivers import cross_domain, decisions, ledger
from hoc_drivers.cross_domain import GovernanceError
from hoc_drivers.alert_driver import AlertQueueReader
from hoc_drivers.cli_docs import command_paths
from hoc_drivers.governance_signal_driver import GovernanceSignalReader, GovernanceSignalWriter
from hoc_drivers.guard_cache import GuardCache
from hoc_drivers.guard_read_driver import GuardReadDriver
from hoc_drivers.guard_write_driver import GuardReader, GuardWriteDriver
from hoc_drivers.idempotency import IdempotencyReader, claim_or_get
from hoc_drivers.run_completion import TransactionFailed
from hoc_drivers.transaction_coordinator import RunCompletionTransaction
from hoc_drivers.worker_write_service_async import WorkerRunReader, WorkerWriteService

pytestmark = pytest.mark.filterwarnings("ignore")

INJECTIONS = ["x'); DROP TABLE incidents; --", "\" OR 1=1 --", "a%' OR tenant_id LIKE '%",
              "Robert'); DELETE FROM runs WHERE ('1'='1", "ünïcödé ☃ ' \""]
NUL = "null\x00byte"  # refused on both backends (PostgreSQL cannot store it)


def seed_tenant(coordinator, tenant):
    """One of everything for `tenant`; returns the ids."""
    with coordinator.transaction() as tx:
        incident = cross_domain.create_incident_from_cost_anomaly(
            tx, tenant, f"anomaly-{tenant}", "USER_SPIKE", "HIGH", 5000, 1000)
        writer = GuardWriteDriver(tx)
        state, _ = writer.get_or_create_killswitch_state(tenant, "tenant", tenant)
        writer.freeze_killswitch(state, "ops", "test")
        claim = claim_or_get(tx, tenant, "shared-key")
        WorkerWriteService(tx).upsert_worker_run(tenant, f"worker-{tenant}", {"status": "queued"})
    RunCompletionTransaction(coordinator).execute(tenant, f"run-{tenant}", "failed")
    with coordinator.transaction() as tx:
        decisions.emit_policy_decision(tx, tenant, f"run-{tenant}", "p", evaluated=True,
                                       violated=True)
    return {"incident": incident, "run": claim.run_id, "worker": f"worker-{tenant}"}


def test_tenants_never_see_each_other_through_the_read_apis(hoc_db, hoc_coordinator):
    a = seed_tenant(hoc_coordinator, "tenant-a")
    b = seed_tenant(hoc_coordinator, "tenant-b")
    guard = GuardReader(hoc_db)
    assert {i.tenant_id for i in guard.list_incidents("tenant-a")} == {"tenant-a"}
    assert guard.get_incident("tenant-a", b["incident"]) is None
    assert guard.get_killswitch_state("tenant-a", "tenant", "tenant-b") is None
    assert IdempotencyReader(hoc_db).check_idempotency("tenant-a", "shared-key").run_id == a["run"]
    assert a["run"] != b["run"]
    assert {d.tenant_id for d in decisions.list_decisions(hoc_db, "tenant-a")} == {"tenant-a"}
    assert WorkerRunReader(hoc_db).get_worker_run("tenant-a", b["worker"]) is None
    with hoc_coordinator.transaction() as tx:
        GuardWriteDriver(tx).unfreeze_killswitch(
            guard.get_killswitch_state("tenant-b", "tenant", "tenant-b"), "ops")
    status = GuardReadDriver(hoc_db, GuardCache()).compute_status("tenant-a")
    assert status["is_frozen"] is True  # b's unfreeze did not touch a


def test_tenants_never_see_each_other_through_the_cli(hoc_db, hoc_coordinator, run_cli):
    seed_tenant(hoc_coordinator, "tenant-a")
    b = seed_tenant(hoc_coordinator, "tenant-b")
    path = hoc_db.database
    listed = json.loads(run_cli(path, "incidents", "list", "--tenant", "tenant-a", "--json").output)
    assert listed and {i["tenant_id"] for i in listed} == {"tenant-a"}
    listed = json.loads(run_cli(path, "decisions", "list", "--tenant", "tenant-a", "--json").output)
    assert listed and {d["tenant_id"] for d in listed} == {"tenant-a"}
    result = run_cli(path, "incidents", "ack", b["incident"], "--tenant", "tenant-a")
    assert result.exit_code != 0
    assert GuardReader(hoc_db).get_incident("tenant-b", b["incident"]).status == "open"
    status = json.loads(run_cli(path, "killswitch", "status", "--tenant", "tenant-a",
                                "--entity-type", "tenant", "--entity-id", "tenant-b", "--json").output)
    assert status["is_frozen"] is False


def schema_of(db):
    return sorted((kind, name) for kind, name, _ in schema_snapshot(db))


@pytest.mark.parametrize("evil", INJECTIONS)
def test_injection_strings_are_stored_verbatim_and_harmless(hoc_db, hoc_coordinator, evil):
    before = schema_of(hoc_db)
    result = RunCompletionTransaction(hoc_coordinator).execute(evil, evil, "failed",
                                                               error_message=evil)
    with hoc_coordinator.transaction() as tx:
        incident = cross_domain.create_incident_from_cost_anomaly(tx, evil, evil, evil, evil, 10, 1)
        GovernanceSignalWriter(tx).record_signal(evil, "MANUAL_OVERRIDE", "BLOCKED", evil, evil)
        claim = claim_or_get(tx, evil, evil, evil, evil)
        ledger.emit_signal(tx, evil, evil, {evil: evil}, evil, field=evil)
    guard = GuardReader(hoc_db)
    stored = guard.get_incident(evil, result.incident_result.result_id)
    assert (stored.tenant_id, stored.source_run_id, stored.error_message) == (evil, evil, evil)
    assert guard.get_incident(evil, incident).trigger_value is not None
    assert GovernanceSignalReader(hoc_db).get_active_signals(evil)[0].reason == evil
    assert IdempotencyReader(hoc_db).check_idempotency(evil, evil).run_id == claim.run_id
    signal = ledger.get_signals(hoc_db, artifact=evil)[0]
    assert (signal["field"], signal["evidence"]) == (evil, {evil: evil})
    assert schema_of(hoc_db) == before
    assert [i.tenant_id for i in guard.list_incidents("tenant-x")] == []


NUL_WRITES = [  # a write with NUL in one text value: the field its refusal names, the driver's bad-input error
    ("tenant_id", GovernanceError,
     lambda tx: cross_domain.create_incident_from_cost_anomaly(tx, NUL, "a", "USER_SPIKE", "HIGH", 10, 1)),
    ("description", GovernanceError,
     lambda tx: cross_domain.create_incident_from_cost_anomaly(tx, "t", "a", "USER_SPIKE", "HIGH", 10, 1,
                                                               description=NUL)),
    ("anomaly_id", GovernanceError,
     lambda tx: cross_domain.create_incident_from_cost_anomaly(tx, "t", NUL, "USER_SPIKE", "HIGH", 10, 1)),
    ("anomaly_type", GovernanceError,
     lambda tx: cross_domain.create_incident_from_cost_anomaly(tx, "t", "a", NUL, "HIGH", 10, 1)),
    ("entity_type", GovernanceError,
     lambda tx: cross_domain.create_incident_from_cost_anomaly(tx, "t", "a", "USER_SPIKE", "HIGH", 10, 1,
                                                               entity_type=NUL, entity_id="x")),
    ("entity_id", GovernanceError,
     lambda tx: cross_domain.create_incident_from_cost_anomaly(tx, "t", "a", "USER_SPIKE", "HIGH", 10, 1,
                                                               entity_type="agent", entity_id=NUL)),
    ("reason", ValueError,
     lambda tx: GovernanceSignalWriter(tx).record_signal("PR-1", "MANUAL_OVERRIDE", "BLOCKED", "ops", NUL)),
    ("key", ValueError, lambda tx: claim_or_get(tx, "t", NUL)),
    ("evidence", ValueError, lambda tx: ledger.emit_signal(tx, "a.py", "drift", {"k": NUL}, "ci")),
    ("artifact", ValueError, lambda tx: ledger.emit_signal(tx, NUL, "drift", {}, "ci")),
    ("run_id", ValueError, lambda tx: WorkerWriteService(tx).upsert_worker_run("t", NUL, {"status": "queued"})),
]


@pytest.mark.parametrize("field, error, write", NUL_WRITES, ids=[field for field, _, _ in NUL_WRITES])
def test_text_holding_nul_is_refused_as_bad_input_and_nothing_is_written(hoc_db, hoc_coordinator, field,
                                                                          error, write):
    before = content_snapshot(hoc_db)
    with pytest.raises(error, match=f"{field} must not contain a NUL character"):
        with hoc_coordinator.transaction() as tx:
            write(tx)
    assert content_snapshot(hoc_db) == before


class Text(str):
    """A str subclass (an enum's value, a caller's own text type)."""


def test_nul_in_a_str_subclass_written_by_a_prepared_update_is_refused(hoc_db, hoc_coordinator):
    from hoc_drivers.alert_driver import AlertQueueWriter
    from hoc_drivers.models.base import utcnow

    with hoc_coordinator.transaction() as tx:
        writer = AlertQueueWriter(tx)
        writer.insert_alert("t", {}, "test")
        (alert,) = writer.fetch_pending_alerts(utcnow(), 1, 60)
    before = content_snapshot(hoc_db)
    with pytest.raises(ValueError, match="must not contain a NUL character"):
        with hoc_coordinator.transaction() as tx:
            AlertQueueWriter(tx).update_alert_retry(alert, utcnow(), utcnow(), Text(NUL))
    assert content_snapshot(hoc_db) == before


@pytest.mark.parametrize("field", ["tenant_id", "run_id", "run_status", "agent_id", "error_code", "trace_id",
                                   "synthetic_scenario_id"])
def test_a_run_completion_with_nul_in_any_id_is_refused_and_writes_nothing(hoc_db, hoc_coordinator, field):
    given = {"tenant_id": "t", "run_id": "r1", "run_status": "failed", "error_message": "AGENT_CRASH", field: NUL}
    before = content_snapshot(hoc_db)
    with pytest.raises(ValueError, match=f"{field} must not contain a NUL character"):
        RunCompletionTransaction(hoc_coordinator).execute(**given)
    assert content_snapshot(hoc_db) == before


def test_a_run_completion_with_nul_text_fails_as_bad_input_and_writes_nothing(hoc_db, hoc_coordinator):
    before = content_snapshot(hoc_db)
    with pytest.raises(TransactionFailed, match="error_message must not contain a NUL") as failed:
        RunCompletionTransaction(hoc_coordinator).execute("t", "r1", "failed", error_message=NUL)
    assert isinstance(failed.value.__cause__, ValueError)
    assert content_snapshot(hoc_db) == before


@pytest.mark.parametrize("args, message", [
    (["incidents", "list", "--tenant", NUL], "--tenant must not contain a NUL character"),
    (["signals", "record", "--scope", "PR-1", "--type", "CI_STATUS", "--decision", "BLOCKED", "--by", "CI",
      "--reason", NUL], "reason must not contain a NUL character"),
    (["signals", "record", "--scope", "PR-1", "--type", "CI_STATUS", "--decision", "BLOCKED", "--by", "CI",
      "--constraints", '{"k": "a\\u0000"}'], "constraints must not contain a NUL character"),
])
def test_the_cli_refuses_nul_text_with_a_message(hoc_db, run_cli, args, message):
    before = content_snapshot(hoc_db)
    result = run_cli(hoc_db.database, *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output + result.stderr
    assert content_snapshot(hoc_db) == before


def test_webhook_secret_never_appears_in_cli_output_or_logs(hoc_db, run_cli, caplog):
    secret = "s3cr3t-do-not-print"
    caplog.set_level(logging.DEBUG)
    outputs = []
    for args in (["alerts", "enqueue", "--tenant", "acme", "--policy", "p", "--run", "r",
                  "--metric", "cost", "--current", "95", "--threshold", "100", "--breach",
                  "--channel", "webhook", "--webhook-url", "http://127.0.0.1:9/hook",
                  "--webhook-secret", secret, "--json"],
                 ["alerts", "stats", "--json"], ["alerts", "stats"],
                 ["alerts", "send", "--once", "--json"]):
        result = run_cli(hoc_db.database, *args)
        outputs.append(result.output + result.stderr)
    assert outputs[0] and all(secret not in out for out in outputs)
    assert secret not in caplog.text
    assert AlertQueueReader(hoc_db).fetch_queue_stats()["pending"] + \
        AlertQueueReader(hoc_db).fetch_queue_stats()["failed"] >= 1


def test_new_database_files_are_owner_only(tmp_path, run_cli):
    path = tmp_path / "fresh.db"
    assert run_cli(path, "init").exit_code == 0
    assert run_cli(path, "run", "complete", "r1", "--tenant", "t", "--status", "failed").exit_code == 0
    for name in ("fresh.db", "fresh.db-wal", "fresh.db-shm"):
        if (tmp_path / name).exists():
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name


def database_checksum(db):
    return hashlib.sha256(repr(content_snapshot(db)).encode()).hexdigest()


FUZZ_SKIP = {"hoc-drivers bench", "hoc-drivers demo", "hoc-drivers alerts send"}
COMMANDS = [(path.split()[1:], command) for path, command in command_paths()
            if path not in FUZZ_SKIP]
TOKENS = st.one_of(
    st.sampled_from(["--tenant", "--json", "--scope", "--type", "--decision", "--by", "--status",
                     "--current-cents", "--expected-cents", "--evidence", "--confidence",
                     "--context", "--expires-in", "--entity-type", "--entity-id", "-1", "0",
                     "1e999", "nan", "{", "{}", "[]", "@/nonexistent", "BLOCKED", "failed",
                     "tenant", "--", "-", "'; DROP TABLE runs; --"]),
    st.text(max_size=12))


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(COMMANDS), tokens=st.lists(TOKENS, max_size=6))
def test_fuzzed_cli_arguments_never_traceback(hoc_db, command, tokens):
    path, _ = command
    before = database_checksum(hoc_db)
    runner = CliRunner()
    with runner.isolated_filesystem():  # a fuzzed path (e.g. a backup destination) lands there
        result = runner.invoke(cli.cli, ["--db", hoc_db.database, *path, *tokens])
    output = result.output + result.stderr
    assert "Traceback" not in output
    assert result.exit_code in (0, 1, 2, 3), (path, tokens, output)
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, output
        assert database_checksum(hoc_db) == before, (path, tokens)


def nested(depth):
    """A JSON object `depth` containers deep: {"x": {"x": ... {}}}."""
    value = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def cyclic():
    value = {}
    value["self"] = value
    return value


def table_rows(db):
    tables = ("governance_signals", "discovery_ledger", "limit_breaches", "decision_records")
    return {t: db.execute_sql(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables
            if t in db.get_tables()}


def write_json(tx, kind, value):
    """Store `value` through one of the APIs taking a JSON object from the caller."""
    if kind == "constraints":
        GovernanceSignalWriter(tx).record_signal("S", "CI_STATUS", "BLOCKED", "CI", constraints=value)
    elif kind == "evidence":
        ledger.emit_signal(tx, "artifact", "type", value, "ci")
    elif kind == "details":
        cross_domain.record_limit_breach(tx, "acme", "limit", "BREACHED", 2, 1, details=value)
    else:
        decisions.emit_routing_decision(tx, "acme", None, True, "a", ["a"], details=value)


OVER_THE_LIMITS = [(nested(33), "nested too deeply (more than 32 levels)"),
                   (nested(400), "nested too deeply (more than 32 levels)"),
                   (cyclic(), "nested too deeply (more than 32 levels)"),
                   ({"x": "y" * 65_529}, "too large (65537 bytes of JSON; at most 65536)")]


@pytest.mark.parametrize("kind", ["constraints", "evidence", "details", "decision details"])
@pytest.mark.parametrize("value, message", OVER_THE_LIMITS, ids=["33", "400", "cyclic", "big"])
def test_json_over_the_limits_is_refused_by_every_api_and_writes_nothing(hoc_db, hoc_coordinator, kind,
                                                                          value, message):
    before = table_rows(hoc_db)
    with pytest.raises((ValueError, cross_domain.GovernanceError), match=re.escape(message)):
        with hoc_coordinator.transaction() as tx:
            write_json(tx, kind, value)
    assert table_rows(hoc_db) == before


@pytest.mark.parametrize("kind", ["constraints", "evidence", "details", "decision details"])
def test_json_at_the_limits_is_stored(hoc_db, hoc_coordinator, kind):
    before = sum(table_rows(hoc_db).values())
    for value in (nested(32), {"x": "y" * 65_528}):  # {"x":"yy..."} is 65536 bytes
        with hoc_coordinator.transaction() as tx:
            write_json(tx, kind, value)
    stored = 1 if kind == "evidence" else 2  # the ledger aggregates a repeated signal into one row
    assert sum(table_rows(hoc_db).values()) == before + stored


@pytest.mark.parametrize("text, shown", [
    ("https://ops:pw-1@example.com/hook", "https://***@example.com/hook"),
    ("smtp://mailer@mail.example.com:587", "smtp://***@mail.example.com:587"),
    ("'https://hooks.slack.com/services/T000/B000/XXXX' failed", "'https://hooks.slack.com/***' failed"),
    ("https://discord.com/api/webhooks/123/abc-token", "https://discord.com/api/webhooks/***"),
    ("https://example.com/hook?token=abc&keep=1&api_key=k#x", "https://example.com/hook?token=***&keep=1&api_key=***#x"),
    ("bot token xoxb-123-456-abc", "bot token xox*-***"),
    ("https://example.com/path and bob@example.com", "https://example.com/path and bob@example.com"),
])
def test_redact_hides_credentials_and_tokens_only(text, shown):
    from hoc_drivers.validation import redact

    assert redact(text) == shown


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSWORD, TOKEN, HMAC_SECRET, SMTP_PASSWORD = "pw-hunter2", "XXXXslackTOKENXXXX", "hmac-s3cret", "smtp-s3cret"


def run_process(*args):
    """The CLI as a real process (`--debug` configures logging as it does for an operator)."""
    import subprocess
    import sys

    env = {**os.environ, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "9", "SMTP_USERNAME": "mailer",
           "SMTP_PASSWORD": SMTP_PASSWORD}
    return subprocess.run([sys.executable, "-c", "import cli; cli.main()", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_debug_logs_and_error_messages_never_show_credentials_or_tokens(hoc_db, run_cli):
    enqueue = ["--debug", "--db", hoc_db.database, "alerts", "enqueue", "--tenant", "acme", "--policy", "p",
               "--run", "r", "--metric", "cost", "--current", "95", "--threshold", "100", "--breach",
               "--webhook-secret", HMAC_SECRET, "--channel", "slack", "--slack-url",
               f"https://hooks.slack.com/services/T000/B000/{TOKEN}", "--channel", "webhook", "--channel",
               "email", "--email", "ops@example.com", "--webhook-url"]
    queued = run_process(*enqueue, f"https://ops:{PASSWORD}@127.0.0.1:9/hook")
    assert queued.returncode == 0, queued.stderr
    assert "INSERT INTO" in queued.stderr  # --debug does log the SQL and its parameters
    assert "https://***@127.0.0.1:9/hook" in queued.stderr and "hooks.slack.com/***" in queued.stderr
    sent = run_process("--debug", "--db", hoc_db.database, "alerts", "send", "--once", "--json")
    refused = run_process(*enqueue, f"ftp://ops:{PASSWORD}@127.0.0.1/hook")
    assert refused.returncode == 2 and "Traceback" in refused.stderr
    assert refused.stderr.endswith("error: --webhook-url must be an http(s) URL, got 'ftp://***@127.0.0.1/hook'\n")
    plain = run_cli(hoc_db.database, *enqueue[3:18], "--channel", "slack", "--slack-url",
                    f"hooks.slack.com/services/T000/B000/{TOKEN}")
    assert plain.exit_code == 2 and "hooks.slack.com/***" in plain.stderr
    for output in (queued.stdout + queued.stderr, sent.stdout + sent.stderr,
                   refused.stdout + refused.stderr, plain.output + plain.stderr):
        for secret in (PASSWORD, TOKEN, HMAC_SECRET, SMTP_PASSWORD):
            assert secret not in output
