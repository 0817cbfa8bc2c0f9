"""CLI `dag check | plan | run`: the contract other tools script against."""
import json
import pathlib
import re

import pytest

from hoc_drivers.dag_executor import get_execution_plan, visualize_plan
from hoc_drivers.policy import compile_file

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "policies"
MAIN = str(FIXTURES / "main.plang")
CONTEXTS = FIXTURES / "contexts"


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "hoc.db"


@pytest.fixture
def policy_file(tmp_path):
    def write(text, name="p.plang"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)
    return write


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    return lines[0]


def test_check_ok(run_cli, db_path):
    result = run_cli(db_path, "dag", "check", MAIN)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{MAIN}: ok (15 nodes in 6 stages, 6 files)\n"
    assert not db_path.exists()


@pytest.mark.parametrize("text, location, message", [
    ("policy p: SAFETY {\n  when x = 1 then deny\n}", "2:10", "unexpected character '='"),
    ("policy p: SAFETY {\n  rule missing\n}", "2:8", "undefined rule 'missing'"),
    ("policy a: ROUTING { route to b }\npolicy b: ROUTING { route to a }", "1:21",
     "route cycle: a -> b -> a"),
    ('import "absent.plang"', "1:8", "cannot import"),
    ('import "/etc/shadow"', "1:8", "cannot import '/etc/shadow': an import is a path relative"),
    ('policy p: SAFETY {\n  when contians(request.text, "x") then deny\n}', "2:8",
     "unknown function 'contians' (did you mean 'contains'?)"),
    ('policy p: SAFETY { when matches(request.text, "(?<=a)b") then deny }', "1:47",
     "matches(): RE2 cannot compile '(?<=a)b': invalid perl operator: (?<"),
])
def test_check_failure_prints_file_line_col_message(run_cli, db_path, policy_file, text, location,
                                                    message):
    path = policy_file(text)
    result = run_cli(db_path, "dag", "check", path)
    assert result.exit_code == 1 and result.stdout == ""
    line = one_error_line(result)
    assert line.startswith(f"{path}:{location}: ") and message in line


def test_check_reports_errors_in_imported_files(run_cli, db_path, policy_file):
    library = policy_file("policy broken: SAFETY { when then deny }", name="lib.plang")
    result = run_cli(db_path, "dag", "check", policy_file('import "lib.plang"'))
    assert result.exit_code == 1
    assert one_error_line(result).startswith(f"{library}:1:30: unexpected 'then'; expected ")


def test_plan_text_and_json(run_cli, db_path):
    module = compile_file(MAIN)
    text = run_cli(db_path, "dag", "plan", MAIN)
    assert text.exit_code == 0
    summary = "15 nodes in 6 stages (4 with more than one node)"
    assert text.stdout == f"{visualize_plan(module)}\n{summary}\n"
    data = run_cli(db_path, "dag", "plan", MAIN, "--json")
    assert data.exit_code == 0
    assert json.loads(data.stdout) == get_execution_plan(module).to_dict()
    assert set(json.loads(data.stdout)) == {"stages", "total_policies", "parallel_stages"}


def test_run_json_contract(run_cli, db_path):
    result = run_cli(db_path, "dag", "run", MAIN, "--context", f"@{CONTEXTS / 'pii.json'}",
                     "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["final_action"] == "deny" and data["decided_by"] == "pii_guard"
    assert data["total_stages"] == 6 and len(data["stages"]) == 2
    keys = ("index", "policies", "success", "action")
    assert [{k: s[k] for k in keys} for s in data["stages"]] == [
        {"index": 0, "policies": ["kill_switch", "unverified_agent", "prompt_injection_guard",
                                  "tool_use_guard"], "success": True, "action": None},
        {"index": 1, "policies": ["data_residency", "audit_access", "pii_guard",
                                  "pii_guard.email_address"], "success": True, "action": "deny"}]
    assert data["governance_summary"] == {"safety_passed": 4, "privacy_passed": 4,
                                          "operational_passed": 0}
    assert data["execution_id"].startswith("exec_") and len(data["execution_id"]) == 21
    assert not db_path.exists()


def test_run_inline_context_and_text_output(run_cli, db_path):
    context = json.dumps({"request": {"id": "r9", "topic": "legal", "text": "Is it legal?"},
                          "user": {"id": "u9", "status": "active"}, "agent": {"verified": True}})
    result = run_cli(db_path, "dag", "run", MAIN, "--context", context)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STAGE", "POLICIES", "ACTION", "SUCCESS"]
    assert "final action: escalate (by legal_review)" in lines
    assert re.fullmatch(r"execution id: exec_[0-9a-f]{16}; 6 of 6 stages run; [0-9]+ steps",
                        lines[-1])


def test_run_text_shows_route_target_and_node_errors(run_cli, db_path, policy_file):
    path = policy_file("policy loop: SAFETY { rule loop }\npolicy r: ROUTING { route to desk }")
    result = run_cli(db_path, "dag", "run", path, "--context", "{}")
    assert result.exit_code == 0
    assert "error in loop: rule reference cycle: loop -> loop (counted as deny)" in result.stdout
    assert "final action: deny (by loop)" in result.stdout
    routed = run_cli(db_path, "dag", "run", policy_file("policy r: ROUTING { route to desk }"),
                     "--context", "{}")
    assert "final action: route (by r, to desk)" in routed.stdout


def test_run_record_writes_a_policy_decision(run_cli, db_path):
    from hoc_drivers.db import connect_database
    from hoc_drivers.decisions import list_decisions

    assert run_cli(db_path, "init").exit_code == 0
    result = run_cli(db_path, "dag", "run", MAIN, "--context", f"@{CONTEXTS / 'pii.json'}",
                     "--record", "--tenant", "acme", "--json")
    assert result.exit_code == 0, result.stderr
    recorded = json.loads(result.stdout)["recorded_decision"]
    assert recorded["decision_outcome"] == "blocked"
    allowed = run_cli(db_path, "dag", "run", MAIN, "--context", f"@{CONTEXTS / 'benign.json'}",
                      "--record", "--tenant", "acme")
    assert allowed.exit_code == 0 and "(outcome selected, tenant acme)" in allowed.stdout
    db = connect_database(str(db_path))
    try:
        records = list_decisions(db, "acme")
        assert list_decisions(db, "other-tenant") == []
    finally:
        db.close()
    assert [r.decision_outcome.value for r in records] == ["blocked", "selected"]
    blocked = records[0]
    assert blocked.decision_id == recorded["decision_id"]
    assert blocked.decision_type.value == "policy" and blocked.request_id == "req-1002"
    assert blocked.decision_reason == "PLang main: deny by pii_guard"
    assert (blocked.details["final_action"], blocked.details["decided_by"]) == ("deny", "pii_guard")
    assert blocked.details["execution_id"] == json.loads(result.stdout)["execution_id"]
    assert records[1].details["final_target"] == "finance_agent"


def test_run_on_an_empty_context_names_what_the_policies_did_not_find(run_cli, db_path):
    text = run_cli(db_path, "dag", "run", MAIN, "--context", "{}")
    assert text.exit_code == 0, text.stderr
    (line,) = [line for line in text.stdout.splitlines() if line.startswith("not in the context")]
    assert line.startswith("not in the context (read as null): agent.environment, agent.frozen, ")
    assert "request.text" in line and "user.role" in line
    assert "final action: allow" in text.stdout
    data = json.loads(run_cli(db_path, "dag", "run", MAIN, "--context", "{}", "--json").stdout)
    assert data["final_action"] == "allow"
    assert "request.text" in data["missing_context"] and "user.role" in data["missing_context"]
    assert line.endswith(", ".join(data["missing_context"]))
    complete = run_cli(db_path, "dag", "run", MAIN, "--context", f"@{CONTEXTS / 'benign.json'}")
    assert "not in the context" not in complete.stdout
    assert json.loads(run_cli(db_path, "dag", "run", MAIN, "--context",
                              f"@{CONTEXTS / 'benign.json'}", "--json").stdout)[
        "missing_context"] == []


def test_strict_refuses_a_context_that_lacks_what_the_policies_read(run_cli, db_path):
    result = run_cli(db_path, "dag", "run", MAIN, "--context", '{"user": {"role": "x"}}',
                     "--strict", "--record", "--tenant", "acme", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    line = one_error_line(result)
    assert line.startswith("error: --strict: the context lacks agent.environment, ")
    assert "request.text" in line and "user.role" not in line
    assert not db_path.exists()
    complete = run_cli(db_path, "dag", "run", MAIN, "--context", f"@{CONTEXTS / 'benign.json'}",
                       "--strict")
    assert complete.exit_code == 0 and "final action: route" in complete.stdout


@pytest.mark.parametrize("context_name, fail_on, code", [
    ("pii", "deny", 3), ("pii", "escalate", 3), ("legal", "deny", 0), ("legal", "escalate", 3),
    ("benign", "deny", 0), ("benign", "escalate", 0),
])
def test_fail_on_exits_3_at_that_action_or_a_more_restrictive_one(run_cli, db_path, context_name,
                                                                    fail_on, code):
    result = run_cli(db_path, "dag", "run", MAIN, "--context",
                     f"@{CONTEXTS / (context_name + '.json')}", "--fail-on", fail_on, "--json")
    assert result.exit_code == code, result.stderr
    assert json.loads(result.stdout)["execution_id"].startswith("exec_")


def test_fail_on_still_records_the_decision(run_cli, db_path):
    assert run_cli(db_path, "init").exit_code == 0
    result = run_cli(db_path, "dag", "run", MAIN, "--context", f"@{CONTEXTS / 'pii.json'}",
                     "--fail-on", "deny", "--record", "--tenant", "acme")
    assert result.exit_code == 3
    assert "final action: deny (by pii_guard)" in result.stdout
    assert "(outcome blocked, tenant acme)" in result.stdout


@pytest.mark.parametrize("args, code, message", [
    (["check", "missing.plang"], 2, "does not exist"),
    (["run", MAIN], 2, "Missing option '--context'"),
    (["run", MAIN, "--context", "{not json"], 2, "--context: malformed JSON"),
    (["run", MAIN, "--context", "[1, 2]"], 2, "--context: must be a JSON object"),
    (["run", MAIN, "--context", "@/no/such/context.json"], 2, "--context: cannot read"),
    (["run", MAIN, "--context", "{}", "--record"], 2, "--record needs --tenant"),
    (["run", MAIN, "--context", "{}", "--record", "--tenant", " "], 2, "--record needs --tenant"),
    (["run", MAIN, "--context", "{}", "--tenant", "acme"], 2,
     "--tenant is only used with --record"),
    (["run", MAIN, "--context", "{}", "--fail-on", "route"], 2, "Invalid value for '--fail-on'"),
    (["plan", str(FIXTURES)], 2, "is a directory"),
    (["frobnicate"], 2, "No such command"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(run_cli, db_path, args, code, message):
    result = run_cli(db_path, "dag", *args)
    assert result.exit_code == code
    assert message in one_error_line(result)
    assert not db_path.exists()


@pytest.mark.parametrize("command", ["plan", "run"])
def test_plan_and_run_of_a_broken_file_exit_1_with_one_line(run_cli, db_path, policy_file, command):
    path = policy_file("policy p: SAFETY { when a == b == c then deny }")
    extra = ["--context", "{}", "--record", "--tenant", "acme"] if command == "run" else []
    result = run_cli(db_path, "dag", command, path, *extra)
    assert result.exit_code == 1
    assert one_error_line(result) == (f"error: {path}:1:32: unexpected '=='; "
                                      "expected '(', '.', 'and', 'or' or 'then'")
    assert not db_path.exists()


def test_check_json_reports_ok_and_errors(tmp_path):
    import json

    from click.testing import CliRunner

    import cli

    good = tmp_path / "good.plang"
    good.write_text("policy p: SAFETY { deny }\n")
    bad = tmp_path / "bad.plang"
    bad.write_text("policy p: SAFETY {\n  when then deny\n}\n")
    runner = CliRunner()
    ok = runner.invoke(cli.cli, ["--db", str(tmp_path / "x.db"), "dag", "check", str(good), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output) == {"ok": True, "file": str(good), "nodes": 1,
                                                             "stages": 1, "files": 1}
    failed = runner.invoke(cli.cli, ["--db", str(tmp_path / "x.db"), "dag", "check", str(bad), "--json"])
    data = json.loads(failed.output)
    assert failed.exit_code == 1 and data["ok"] is False and data["error"].startswith(f"{bad}:2:")
