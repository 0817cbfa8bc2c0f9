"""`dag test`: policy unit tests beside the policies, pass/fail per case, coverage per line."""
import json
import pathlib
import shutil

import pytest

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "policies"


@pytest.fixture
def policies(tmp_path):
    folder = tmp_path / "policies"
    shutil.copytree(FIXTURES, folder)
    return folder


def test_the_fixture_tests_pass_and_report_coverage(run_cli, tmp_path, policies):
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(policies), "--coverage")
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "21 passed, 0 failed"
    assert f"{policies}/main_test.json::a frozen agent is denied first PASSED" in lines
    assert f"{policies}/safety.plang: 5 of 5 fired" in lines
    assert "coverage: 21 of 21 rules fired (100%)" in lines


def _without_cases_decided_by(policies, *nodes):
    """The fixture cases less those decided by `nodes` (so those rules never fire)."""
    cases_file = policies / "main_test.json"
    cases = json.loads(cases_file.read_text())
    cases["cases"] = [case for case in cases["cases"] if case.get("decided_by") not in nodes]
    cases_file.write_text(json.dumps(cases))
    return cases_file


def test_coverage_names_each_rule_no_case_fired(run_cli, tmp_path, policies):
    _without_cases_decided_by(policies, "unverified_agent", "audit_access")
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(policies), "--coverage")
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.stdout.splitlines()
    assert (f"{policies}/shared_rules.plang: 0 of 2 fired; never fired: line 5 (unverified_agent), "
            "10 (audit_access)") in lines
    assert "coverage: 19 of 21 rules fired (90%)" in lines


def test_a_policy_change_that_breaks_a_case_fails_it(run_cli, tmp_path, policies):
    safety = policies / "safety.plang"
    safety.write_text(safety.read_text().replace("agent.frozen == true then deny",
                                                 "agent.frozen == true then escalate"))
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(policies))
    assert result.exit_code == 1
    assert (f"FAILED {policies}/main_test.json::a frozen agent is denied first: "
            "expected deny by kill_switch, got escalate by kill_switch") in result.stdout
    assert result.stdout.splitlines()[-1] == "20 passed, 1 failed"


def test_json_output_and_coverage(run_cli, tmp_path, policies):
    cases_file = _without_cases_decided_by(policies, "unverified_agent", "audit_access")
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(cases_file), "--json", "--coverage")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["ok"], report["passed"], report["failed"]) == (True, 19, 0)
    shared = report["coverage"][f"{policies}/shared_rules.plang"]
    assert shared == [{"line": 5, "node": "unverified_agent", "fired": False},
                      {"line": 10, "node": "audit_access", "fired": False}]


def test_a_wrong_route_target_is_a_one_line_diff(run_cli, tmp_path):
    (tmp_path / "r.plang").write_text("policy r: ROUTING {\n  when x == 1 then route to agent_a\n}\n")
    (tmp_path / "r_test.json").write_text(json.dumps({"cases": [
        {"name": "to b", "context": {"x": 1}, "action": "route", "target": "agent_b"}]}))
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(tmp_path), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["cases"][0]["failure"] == (
        "expected route to agent_b, got route by r to agent_a")


@pytest.mark.parametrize("content, message", [
    ("{bad", "cannot read"),
    ('{"cases": [{"name": "n", "context": {}}]}', "case 1: needs name, context and action"),
    ('{"cases": [{"name": "n", "context": {}, "action": "maybe"}]}', "action one of"),
    ('{"cases": [{"name": "n", "context": {}, "action": "allow", "by": "x"}]}', "unknown keys"),
])
def test_a_malformed_test_file_is_bad_input(run_cli, tmp_path, content, message):
    (tmp_path / "p.plang").write_text("policy p: CUSTOM {\n  allow\n}\n")
    (tmp_path / "p_test.json").write_text(content)
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(tmp_path))
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_policy_that_does_not_compile_exits_1(run_cli, tmp_path):
    (tmp_path / "p.plang").write_text("policy p: CUSTOM {\n  when then\n}\n")
    (tmp_path / "p_test.json").write_text('{"cases": []}')
    result = run_cli(tmp_path / "hoc.db", "dag", "test", str(tmp_path))
    assert result.exit_code == 1
    assert "p.plang:2" in result.stderr
