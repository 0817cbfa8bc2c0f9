"""Every CLI command's bad-input path: exit 2, one line on stderr, no traceback, file unchanged."""
import hashlib
import sqlite3

import pytest

from hoc_drivers.cli_docs import command_paths

BAD_INPUT = {
    "init": ["--bogus"],
    "demo": ["unexpected-argument"],
    "run complete": ["r1", "--tenant", "acme", "--status", "bogus"],
    "schema check": ["--bogus"],
    "audit": ["--source", "/nonexistent/package"],
    "signals check": ["--scope", ""],
    "signals clear": ["--scope", "acme", "--type", "NOPE", "--by", "OPS"],
    "signals list": ["--scope", ""],
    "signals record": ["--scope", "acme", "--type", "CI_STATUS", "--decision", "MAYBE", "--by", "CI"],
    "killswitch freeze": ["--tenant", "acme", "--entity-type", "planet", "--entity-id", "x", "--by", "ops"],
    "killswitch status": ["--tenant", "acme", "--entity-type", "planet", "--entity-id", "x"],
    "killswitch unfreeze": ["--tenant", "acme", "--entity-type", "planet", "--entity-id", "x", "--by", "o"],
    "incidents ack": ["inc-1"],
    "incidents list": ["--tenant", "acme", "--status", "bogus"],
    "incidents show": ["inc-1", "--tenant", " "],
    "incidents resolve": ["inc-1", "--tenant", ""],
    "anomaly record": ["--tenant", "acme", "--anomaly-id", "a", "--type", "DRIFT", "--severity", "high",
                       "--current-cents", "-5", "--expected-cents", "1"],
    "breach record": ["--tenant", "acme", "--limit-id", "l", "--type", "EXPLODED", "--value", "1",
                      "--limit", "2"],
    "idempotency check": ["key-1"],
    "idempotency claim": ["key-1", "--tenant", ""],
    "decisions backfill": ["req-1", "--tenant", "acme"],
    "decisions list": ["--tenant", "acme", "--type", "nope"],
    "care kill-switch": ["maybe"],
    "ledger emit": ["--artifact", "a", "--signal-type", "s", "--detected-by", "d", "--evidence", "{bad"],
    "ledger list": ["--limit", "-1"],
    "alerts enqueue": ["--tenant", "acme", "--policy", "p", "--run", "r", "--metric", "cost",
                       "--current", "1", "--threshold", "2", "--channel", "webhook",
                       "--webhook-url", "ftp://example.com/hook"],
    "alerts purge": ["--days", "-1"],
    "alerts retry-failed": ["--max-retries", "-1"],
    "alerts send": ["--batch", "0"],
    "alerts stats": ["unexpected-argument"],
    "alerts list": ["--tenant", "acme", "--since", "yesterday"],
    "alerts show": ["a1"],
    "alerts retry": ["a1", "--tenant", "acme", "--all-tenants"],
    "alerts delete": ["a1", "--tenant", ""],
    "alerts config set": ["c", "--tenant", "acme", "--policy", "p", "--channel", "webhook"],
    "alerts config show": ["c", "--tenant", ""],
    "alerts history": ["--tenant", "acme", "--limit", "0"],
    "notifications list": ["--tenant", ""],
    "notifications ack": ["n1"],
    "killswitch list": ["--tenant", "acme", "--all-tenants"],
    "killswitch history": ["--tenant", "acme", "--entity-type", "planet", "--entity-id", "x"],
    "guard snapshot": [],
    "guard status": ["--tenant", ""],
    "dag check": ["--strict", "/nonexistent/policy.plang"],
    "dag plan": ["/nonexistent/policy.plang"],
    "dag run": ["fixtures/policies/main.plang", "--context", "{bad"],
    "dag fmt": ["fixtures/policies/main.plang", "--check", "--write"],
    "dag test": ["/nonexistent/policies"],
    "bench": ["--only", "no-such-workload"],
    "migrate": ["--bogus"],
    "backup": [],
    "settings": ["smtp.prot"],
}


def test_every_command_has_a_bad_input_case():
    commands = {path.removeprefix("hoc-drivers ") for path, _ in command_paths()}
    assert commands == set(BAD_INPUT)


def file_checksum(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input(command, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parent.parent)
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    assert run_cli(path, "run", "complete", "r1", "--tenant", "acme", "--status", "failed").exit_code == 0
    before = file_checksum(path)
    result = run_cli(path, *command.split(), *BAD_INPUT[command])
    assert result.exit_code == 2, (result.output, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert file_checksum(path) == before


# Commands that take a JSON option (its value comes last).
JSON_OPTION_COMMANDS = [
    ["breach", "record", "--tenant", "acme", "--limit-id", "l", "--type", "BREACHED", "--value", "1",
     "--limit", "2", "--details"],
    ["signals", "record", "--scope", "acme", "--type", "CI_STATUS", "--decision", "BLOCKED", "--by",
     "CI", "--constraints"],
    ["ledger", "emit", "--artifact", "a", "--signal-type", "s", "--detected-by", "d", "--evidence"],
    ["dag", "run", "fixtures/policies/main.plang", "--record", "--tenant", "acme", "--context"],
]


@pytest.mark.parametrize("command", JSON_OPTION_COMMANDS)
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_options_refuse_nan_and_infinity(command, constant, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parent.parent)
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    before = file_checksum(path)
    result = run_cli(path, *command, f'{{"x": {constant}}}')
    assert result.exit_code == 2, (result.output, result.stderr)
    assert result.stderr.strip() == (f"error: {command[-1]}: malformed JSON "
                                     f"({constant} is not a JSON number)")
    assert file_checksum(path) == before


@pytest.mark.parametrize("args", [
    ["decisions", "list", "--tenant", "acme", "--limit", "99999999999999999999"],
    ["ledger", "list", "--limit", "9223372036854775808"],
    ["alerts", "purge", "--days", "3000000"],
    ["alerts", "retry-failed", "--max-retries", "99999999999999999999"],
    ["alerts", "send", "--once", "--batch", "99999999999999999999"],
    ["alerts", "send", "--once", "--timeout", "1e300"],
    ["alerts", "send", "--once", "--timeout", "nan"],
    ["alerts", "send", "--watch", "--poll", "nan"],
    ["alerts", "send", "--watch", "--poll", "1e300"],
])
def test_huge_and_nan_numbers_are_bad_input(args, run_cli, tmp_path):
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    before = file_checksum(path)
    result = run_cli(path, *args)
    assert result.exit_code == 2, (result.output, result.stderr)
    assert result.stderr.startswith(f"error: Invalid value for '{args[-2]}'"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert file_checksum(path) == before


@pytest.mark.parametrize("option", ["--agent", "--error-code", "--trace-id"])
@pytest.mark.parametrize("blank", ["", "  "])
def test_run_complete_refuses_blank_optional_ids(option, blank, run_cli, tmp_path):
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    before = file_checksum(path)
    result = run_cli(path, "run", "complete", "r1", "--tenant", "acme", "--status", "failed",
                     option, blank)
    assert result.exit_code == 2, (result.output, result.stderr)
    assert result.stderr == f"error: Invalid value for '{option}': must not be empty\n"
    assert file_checksum(path) == before


def test_send_once_and_watch_together_is_bad_input(run_cli, tmp_path):
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    before = file_checksum(path)
    result = run_cli(path, "alerts", "send", "--once", "--watch")
    assert result.exit_code == 2 and result.stderr == "error: --once and --watch cannot be combined\n"
    assert file_checksum(path) == before


def test_bench_refuses_an_unknown_backend_and_a_workload_of_the_other_backend(run_cli, tmp_path):
    result = run_cli(tmp_path / "unused.db", "bench", "--backend", "mysql")
    assert result.exit_code == 2 and "'mysql' is not one of 'sqlite', 'postgresql'" in result.stderr
    result = run_cli(tmp_path / "unused.db", "bench", "--backend", "postgresql", "--only", "plang_dag")
    assert result.exit_code == 2 and result.stderr.startswith("error: unknown workload 'plang_dag'")
    assert not (tmp_path / "unused.db").exists()


def test_db_naming_a_directory_says_so(run_cli, tmp_path):
    result = run_cli(tmp_path, "incidents", "list", "--tenant", "acme")
    assert result.exit_code == 1, (result.output, result.stderr)
    assert result.stderr == f"error: cannot open database {tmp_path}: it is a directory\n"
    assert list(tmp_path.iterdir()) == []


DEEP = '{"x": ' + "[" * 300 + "]" * 300 + "}"  # what used to be stored, then fail to print
LIMITS = [(DEEP, "is nested too deeply (more than 32 levels)"),
          ('{"x": ' + "[" * 32 + "]" * 32 + "}", "is nested too deeply (more than 32 levels)"),
          ('{"x": "' + "y" * 65_529 + '"}', "is too large (65537 bytes of JSON; at most 65536)"),
          ('{"x": "' + "\u00e9" * 13_200 + '"}', "is too large (79208 bytes of JSON; at most 65536)"),
          ('{"x": "' + "y" * 1_100_000 + '"}', ": JSON text is too large (at most 1048576 bytes)")]


@pytest.mark.parametrize("command", JSON_OPTION_COMMANDS, ids=["details", "constraints", "evidence", "context"])
@pytest.mark.parametrize("text, message", LIMITS, ids=["deep", "33-levels", "big", "big-escaped", "long-text"])
def test_json_options_refuse_deep_and_huge_values_and_write_nothing(command, text, message, run_cli,
                                                                    tmp_path, monkeypatch):
    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parent.parent)
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    before = file_checksum(path)
    result = run_cli(path, *command, text)
    assert result.exit_code == 2, (result.output, result.stderr)
    assert result.stderr == f"error: {command[-1]}{'' if message.startswith(':') else ' '}{message}\n"
    assert file_checksum(path) == before
    assert run_cli(path, "signals", "list", "--scope", "acme", "--json").exit_code == 0
    assert run_cli(path, "ledger", "list", "--json").exit_code == 0


def test_json_at_the_limits_is_accepted_from_a_file(run_cli, tmp_path):
    path = tmp_path / "seeded.db"
    assert run_cli(path, "init").exit_code == 0
    deepest = tmp_path / "deepest.json"
    deepest.write_text('{"x": ' + "[" * 31 + "]" * 31 + "}")
    largest = tmp_path / "largest.json"
    largest.write_text('{\n  "x": "' + "y" * 65_528 + '"\n}\n')  # {"x":"y..."}: exactly 65536 bytes
    for value in (deepest, largest):
        result = run_cli(path, "ledger", "emit", "--artifact", value.name, "--signal-type", "s",
                         "--detected-by", "d", "--evidence", f"@{value}", "--json")
        assert result.exit_code == 0, result.stderr
    assert len(__import__("json").loads(run_cli(path, "ledger", "list", "--json").stdout)) == 2
