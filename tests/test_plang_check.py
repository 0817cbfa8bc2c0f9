"""`dag check`: every error in one pass (located, coded, --json), warnings and --strict."""
import json
import pathlib
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hoc_drivers.policy import (PolicyError, PolicySyntaxError, compile_file, compile_source,
                                compiler)
from hoc_drivers.policy.checker import UNKNOWN, check_file, fold
from hoc_drivers.policy.generator import generate_policies
from hoc_drivers.policy.grammar import parse
from hoc_drivers.policy.planner import route_cycles

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "policies"

# Independent errors of every kind; each (line, column, code) below is one of them.
MANY_ERRORS = """\
import "absent.plang"

policy broken: SAFETY {
  when x = 1 then deny
}

policy refs: SAFETY {
  rule missing
  when contians(request.text, "a") then deny
  when len(request.text, 2) > 3 then deny
  when matches(request.text, "(?<=a)b") then deny
  route to later
}

policy later: CUSTOM {
  rule broken
  allow
}

policy a: ROUTING { route to b }
policy b: ROUTING { route to a }

policy unclosed: PRIVACY {
  when user.role == "admin" then allow

policy after: OPERATIONAL {
  priority 1.5
  rule unclosed
}

rule len: SAFETY { deny }
policy refs: SAFETY { deny }
"""
EXPECTED = [(1, 8, "P105"), (4, 10, "P001"), (8, 8, "P103"), (9, 8, "P110"), (10, 8, "P111"),
            (11, 30, "P112"), (12, 3, "P107"), (20, 21, "P109"), (26, 1, "P001"),
            (27, 12, "P104"), (31, 6, "P102"), (32, 8, "P101")]

WARNINGS = """\
import "lib.plang"
import "policies.plang"
import "policies.plang"

policy never: SAFETY {
  when 1 > 2 or not true then deny
  when len("abc") == 3 and true then escalate
  when user.role == "admin" then allow
}

policy ties: PRIVACY {
  rule first: PRIVACY { when user.a == 1 then deny }
  rule second: PRIVACY { when user.b == 1 then deny }
}

policy legal_review: ROUTING {
  deny
  rule ties
}

policy router: ROUTING {
  when request.topic == "legal" then route to legal_reveiw
  when request.topic == "tax" then route to finance_agent
}
"""
WARNED = [(1, 8, "W001"), (3, 8, "W001"), (6, 3, "W002"), (8, 3, "W002"), (13, 8, "W003"),
          (18, 8, "W002"), (22, 38, "W004")]


@pytest.fixture
def write(tmp_path):
    def write_file(text, name="p.plang"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)
    return write_file


def located(lines):
    """(line, column, code) of each `FILE:LINE:COL: ... [CODE]` line."""
    found = []
    for text in lines:
        after_file = text[text.index(".plang:") + len(".plang:"):]
        line, column, rest = after_file.split(":", 2)
        found.append((int(line), int(column), rest.rsplit("[", 1)[1].rstrip("]")))
    return found


def test_check_reports_every_error_located_with_its_code(run_cli, tmp_path, write):
    path = write(MANY_ERRORS)
    result = run_cli(tmp_path / "hoc.db", "dag", "check", path)
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith(f"{path}:") for line in lines), lines
    assert located(lines) == EXPECTED
    assert f"{path}:4:10: unexpected character '='" in lines[1]
    assert lines[8].startswith(f"{path}:26:1: unexpected 'policy'; expected ")
    assert "route cycle: a -> b -> a" in lines[7]


def test_check_json_lists_every_diagnostic(run_cli, tmp_path, write):
    path = write(MANY_ERRORS)
    result = run_cli(tmp_path / "hoc.db", "dag", "check", path, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["file"] == path
    assert data["error"].startswith(f"{path}:1:8: cannot import '")
    assert [(d["line"], d["column"], d["code"]) for d in data["diagnostics"]] == EXPECTED
    assert {d["severity"] for d in data["diagnostics"]} == {"error"}
    assert set(data["diagnostics"][0]) == {"file", "line", "column", "code", "severity", "message"}


def test_compile_still_raises_the_first_error(write):
    with pytest.raises(PolicySyntaxError) as raised:
        compile_source(MANY_ERRORS.replace('import "absent.plang"', ""), "p.plang")
    assert (raised.value.line, raised.value.column, raised.value.code) == (4, 10, "P001")
    with pytest.raises(PolicySyntaxError) as raised:   # the file parses before its imports load
        compile_file(write(MANY_ERRORS))
    assert (raised.value.line, raised.value.column) == (4, 10)


def test_a_statement_that_does_not_parse_still_declares_its_name(write):
    # `unclosed` and `broken` do not parse, yet `rule unclosed` and `rule broken` resolve.
    report = check_file(write(MANY_ERRORS))
    assert not any("undefined rule 'unclosed'" in e.message or "'broken'" in e.message
                   for e in report.errors)


def test_syntax_errors_in_several_statements_and_files(run_cli, tmp_path, write):
    write("policy lib: SAFETY { when then deny }\n", "lib.plang")
    path = write('import "lib.plang"\npolicy p: SAFETY { when a = 1 then deny }\n'
                 'policy q: SAFETY { when "open then deny }\n')
    result = run_cli(tmp_path / "hoc.db", "dag", "check", path, path)
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines           # each problem once, though the file is given twice
    assert lines[0].startswith(f"{path}:2:27: unexpected character '='")
    assert lines[1].startswith(f"{path}:3:25: unterminated string")
    assert lines[2].startswith(f"{tmp_path}/lib.plang:1:27: unexpected 'then'")


def test_a_clean_file_parses_once(monkeypatch, write):
    calls = []
    monkeypatch.setattr(compiler, "parse_recovering",
                        lambda text, file: calls.append(file) or (parse(text, file), []))
    report = check_file(write("policy p: SAFETY { deny }\n"))
    assert calls == [report.file] and not report.errors


@pytest.mark.parametrize("files, expected", [
    ({"p.plang": 'import "q.plang"\nimport ""\npolicy p: SAFETY { deny }\n',
      "q.plang": 'import "p.plang"\npolicy q: SAFETY { deny }\n'},
     [("p.plang", 2, 8, "P105"), ("q.plang", 1, 8, "P106")]),
    ({"p.plang": "policy p: SAFETY {\n  when " + "not " * 101 + "true then deny\n"
                 "}\npolicy q: SAFETY { when 1" + "0" * 5000 + " > 1 then deny }\n"},
     [("p.plang", 2, 3, "P108"), ("p.plang", 4, 25, "P002")]),
])
def test_import_depth_and_number_errors_are_collected(tmp_path, write, files, expected):
    for name, text in files.items():
        write(text, name)
    report = check_file(str(tmp_path / "p.plang"))
    assert [(pathlib.Path(e.file).name, e.line, e.column, e.code) for e in report.errors] == expected
    assert report.warnings == []      # an expression too deep to check is not folded either


def test_route_cycles_reports_each_cycle(write):
    path = write("policy a: ROUTING { route to b }\npolicy b: ROUTING { route to a }\n"
                 "policy c: ROUTING { route to d }\npolicy d: ROUTING { route to c }\n")
    report = check_file(path)
    assert [str(e).split(": ", 1)[1] for e in report.errors] == [
        "route cycle: a -> b -> a", "route cycle: c -> d -> c"]
    assert report.plan is None and len(route_cycles(report.module)) == 2


def test_warnings_are_printed_and_strict_makes_them_errors(run_cli, tmp_path, write):
    write("rule helper: SAFETY { deny }\n", "lib.plang")
    write("policy imported: SAFETY { deny }\n", "policies.plang")
    path = write(WARNINGS)
    relaxed = run_cli(tmp_path / "hoc.db", "dag", "check", path)
    assert relaxed.exit_code == 0
    assert relaxed.stdout == f"{path}: ok (8 nodes in 3 stages, 3 files; 7 warnings)\n"
    lines = relaxed.stderr.splitlines()
    assert located(lines) == WARNED and all(": warning: " in line for line in lines)
    strict = run_cli(tmp_path / "hoc.db", "dag", "check", path, "--strict")
    assert strict.exit_code == 1 and strict.stdout == ""
    assert located(strict.stderr.splitlines()) == WARNED
    assert ": warning: " not in strict.stderr
    assert "did you mean 'legal_review'?" in strict.stderr
    data = json.loads(run_cli(tmp_path / "hoc.db", "dag", "check", path, "--strict",
                              "--json").stdout)
    assert data["ok"] is False and {d["severity"] for d in data["diagnostics"]} == {"error"}


def test_every_code_in_the_source_is_in_the_documented_table():
    source = "".join(path.read_text() for path in (ROOT / "hoc_drivers" / "policy").glob("*.py"))
    used = set(re.findall(r'"([PW]\d{3})"', source))
    documented = set(re.findall(r"^\| ([PW]\d{3}) \|", (ROOT / "docs" / "plang.md").read_text(), re.M))
    assert used == documented and len(used) == 19


def test_the_fixtures_are_clean_even_strictly(run_cli, tmp_path):
    files = sorted(str(path) for path in FIXTURES.glob("*.plang"))
    result = run_cli(tmp_path / "hoc.db", "dag", "check", "--strict", *files)
    assert result.exit_code == 0 and result.stderr == ""
    assert len(result.stdout.splitlines()) == len(files)
    data = json.loads(run_cli(tmp_path / "hoc.db", "dag", "check", "--json", *files).stdout)
    assert [entry["file"] for entry in data] == files and all(entry["ok"] for entry in data)


@pytest.mark.parametrize("condition, value", [
    ("1 > 2", False), ("not (1 < 2)", False), ('lower("A") == "a"', True),
    ("user.x == 1 and false", False), ("user.x == 1 or true", True),
    ("user.x == 1 or false", UNKNOWN), ('contains("abc", user.y)', UNKNOWN), ("zzz(1)", UNKNOWN),
    ("len(1, 2)", UNKNOWN), ('matches("a", "(?<=a)")', UNKNOWN),
])
def test_constant_folding(condition, value):
    when = parse(f"policy p: SAFETY {{ when {condition} then deny }}").statements[0].items[0]
    assert fold(when.condition) is value


# Edits anywhere in a valid text, quotes left alone (the splitter ends a string at its line's
# end, so a string made to run over lines is reported where it opens, not where lark stops).
EDITS = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.sampled_from("del{}()=#.:,a1 \n")),
                 min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(edits=EDITS)
@example(edits=[(0.1015625, "\n"), (0.091796875, "#")])  # a comment hides an opening quote
def test_check_never_raises_and_reports_the_error_compile_raises_first(edits, tmp_path_factory):
    text = generate_policies(12)
    for where, edit in edits:
        position = int(where * len(text))
        if edit == "del":
            text = text[:position] + text[position + 1:] if text[position] != '"' else text
        else:
            text = text[:position] + edit + text[position:]
    path = tmp_path_factory.mktemp("fuzz") / "p.plang"
    path.write_text(text, encoding="utf-8")
    try:
        compile_file(str(path))
        first = None
    except PolicyError as error:
        first = error
    errors = check_file(str(path)).errors
    if first is None:
        assert errors == []
    else:
        assert (first.line, first.column, first.message) in [
            (error.line, error.column, error.message) for error in errors]
