"""`dag fmt`: one canonical layout that keeps the meaning, the comments and the rule order."""
import copy
import dataclasses
import json
import pathlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoc_drivers.dag_executor import DAGExecutor
from hoc_drivers.policy import build_plan, compile_source
from hoc_drivers.policy.formatter import format_source
from hoc_drivers.policy.generator import generate_policies, sample_context
from hoc_drivers.policy.grammar import _get_parser

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "policies"
# Whitespace (and comments) a careless author may put between two tokens.
SEPARATORS = (" ", "   ", "\t", "\n", "\n\n\n", "\n      ", " # note\n", "\n# own line\n\n")

MESSY = """
   # head


policy   x :SAFETY{ # after the brace
priority 5 # the priority
rule y : SAFETY {when a.b( 1 ,2 )>3 and # mid-condition
   not ( c ) then route   to z }


  # before the close

}
"""
CANONICAL = """# head

policy x: SAFETY {  # after the brace
  priority 5  # the priority
  rule y: SAFETY {
    when a.b(1, 2) > 3 and  # mid-condition
        not (c) then route to z
  }

  # before the close
}
"""


def shape(value):
    """`value` as nested tuples without source positions, to compare two compiled modules."""
    if dataclasses.is_dataclass(value):
        return (type(value).__name__,) + tuple(
            shape(getattr(value, f.name)) for f in dataclasses.fields(value)
            if f.name not in ("line", "column", "location"))
    if isinstance(value, dict):
        return tuple((key, shape(item)) for key, item in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(shape(item) for item in value)
    return value


def contexts():
    """The generator's sample context and variants that make other rules fire."""
    variants = [sample_context() for _ in range(4)]
    variants[1]["user"]["role"] = "guest"
    variants[2]["request"]["tokens"] = 200000
    variants[2]["agent"]["tier"] = "premium"
    variants[3]["budget"]["spent_cents"] = 9000
    variants[3]["user"]["region"] = "apac"
    return variants


def meaning(source):
    """The compiled module's structure, its plan and its decisions on the sample contexts."""
    module = compile_source(source)
    plan = build_plan(module)
    decisions = []
    for context in contexts():
        trace = DAGExecutor().execute(module, copy.deepcopy(context), plan)
        decisions.append((trace.final_action, trace.decided_by, trace.final_target))
    return shape(module.nodes), plan.to_dict(), decisions


def tokens(source):
    """The tokens of `source`, comments included, without the whitespace between them."""
    return [(token.type, token.rstrip()) for token in _get_parser().lex(source, dont_ignore=True)
            if not token.type.startswith("__IGNORE")]


def relayout(source, choices):
    """`source` with the whitespace between its tokens replaced by `choices` (cycled)."""
    pieces = []
    for index, token in enumerate(_get_parser().lex(source, dont_ignore=True)):
        if token.type.startswith("__IGNORE"):
            continue
        separator = choices[index % len(choices)]
        pieces.append(token + ("\n" if token.type == "COMMENT" else "") + separator)
    return "".join(pieces)


@settings(max_examples=1000, deadline=None)
@given(count=st.integers(1, 6), seed=st.integers(0, 2**16),
       choices=st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=40))
def test_fmt_keeps_meaning_and_is_idempotent(count, seed, choices):
    original = generate_policies(count, seed)
    messy = relayout(original, choices)
    formatted = format_source(messy)
    assert format_source(formatted) == formatted
    assert meaning(formatted) == meaning(original)
    assert tokens(formatted) == tokens(messy)  # order, text and comments kept


def test_fmt_lays_out_a_messy_file():
    assert format_source(MESSY) == CANONICAL
    assert format_source(CANONICAL) == CANONICAL


def test_fmt_of_generated_policies_is_the_generator_layout():
    source = generate_policies(40)
    expected = re.sub(r"\{ (when .* then deny) \}", "{\n    \\1\n  }", source)
    assert expected != source
    assert format_source(source) == expected


def test_fixtures_are_formatted(run_cli, tmp_path):
    files = sorted(str(path) for path in FIXTURES.glob("*.plang"))
    result = run_cli(tmp_path / "hoc.db", "dag", "fmt", "--check", *files)
    assert result.exit_code == 0, result.output
    assert result.output == ""


@pytest.fixture
def messy_file(tmp_path):
    path = tmp_path / "messy.plang"
    path.write_text(MESSY, encoding="utf-8")
    return path


def test_fmt_prints_the_formatted_source(run_cli, tmp_path, messy_file):
    result = run_cli(tmp_path / "hoc.db", "dag", "fmt", str(messy_file))
    assert result.exit_code == 0
    assert result.output == CANONICAL
    assert messy_file.read_text(encoding="utf-8") == MESSY


def test_fmt_check_and_diff_fail_on_a_file_that_would_change(run_cli, tmp_path, messy_file):
    checked = run_cli(tmp_path / "hoc.db", "dag", "fmt", "--check", str(messy_file))
    assert checked.exit_code == 1
    assert checked.output == f"would reformat {messy_file}\n"
    diffed = run_cli(tmp_path / "hoc.db", "dag", "fmt", "--check", "--diff", str(messy_file))
    assert diffed.exit_code == 1
    assert f"+++ {messy_file} (formatted)" in diffed.output
    assert "-policy   x :SAFETY{ # after the brace\n" in diffed.output
    assert "+policy x: SAFETY {  # after the brace\n" in diffed.output
    assert messy_file.read_text(encoding="utf-8") == MESSY


def test_fmt_write_rewrites_then_check_passes(run_cli, tmp_path, messy_file):
    written = run_cli(tmp_path / "hoc.db", "dag", "fmt", "--write", str(messy_file))
    assert written.exit_code == 0
    assert written.output == f"reformatted {messy_file}\n"
    assert messy_file.read_text(encoding="utf-8") == CANONICAL
    assert run_cli(tmp_path / "hoc.db", "dag", "fmt", "--check", str(messy_file)).exit_code == 0


def test_fmt_refuses_a_file_that_does_not_parse(run_cli, tmp_path):
    path = tmp_path / "bad.plang"
    path.write_text("policy x: SAFETY {\n  when then deny\n}\n", encoding="utf-8")
    result = run_cli(tmp_path / "hoc.db", "dag", "fmt", "--write", str(path))
    assert result.exit_code == 1
    assert f"{path}:2:8:" in result.stderr
    assert path.read_text(encoding="utf-8") == "policy x: SAFETY {\n  when then deny\n}\n"


def test_fmt_json_names_the_files_that_change(run_cli, tmp_path, messy_file):
    main = str(FIXTURES / "main.plang")
    result = run_cli(tmp_path / "hoc.db", "dag", "fmt", "--check", "--json", str(messy_file), main)
    assert result.exit_code == 1
    assert json.loads(result.output) == {
        "files": [{"file": str(messy_file), "changed": True}, {"file": main, "changed": False}],
        "changed": 1}
