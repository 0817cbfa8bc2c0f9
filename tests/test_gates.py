"""The CLI's deploy gates read without Peewee (hoc_drivers.gates) and decide exactly as the
drivers' readers do: same statements, same results, same output, over the same files."""
import json
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner
from freezegun import freeze_time

import cli
from hoc_drivers import gates
from hoc_drivers.db import connect_database
from hoc_drivers.governance_signal_driver import GovernanceSignalReader
from hoc_drivers.guard_cache import get_guard_cache
from hoc_drivers.guard_read_driver import GuardReadDriver
from hoc_drivers.guard_write_driver import GuardReader

from conftest import alter, ok

T0 = "2026-03-01 12:00:00"
LATER = "2026-03-01 15:00:00"  # the 2h freezes of T0 have ended, the open-ended ones have not
SIGNAL = ["signals", "record", "--by", "CI"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A file with signals (blocking, warning, clear, superseded, expiring, with constraints),
    kill switches (frozen, frozen for 2h, unfrozen, never frozen) and incidents, in two tenants."""
    path = tmp_path_factory.mktemp("gates") / "hoc.db"

    def run(*args):
        ok(CliRunner().invoke(cli.cli, ["--db", str(path), *args]))

    with freeze_time(T0):
        run("init")
        run(*SIGNAL, "--scope", "PR-1", "--type", "CI_STATUS", "--decision", "WARN")
        run(*SIGNAL, "--scope", "PR-1", "--type", "CI_STATUS", "--decision", "BLOCKED", "--reason", "red",
            "--constraints", '{"blocked_files": ["a.py"], "n": 1.5}')
        run(*SIGNAL, "--scope", "PR-1", "--type", "BLCA_STATUS", "--decision", "WARN")
        run(*SIGNAL, "--scope", "PR-1", "--type", "SESSION_BLOCK", "--decision", "BLOCKED", "--expires-in", "3600")
        run(*SIGNAL, "--scope", "PR-2", "--type", "DEPLOYMENT_GATE", "--decision", "PENDING")
        run(*SIGNAL, "--scope", "acme", "--type", "MANUAL_OVERRIDE", "--decision", "BLOCKED")
        for tenant, kind, entity, timed in (("acme", "tenant", "acme", ["--for", "2h"]), ("acme", "key", "k1", []),
                                            ("acme", "key", "k2", ["--for", "2h"]), ("beta", "tenant", "beta", []),
                                            ("beta", "key", "k9", [])):
            run("killswitch", "freeze", "--tenant", tenant, "--entity-type", kind, "--entity-id", entity,
                "--by", "ops", *timed)
        run("killswitch", "unfreeze", "--tenant", "beta", "--entity-type", "key", "--entity-id", "k9", "--by", "ops")
        for anomaly in ("an-1", "an-2"):
            run("anomaly", "record", "--tenant", "acme", "--anomaly-id", anomaly, "--type", "DRIFT", "--severity",
                "high", "--current-cents", "200", "--expected-cents", "100")
    return path


SIGNAL_CHECKS = [("PR-1", None), ("PR-1", "CI_STATUS"), ("PR-1", "SESSION_BLOCK"), ("PR-2", None),
                 ("nobody", None)]
SWITCHES = [("acme", "tenant", "acme"), ("acme", "key", "k1"), ("acme", "key", "k2"),
            ("beta", "key", "k9"), ("beta", "key", "never"), ("beta", "tenant", "acme")]
TENANTS = ["acme", "beta", "nobody"]


def both_ways(path, gate, reader):
    """(result, SELECTs executed) of `gate(conn)` on a gate connection and of `reader(db)` on
    the drivers' database, each traced by SQLite (the guard cache's PRAGMA data_version, which
    the drivers' path also runs, is not a read of the status)."""
    conn, db = gates.connect(str(path)), connect_database(str(path), create=False)
    try:
        outcomes = []
        for run, connection, source in ((gate, conn, conn), (reader, db.connection(), db)):
            statements = []
            connection.set_trace_callback(statements.append)
            outcomes.append((run(source), [sql for sql in statements if sql.startswith("SELECT")]))
        return outcomes
    finally:
        conn.close()
        db.close()


@pytest.mark.parametrize("when", [T0, LATER])
@pytest.mark.parametrize("scope, signal_type", SIGNAL_CHECKS)
def test_signals_check_reads_and_decides_as_the_reader(seeded, when, scope, signal_type):
    with freeze_time(when):
        (fast, fast_sql), (slow, slow_sql) = both_ways(
            seeded, lambda conn: gates.check_signals(conn, scope, signal_type),
            lambda db: GovernanceSignalReader(db).check_governance(scope, signal_type))
    assert fast.to_dict() == slow.to_dict()
    assert fast_sql == slow_sql and len(fast_sql) == 1


def test_the_seeded_file_covers_every_case(seeded):
    with freeze_time(T0):
        conn = gates.connect(str(seeded))
        pr1 = gates.check_signals(conn, "PR-1")
        assert pr1.is_blocked and {s.signal_type for s in pr1.blocking_signals} == {"CI_STATUS", "SESSION_BLOCK"}
        (ci,) = [s for s in pr1.blocking_signals if s.signal_type == "CI_STATUS"]
        assert ci.constraints == {"blocked_files": ["a.py"], "n": 1.5}
        assert [s.signal_type for s in pr1.warning_signals] == ["BLCA_STATUS"]
        assert gates.killswitch_status(conn, "acme", "key", "k2")["is_frozen"] is True
        assert gates.tenant_status(conn, "acme")["governance_blocked"] is True
    with freeze_time(LATER):
        assert [s.signal_type for s in gates.check_signals(conn, "PR-1").blocking_signals] == ["CI_STATUS"]
        assert gates.killswitch_status(conn, "acme", "key", "k2")["is_frozen"] is False
    conn.close()


@pytest.mark.parametrize("when", [T0, LATER])
@pytest.mark.parametrize("switch", SWITCHES)
def test_killswitch_status_reads_and_decides_as_the_reader(seeded, when, switch):
    with freeze_time(when):
        (fast, fast_sql), (slow, slow_sql) = both_ways(
            seeded, lambda conn: gates.killswitch_status(conn, *switch),
            lambda db: GuardReader(db).killswitch_status(*switch))
    assert fast == slow
    assert fast_sql == slow_sql and len(fast_sql) == 1


@pytest.mark.parametrize("when", [T0, LATER])
@pytest.mark.parametrize("tenant", TENANTS)
def test_guard_status_reads_and_decides_as_the_reader(seeded, when, tenant):
    with freeze_time(when):
        (fast, fast_sql), (slow, slow_sql) = both_ways(
            seeded, lambda conn: gates.tenant_status(conn, tenant),
            lambda db: GuardReadDriver(db).compute_status(tenant))
    assert fast == slow
    assert fast_sql == slow_sql and len(fast_sql) == 3


GATE_COMMANDS = [["signals", "check", "--scope", "PR-1"], ["signals", "check", "--scope", "PR-2"],
                 ["signals", "check", "--scope", "PR-1", "--type", "blca_status"],
                 ["killswitch", "status", "--tenant", "acme", "--entity-type", "key", "--entity-id", "k2"],
                 ["killswitch", "status", "--tenant", "beta", "--entity-type", "key", "--entity-id", "never"],
                 ["guard", "status", "--tenant", "acme"], ["guard", "status", "--tenant", "beta"]]


@pytest.mark.parametrize("when", [T0, LATER])
@pytest.mark.parametrize("output", [[], ["--json"]])
@pytest.mark.parametrize("command", GATE_COMMANDS)
def test_each_gate_prints_what_the_drivers_path_prints(seeded, monkeypatch, when, output, command):
    def invoke():
        db = connect_database(str(seeded), create=False)
        get_guard_cache(db).clear()  # as in a new process (earlier tests filled this process's)
        db.close()
        with freeze_time(when):
            result = CliRunner().invoke(cli.cli, ["--db", str(seeded), *command, *output])
        return result.exit_code, result.stdout, result.stderr

    fast = invoke()
    monkeypatch.setattr(gates, "connect", lambda path: None)  # every file takes the drivers' path
    assert fast == invoke()
    assert fast[0] in (0, 3) and fast[1]


def test_guard_status_refuses_a_bad_cache_setting_as_the_drivers_path_does(tmp_path, seeded, monkeypatch):
    path = tmp_path / "hoc.db"  # a file this process has no guard cache for yet (as a new process)
    path.write_bytes(seeded.read_bytes())
    monkeypatch.setenv("GUARD_STATUS_TTL", "soon")
    fast = CliRunner().invoke(cli.cli, ["--db", str(path), "guard", "status", "--tenant", "acme"])
    monkeypatch.setattr(gates, "connect", lambda path: None)
    slow = CliRunner().invoke(cli.cli, ["--db", str(path), "guard", "status", "--tenant", "acme"])
    assert (fast.exit_code, fast.stderr) == (slow.exit_code, slow.stderr) == (
        2, "error: GUARD_STATUS_TTL must be a number of seconds, got 'soon'\n")


@pytest.mark.parametrize("command", [c for c in GATE_COMMANDS if "--type" not in c])
def test_a_gate_loads_neither_peewee_nor_a_driver(seeded, command):
    probe = ("import sys; from hoc_drivers.cli import cli; "
             f"code = cli.main({['--db', str(seeded), *command]!r}, standalone_mode=False); "
             "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('peewee', 'playhouse') "
             "or m.endswith('_driver')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    code, loaded = result.stdout.splitlines()[-1].split(" ", 1)
    assert code in ("0", "3") and loaded == "[]", result.stdout


def test_the_gate_connection_is_read_only(seeded):
    conn = gates.connect(str(seeded))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM governance_signals")
    conn.close()


def test_only_a_current_plain_file_gets_a_gate_connection(tmp_path, seeded):
    assert gates.connect(str(tmp_path / "missing.db")) is None
    assert gates.connect(str(tmp_path)) is None
    assert gates.connect(":memory:") is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert gates.connect(str(empty)) is None  # no tables: not what init writes
    drifted = tmp_path / "drifted.db"
    drifted.write_bytes(seeded.read_bytes())
    alter(drifted, "CREATE INDEX extra ON incidents (title)")
    assert gates.connect(str(drifted)) is None
    older = tmp_path / "older.db"
    older.write_bytes(seeded.read_bytes())
    alter(older, "PRAGMA user_version = 1")
    assert gates.connect(str(older)) is None


def test_a_migrated_file_with_an_extra_column_still_passes_through_the_drivers(tmp_path, seeded, run_cli):
    """Statements that differ only in a warning (an extra column outside the cost tables) fail
    the cheap check but pass the full one: the gate then reads through the drivers."""
    path = tmp_path / "hoc.db"
    path.write_bytes(seeded.read_bytes())
    alter(path, "ALTER TABLE incidents ADD COLUMN legacy TEXT")
    assert gates.connect(str(path)) is None
    result = run_cli(path, "guard", "status", "--tenant", "acme", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["open_incidents"] == 2


def test_the_gates_know_the_models_vocabulary():
    from hoc_drivers import verdicts
    from hoc_drivers.models import governance, guard

    assert set(verdicts.SWITCH_FIELDS) < set(guard.KillSwitchState._meta.fields)
    assert gates.SIGNAL_FIELDS == tuple(governance.GovernanceSignal._meta.fields)
    assert gates.KILLSWITCH_FIELDS == tuple(guard.KillSwitchState._meta.fields)
