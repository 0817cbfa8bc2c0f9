"""Settings in one place: flag > environment > settings file > default, on real files."""
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from hoc_drivers import settings
from hoc_drivers.alert_emitter import sign_body
from hoc_drivers.alert_sender import AlertDelivery, SmtpSettings
from hoc_drivers.db import connect_database, init_database
from hoc_drivers.guard_cache import GuardCache, default_ttls
from hoc_drivers.idempotency import ttl_from_environment
from hoc_drivers.ledger import emit_signal, get_signals
from hoc_drivers.models.alerts import AlertQueueItem, canonical_json

SECRET = "file-s3cret-value"
ENQUEUE = ["alerts", "enqueue", "--tenant", "acme", "--policy", "budget", "--run", "run-42",
           "--metric", "cost", "--current", "85", "--threshold", "100", "--breach",
           "--channel", "webhook", "--webhook-url", "https://hooks.example.com/x"]


@pytest.fixture(autouse=True)
def no_stray_settings(monkeypatch, tmp_path):
    """Each test starts in an empty directory with no settings file or variable in use."""
    monkeypatch.chdir(tmp_path)
    for setting in settings.SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.delenv(settings.CONFIG_ENV_VAR, raising=False)
    yield
    settings.use_file(None)


def write_toml(path, text):
    Path(path).write_text(text, encoding="utf-8")
    return str(path)


def run(*args, env=None):
    return CliRunner(env=env).invoke(cli.cli, list(args))


def shown(*args, env=None):
    """`hoc-drivers [args] settings --json` as {name: (value, source)}."""
    result = run(*args, "settings", "--json", env=env)
    assert result.exit_code == 0, result.output
    return {row["name"]: (row["value"], row["source"]) for row in json.loads(result.stdout)}


def test_each_layer_wins_over_the_one_below_for_the_database(tmp_path):
    config = write_toml(tmp_path / "hoc-drivers.toml", '[database]\npath = "from-file.db"\n')
    assert shown()["database.path"] == ("from-file.db", f"file {settings.DEFAULT_CONFIG_FILE}")
    assert run("init").exit_code == 0 and (tmp_path / "from-file.db").exists()
    env = {"HOC_DRIVERS_DB": "from-env.db"}
    assert shown(env=env)["database.path"] == ("from-env.db", "env $HOC_DRIVERS_DB")
    assert run("init", env=env).exit_code == 0 and (tmp_path / "from-env.db").exists()
    assert shown("--db", "flag.db", env=env)["database.path"] == ("flag.db", "flag")
    assert run("--config", config, "init", "--db", "flag.db", env=env).exit_code == 0
    assert (tmp_path / "flag.db").exists()
    Path(config).unlink()
    assert shown()["database.path"] == ("hoc.db", "default")


def test_which_file_is_read_config_flag_then_variable_then_the_local_file(tmp_path):
    write_toml("hoc-drivers.toml", "[smtp]\nport = 1025\n")
    named = write_toml(tmp_path / "named.toml", "[smtp]\nport = 2025\n")
    flagged = write_toml(tmp_path / "flagged.toml", "[smtp]\nport = 3025\n")
    assert shown()["smtp.port"][0] == 1025
    assert shown(env={"HOC_DRIVERS_CONFIG": named})["smtp.port"] == (2025, f"file {named}")
    assert shown("--config", flagged, env={"HOC_DRIVERS_CONFIG": named})["smtp.port"][0] == 3025
    assert shown()["smtp.port"][0] == 1025  # --config held for that invocation only


def test_smtp_settings_come_from_the_file_under_the_environment(tmp_path, monkeypatch):
    settings.use_file(write_toml(tmp_path / "s.toml", '[smtp]\nhost = "mail.example.com"\nport = "587"\n'
                                                      'username = "mailer"\npassword = "pw"\n'))
    smtp = SmtpSettings.from_env()
    assert (smtp.host, smtp.port, smtp.username, smtp.password) == ("mail.example.com", 587, "mailer", "pw")
    assert smtp.from_name == "AOS Notifications"
    monkeypatch.setenv("SMTP_PORT", "2525")
    assert SmtpSettings.from_env().port == 2525


def test_alertmanager_url_flag_env_file(tmp_path, monkeypatch):
    settings.use_file(write_toml(tmp_path / "s.toml", '[alerts]\nalertmanager_url = "http://file:9093"\n'))
    assert AlertDelivery().alertmanager_url == "http://file:9093"
    monkeypatch.setenv("ALERTMANAGER_URL", "http://env:9093")
    assert AlertDelivery().alertmanager_url == "http://env:9093"
    assert AlertDelivery(alertmanager_url="http://flag:9093").alertmanager_url == "http://flag:9093"


def test_guard_cache_idempotency_and_ledger_read_the_file(tmp_path, monkeypatch, hoc_coordinator):
    settings.use_file(write_toml(tmp_path / "s.toml", "[guard_cache]\nenabled = false\nstatus_ttl = 1.5\n"
                                                      "[idempotency]\nttl_seconds = 60\n"
                                                      '[ledger]\nphase = "F"\n'))
    assert default_ttls() == {"status": 1.5, "snapshot": 10, "incidents": 5}
    assert GuardCache().enabled is False
    assert ttl_from_environment() == 60
    monkeypatch.setenv("GUARD_CACHE_ENABLED", "true")
    monkeypatch.setenv("IDEMPOTENCY_TTL_SECONDS", "90")
    assert GuardCache().enabled is True and ttl_from_environment() == 90
    with hoc_coordinator.transaction() as tx:
        emit_signal(tx, "a1", "s", {}, "ci")
        emit_signal(tx, "a2", "s", {}, "ci", phase="B")
    phases = {s["artifact"]: s["phase"] for s in get_signals(hoc_coordinator.db)}
    assert phases == {"a1": "F", "a2": "B"}


def test_a_webhook_secret_from_the_file_signs_and_is_never_printed(tmp_path):
    config = write_toml(tmp_path / "s.toml", f'[alerts]\nwebhook_secret = "{SECRET}"\n')
    init_database(str(tmp_path / "hoc.db")).close()
    env = {"HOC_ALERT_WEBHOOK_SECRET": "env-secret"}
    for result in (run("--config", config, *ENQUEUE), run("--config", config, *ENQUEUE, env=env),
                   run("--config", config, *ENQUEUE, "--webhook-secret", "flag-secret", env=env),
                   run("--config", config, "settings")):
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
    assert "***" in result.output
    db = connect_database(str(tmp_path / "hoc.db"))
    rows = list(AlertQueueItem.select().execute(db))
    db.close()
    used = {secret for row in rows for secret in (SECRET, "env-secret", "flag-secret")
            if row.destination["headers"]["X-Signature"]
            == sign_body(secret, canonical_json(row.payload).encode())}
    assert len(rows) == 3 and used == {SECRET, "env-secret", "flag-secret"}


@pytest.mark.parametrize("text, message", [
    ("[smtp]\nport = 70000\n", "smtp.port in {path} must be a port number (1-65535), got 70000"),
    ("[guard_cache]\nstatus_ttl = \"soon\"\n", "guard_cache.status_ttl in {path} must be a number of seconds"),
    ("[smtp]\nprot = 25\n", "settings file {path}: unknown setting 'smtp.prot'"),
    ("[smtp\n", "settings file {path} is not valid TOML"),
    ("[smtp]\npassword = 12345\n", "smtp.password in {path} must be text"),
])
def test_an_invalid_file_is_one_line_naming_the_setting_and_the_file(tmp_path, text, message):
    config = write_toml(tmp_path / "bad.toml", text)
    result = run("--config", config, "ledger", "list")
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert message.format(path=config) in line and "12345" not in line


def test_an_invalid_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("SMTP_PORT", "smtp")
    with pytest.raises(settings.SettingError, match=r"^SMTP_PORT must be a port number \(1-65535\), got 'smtp'$"):
        SmtpSettings.from_env()
    monkeypatch.setenv("SMTP_PASSWORD", " ")  # blank counts as unset
    assert settings.lookup("smtp.password") == (None, "default")


def test_a_missing_config_file_is_bad_input(tmp_path):
    result = run("--config", str(tmp_path / "absent.toml"), "settings")
    assert result.exit_code == 2 and "absent.toml" in result.stderr


def test_no_module_reads_the_environment_but_settings():
    """(The terminal's $COLUMNS, read for table widths, is the shell's, not a setting.)"""
    package = Path(settings.__file__).parent
    readers = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     for line in path.read_text(encoding="utf-8").splitlines()
                     if re.search(r"os\.environ|getenv", line) and "COLUMNS" not in line)
    assert set(readers) == {"settings.py"}
