"""PLang v2.0: every grammar production, every compile error (with its location), value
semantics, builtins, RE2 regexes, import confinement and the engine's evaluation of single
nodes."""
import os
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoc_drivers.policy import (ActionType, Category, DeterministicEngine, PolicyCompileError,
                                PolicyError, PolicySyntaxError, compile_file, compile_source, parse)
from hoc_drivers.policy.functions import PatternError, call_builtin, safe_matches
from hoc_drivers.policy.grammar import unescape
from hoc_drivers.policy.nodes import (ActionItem, And, Attribute, Call, Compare, Declaration,
                                      Import, Literal, Not, Or, PriorityItem, RuleRef, Variable,
                                      When)


def body_of(source):
    """The items of the first declaration of `source`."""
    return parse(textwrap.dedent(source)).statements[0].items


def condition_of(expression):
    """The syntax tree of `expression` used as a condition."""
    return body_of(f"policy p: SAFETY {{ when {expression} then deny }}")[0].condition


def decide(source, context, name=None):
    """Compile `source` and evaluate node `name` (default: the first) against `context`."""
    module = compile_source(textwrap.dedent(source))
    return DeterministicEngine().evaluate(module, name or next(iter(module.nodes)), context)


def value_of(expression, context=None):
    """The value of `expression` under `context`, observed through `when ... then deny`."""
    return decide(f"policy p: CUSTOM {{ when {expression} then deny }}", context or {}).action


def compile_error(source, error=PolicyCompileError):
    with pytest.raises(error) as caught:
        compile_source(textwrap.dedent(source).lstrip("\n"))
    return caught.value


# --- grammar: statements and bodies ---------------------------------------------------------

def test_empty_program_and_comments_only():
    assert parse("").statements == ()
    assert parse("# nothing here\n   # still nothing").statements == ()


def test_statements_policy_rule_and_import():
    program = parse('import "a.plang"\npolicy p: SAFETY { deny }\nrule r: CUSTOM { allow }')
    first, second, third = program.statements
    assert first == Import("a.plang", 1, 8)
    assert isinstance(second, Declaration) and (second.kind, second.name) == ("policy", "p")
    assert (second.line, second.column) == (2, 8)
    assert isinstance(third, Declaration)
    assert (third.kind, third.category) == ("rule", Category.CUSTOM)


@pytest.mark.parametrize("category", list(Category))
def test_every_category(category):
    declaration = parse(f"policy p: {category.value} {{ }}").statements[0]
    assert declaration.category is category and declaration.items == ()


def test_policy_items_rule_ref_nested_rule_priority_condition_action():
    items = body_of("""
        policy p: SAFETY {
          rule helper
          rule nested: PRIVACY { priority 3 when true then allow escalate }
          priority 7
          when x then deny
          route to agent_x
        }""")
    ref, nested, priority, when, route = items
    assert ref == RuleRef("helper", 3, 8)
    assert nested.kind == "rule" and nested.category is Category.PRIVACY
    assert [type(item) for item in nested.items] == [PriorityItem, When, ActionItem]
    assert priority == PriorityItem("7", 5, 12)
    assert when.condition == Variable("x") and when.action.action is ActionType.DENY
    assert route == ActionItem(ActionType.ROUTE, "agent_x", 7, 3)


@pytest.mark.parametrize("text, action, target", [
    ("deny", ActionType.DENY, None), ("allow", ActionType.ALLOW, None),
    ("escalate", ActionType.ESCALATE, None), ("route to billing", ActionType.ROUTE, "billing"),
])
def test_every_action(text, action, target):
    (item,) = body_of(f"policy p: CUSTOM {{ {text} }}")
    assert (item.action, item.target) == (action, target)


@pytest.mark.parametrize("body", ["rule helper", "rule inner: SAFETY { deny }"])
def test_rule_bodies_take_no_rule_references_or_nested_rules(body):
    with pytest.raises(PolicySyntaxError) as caught:
        parse(f"rule r: SAFETY {{ {body} }}")
    assert caught.value.column == 18 and "'rule'" in caught.value.message


# --- grammar: expressions --------------------------------------------------------------------

@pytest.mark.parametrize("op", ["==", "!=", "<", ">", "<=", ">="])
def test_every_comparison_operator(op):
    assert condition_of(f"a {op} 1") == Compare(op, Variable("a"), Literal(1))


def test_precedence_or_and_not_comparison():
    assert condition_of("a and b or c") == Or((And((Variable("a"), Variable("b"))), Variable("c")))
    assert condition_of("a or b and c") == Or((Variable("a"), And((Variable("b"), Variable("c")))))
    assert condition_of("not a == b") == Not(Compare("==", Variable("a"), Variable("b")))
    assert condition_of("not not a") == Not(Not(Variable("a")))
    assert condition_of("(a or b) and c") == And((Or((Variable("a"), Variable("b"))),
                                                  Variable("c")))
    assert condition_of("a or b or c") == Or((Variable("a"), Variable("b"), Variable("c")))


def test_comparison_is_not_associative():
    with pytest.raises(PolicySyntaxError) as caught:
        parse("policy p: SAFETY { when a == b == c then deny }")
    assert (caught.value.line, caught.value.column) == (1, 32)
    assert "unexpected '=='" in caught.value.message and "'then'" in caught.value.expected


def test_literals_numbers_strings_booleans():
    assert condition_of("42") == Literal(42)
    assert condition_of("3.25") == Literal(3.25)
    assert condition_of("true") == Literal(True) and condition_of("false") == Literal(False)
    assert condition_of(r'"a\"b\\c\nd\te\qf"') == Literal('a"b\\c\nd\te\\qf')
    assert condition_of('"# not a comment"') == Literal("# not a comment")


def test_postfix_chains_calls_and_method_sugar():
    assert condition_of("user.profile.role") == Attribute(Attribute(Variable("user"), "profile"),
                                                          "role")
    assert condition_of("f()") == Call("f", ())
    assert condition_of("contains(a, 1)") == Call("contains", (Variable("a"), Literal(1)))
    assert condition_of("request.text.startswith(\"x\")") == Call(
        "startswith", (Attribute(Variable("request"), "text"), Literal("x")))
    assert condition_of("lower(a).b") == Attribute(Call("lower", (Variable("a"),)), "b")
    assert condition_of("len((a))") == Call("len", (Variable("a"),))


def test_unescape():
    assert unescape(r"plain") == "plain"
    assert unescape(r"\r\n\t\"\\\x") == '\r\n\t"\\\\x'     # an undefined escape keeps its backslash


def test_undefined_escapes_keep_the_backslash_so_regexes_mean_what_they_say():
    assert condition_of(r'matches(a, "\s\d\.")').args[1] == Literal(r"\s\d\.")
    assert condition_of(r'matches(a, "\\d")').args[1] == Literal(r"\d")       # "\\" is still "\"
    context = {"request": {"text": "order 12x4"}}
    assert value_of(r'matches(request.text, "\s\d\d\.")', context) is None   # "\." is a dot
    assert value_of(r'matches(request.text, "r\s\d")', context) is ActionType.DENY
    assert value_of(r'request.text == "order\s"', {"request": {"text": "order\\s"}}) is ActionType.DENY


# --- grammar: errors --------------------------------------------------------------------------

@pytest.mark.parametrize("source, line, column, fragment", [
    ("policy p: SAFETY {", 1, 19, "unexpected end of input; expected 'allow', 'deny'"),
    ("policy p: safety { }", 1, 11, "unexpected name 'safety'"),
    ("policy deny: SAFETY { }", 1, 8, "unexpected 'deny'; expected a name"),
    ("policy p: SAFETY {\n  when user.priority > 1 then deny }", 2, 13, "unexpected 'priority'"),
    ("policy p: SAFETY { when a = 1 then deny }", 1, 27, "unexpected character '='"),
    ('policy p: SAFETY { when a == "open then deny }', 1, 30, "unterminated string"),
    ("policy p: SAFETY { when -1 < a then deny }", 1, 25, "unexpected character '-'"),
    ("policy p: SAFETY { route agent }", 1, 26, "expected 'to'"),
    ("policy p: SAFETY { when a deny }", 1, 27, "unexpected 'deny'"),
    ("import other", 1, 8, "expected a string"),
    ("policy p SAFETY { }", 1, 10, "expected ':'"),
    ("policy p: SAFETY { when 1.2.3 then deny }", 1, 28, "unexpected '.'"),
    ("policy p: SAFETY { when a then log }", 1, 32, "unexpected name 'log'"),
    ("policy p: SAFETY { when f(a)(b) then deny }", 1, 29, "unexpected '('"),
])
def test_syntax_errors_have_line_column_and_expected(source, line, column, fragment):
    with pytest.raises(PolicySyntaxError) as caught:
        compile_source(source, file="t.plang")
    error = caught.value
    assert (error.file, error.line, error.column) == ("t.plang", line, column)
    assert fragment in error.message
    assert str(error) == f"t.plang:{line}:{column}: {error.message}"


def test_expected_names_are_readable():
    with pytest.raises(PolicySyntaxError) as caught:
        parse("policy p: SAFETY { when a then }")
    assert caught.value.expected == ("'allow'", "'deny'", "'escalate'", "'route'")


# --- compile errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("source, line, column, fragment", [
    ("policy a: SAFETY { }\npolicy a: PRIVACY { }", 2, 8,
     "duplicate name 'a' in the module (first declared at <string>:1:8)"),
    ("policy a: SAFETY { }\nrule a: PRIVACY { }", 2, 6, "duplicate name 'a'"),
    ("policy p: SAFETY {\n  rule r: SAFETY { }\n  rule r: SAFETY { }\n}", 3, 8,
     "duplicate name 'r' in policy 'p'"),
    ("policy len: SAFETY { }", 1, 8, "policy 'len' is named like a builtin"),
    ("rule matches: SAFETY { }", 1, 6, "rule 'matches' is named like a builtin"),
    ("policy p: SAFETY {\n  rule starts_with: SAFETY { } }", 2, 8, "named like a builtin"),
    ("policy p: SAFETY {\n  rule nowhere\n}", 2, 8, "undefined rule 'nowhere'"),
    ("policy p: SAFETY {\n  priority 2.5\n}", 2, 12, "priority must be an integer, not 2.5"),
    ("policy p: SAFETY { priority " + "9" * 5000 + " }", 1, 29, "priority is too large"),
    ("policy p: SAFETY { when a > " + "9" * 5000 + " then deny }", 1, 29,
     "number literal is too long"),
    ("policy p: SAFETY {\n  route to q\n}\npolicy q: PRIVACY { }", 2, 3,
     "route to 'q' (PRIVACY) from 'p' (SAFETY): a route target must not run in a later phase"),
    ("policy p: SAFETY {\n  when " + "not " * 150 + "a then deny }", 2, 3,
     "nested deeper than 100"),
    ('import "no_such_file.plang"', 1, 8, "cannot import"),
    ('import ""', 1, 8, "import path is empty"),
    ('import "a\x00b.plang"', 1, 8, "cannot import 'a\\x00b.plang': the path holds a NUL character"),
    ('policy p: SAFETY {\n  when contians(request.text, "x") then deny }', 2, 8,
     "unknown function 'contians' (did you mean 'contains'?)"),
    ("policy p: SAFETY { when frobnicate() then deny }", 1, 25, "unknown function 'frobnicate'"),
    ("policy p: SAFETY { when not (a and len(a, b) > 1) then deny }", 1, 36,
     "len() takes 1 argument, not 2"),
    ("policy p: SAFETY { when a.startswith() then deny }", 1, 27,
     "startswith() takes 2 arguments, not 1"),
    ('policy p: SAFETY { when in_list("a") then deny }', 1, 25, "in_list() takes 2 arguments"),
])
def test_compile_errors_have_line_and_column(source, line, column, fragment):
    error = compile_error(source)
    assert (error.file, error.line, error.column) == ("<string>", line, column)
    assert fragment in error.message


def test_nested_rule_may_reuse_its_policy_name_and_other_policies_names():
    module = compile_source("policy p: SAFETY { rule p: SAFETY { deny } rule q: SAFETY { } }\n"
                            "policy q: SAFETY { }")
    assert list(module.nodes) == ["p", "p.p", "p.q", "q"]


def test_forward_references_resolve_nested_before_top_level():
    module = compile_source("policy p: SAFETY { rule r rule later }\n"
                            "policy other: SAFETY { rule r: SAFETY { deny } }\n"
                            "rule later: SAFETY { allow }\nrule r: SAFETY { deny }")
    assert [item.name for item in module.nodes["p"].body] == ["r", "later"]
    module = compile_source("policy p: SAFETY { rule r rule r: SAFETY { deny } }\n"
                            "rule r: CUSTOM { }")
    assert module.nodes["p"].body[0].name == "p.r"


def test_priorities_last_one_wins_else_category_default():
    module = compile_source("\n".join(f"policy {c.value.lower()}: {c.value} {{ }}"
                                      for c in Category)
                            + "\npolicy explicit: CUSTOM { priority 5 deny priority 250 }")
    assert {name: node.priority for name, node in module.nodes.items()} == {
        "safety": 100, "privacy": 90, "operational": 50, "routing": 30, "custom": 10,
        "explicit": 250}


def test_route_targets_earlier_phase_and_agents_are_accepted():
    module = compile_source("policy s: SAFETY { }\n"
                            "policy r: ROUTING { route to s route to agent_x }")
    assert module.nodes["r"].dependencies == ["s"]


@pytest.fixture
def policy_dir(tmp_path):
    def write(name, text):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return str(path)
    return write


def test_imports_resolve_relative_to_the_importing_file_and_load_once(policy_dir):
    policy_dir("lib/common.plang", "rule shared: SAFETY { deny }")
    policy_dir("lib/a.plang", 'import "common.plang"\npolicy a: SAFETY { rule shared }')
    policy_dir("lib/b.plang", 'import "./common.plang"\npolicy b: PRIVACY { }')
    main = policy_dir("main.plang",
                      'import "lib/a.plang"\nimport "lib/b.plang"\npolicy m: CUSTOM { }')
    module = compile_file(main)
    assert list(module.nodes) == ["shared", "a", "b", "m"]
    assert [os.path.basename(f) for f in module.files] == ["main.plang", "a.plang",
                                                           "common.plang", "b.plang"]
    assert module.name == "main"


def test_import_cycles_are_errors(policy_dir):
    policy_dir("a.plang", 'import "b.plang"\npolicy a: SAFETY { }')
    policy_dir("b.plang", 'policy b: SAFETY { }\nimport "a.plang"')
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(policy_dir("main.plang", 'import "a.plang"'))
    error = caught.value
    assert error.file.endswith("b.plang") and (error.line, error.column) == (2, 8)
    assert error.message == "import cycle: a.plang -> b.plang -> a.plang"
    self_import = policy_dir("self.plang", '# me\nimport "self.plang"')
    with pytest.raises(PolicyCompileError, match="import cycle: self.plang -> self.plang"):
        compile_file(self_import)


def test_import_of_directory_non_utf8_and_duplicates_across_files(policy_dir, tmp_path):
    (tmp_path / "dir.plang").mkdir()
    (tmp_path / "latin1.plang").write_bytes(b"# caf\xe9\n")
    for target, fragment in [("dir.plang", "not a readable file"), ("latin1.plang", "not UTF-8")]:
        with pytest.raises(PolicyCompileError, match=fragment) as caught:
            compile_file(policy_dir("m.plang", f'\n  import "{target}"'))
        assert (caught.value.line, caught.value.column) == (2, 8)
    policy_dir("one.plang", "policy same: SAFETY { }")
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(policy_dir("two.plang", 'import "one.plang"\npolicy same: SAFETY { }'))
    assert caught.value.file.endswith("two.plang") and caught.value.line == 2
    assert "first declared at" in caught.value.message and "one.plang:1:8" in caught.value.message


def test_an_unreadable_import_is_reported_once(policy_dir, tmp_path):
    missing = os.path.join(str(tmp_path), "absent.plang")
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(policy_dir("m.plang", 'import "absent.plang"'))
    assert caught.value.message == f"cannot import {missing!r}: not a readable file"


@pytest.mark.parametrize("target, reason", [
    ("/etc/shadow", "an import is a path relative to the importing file's folder"),
    ("{outside}/secret.plang", "an import is a path relative to the importing file's folder"),
    ("../secret.plang", "it is outside the importing file's folder"),
    ("lib/../../secret.plang", "it is outside the importing file's folder"),
    ("escape.plang", "it is outside the importing file's folder"),        # a symlink out
    ("escape_dir/secret.plang", "it is outside the importing file's folder"),
    ("notes.txt", "not a .plang file"),
    ("disguised.plang", "not a .plang file"),                              # a symlink to notes.txt
])
def test_imports_stay_in_the_importing_files_folder_and_echo_no_content(tmp_path, target, reason):
    (tmp_path / "secret.plang").write_text("SECRET_WORD policy s: SAFETY { }\n")
    tree = tmp_path / "policies"
    (tree / "lib").mkdir(parents=True)
    (tree / "notes.txt").write_text("SECRET_WORD and more\n")
    (tree / "escape.plang").symlink_to(tmp_path / "secret.plang")
    (tree / "escape_dir").symlink_to(tmp_path, target_is_directory=True)
    (tree / "disguised.plang").symlink_to(tree / "notes.txt")
    main = tree / "main.plang"
    main.write_text(f'# main\nimport "{target.format(outside=tmp_path)}"\n')
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(str(main))
    error = caught.value
    assert (error.file, error.line, error.column) == (str(main), 2, 8)
    assert reason in error.message and "SECRET" not in str(error)


def test_imports_inside_the_folder_tree_may_use_dots_and_symlinks(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "common.plang").write_text("rule shared: SAFETY { deny }\n")
    (tmp_path / "alias.plang").symlink_to(tmp_path / "lib" / "common.plang")
    (tmp_path / "lib" / "a.plang").write_text('import "./common.plang"\npolicy a: SAFETY { }\n')
    main = tmp_path / "main.plang"
    main.write_text('import "lib/../lib/a.plang"\nimport "alias.plang"\npolicy m: CUSTOM { }\n')
    assert list(compile_file(str(main)).nodes) == ["shared", "a", "m"]


def test_missing_top_level_file_is_a_compile_error_at_1_1(tmp_path):
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(str(tmp_path / "absent.plang"))
    assert (caught.value.line, caught.value.column) == (1, 1)
    assert "cannot read" in caught.value.message


# --- values, null semantics and builtins ------------------------------------------------------

CONTEXT = {"user": {"role": "analyst", "age": 40, "tags": ["a", "b"], "ok": True, "score": 1.0},
           "request": {"text": "Hello World", "id": "r1"}, "n": None}


@pytest.mark.parametrize("expression, decides", [
    ("user.role == \"analyst\"", True),
    ("user.missing == null_var", True),              # null equals only null
    ("user.missing == 0", False),
    ("user.missing != \"admin\"", True),
    ("user.score == 1", True),                       # 1 == 1.0
    ("user.ok == 1", False),                         # a boolean equals only a boolean
    ("user.ok == true", True),
    ("user.age > 18 and user.age <= 40", True),
    ("user.missing < 10", False), ("user.missing > 10", False),   # null never orders
    ("user.missing <= user.missing", False),
    ("user.role > 5", False), ("user.role < 5", False),             # mixed types never order
    ("user.tags > user.tags", False),
    ("\"b\" > \"a\"", True),
    ("user.role.inner == null_var", True),           # attributes of non-dicts are null
    ("request.text.__class__ == null_var", True),    # never Python attributes
    ("not user.missing", True),
    ("user.tags", True), ("user.role and n", False), ("n or user.age", True),
])
def test_value_semantics(expression, decides):
    assert (value_of(expression, CONTEXT) is ActionType.DENY) is decides


@pytest.mark.parametrize("name, args, expected", [
    ("contains", ["Hello", "ell"], True), ("contains", [["a", 1], 1.0], True),
    ("contains", [{"k": 1}, "k"], True), ("contains", ["abc", 1], None),
    ("contains", [None, "a"], None),
    ("startswith", ["abc", "ab"], True), ("starts_with", ["abc", "b"], False),
    ("startswith", [1, "a"], None), ("endswith", ["abc", "bc"], True),
    ("endswith", ["abc", None], None),
    ("len", ["abc"], 3), ("len", [[1, 2]], 2), ("len", [{}], 0), ("len", [5], None),
    ("lower", ["AbC"], "abc"), ("upper", ["AbC"], "ABC"), ("lower", [None], None),
    ("in_list", ["b", ["a", "b"]], True), ("in_list", [True, [1]], False),
    ("in_list", ["a", "abc"], None),
    ("is_empty", [None], True), ("is_empty", [""], True), ("is_empty", [[0]], False),
    ("is_empty", [0], None),
    ("matches", ["order 123", "[0-9]+"], True), ("matches", ["abc", "^b"], False),
    ("matches", [None, "a"], None),
    ("len", ["a", "b"], None), ("contains", ["a"], None), ("no_such_builtin", [], None),
])
def test_builtins(name, args, expected):
    assert call_builtin(name, args) == expected


@pytest.mark.parametrize("pattern, text, expected", [
    ("(a+)+", "caaab", True), ("(a*)*b", "aab", True), ("(\\w+\\s?)*$", "a" * 30 + "!", True),
    ("((ab)+c)+", "ababcabc", True), ("(x(a+)y){2,}", "xayxaay", True), ("(a|b+)*c", "abbc", True),
    ("(?:a+)+$", "a" * 30 + "!", False), ("(a|aa)+$", "a" * 30 + "!", False),
])
def test_nested_quantifiers_run_as_written(pattern, text, expected):
    assert safe_matches(text, pattern) is expected


@pytest.mark.parametrize("pattern", [
    "ab*ab*", "(ab|cd)+", "[(a+)]+", "\\(a+\\)+", "(a+)?", "^[0-9]{3}-[0-9]{4}$", "(?i)hello",
    "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}", "\\pL+",
])
def test_ordinary_patterns_compile(pattern):
    assert safe_matches("", pattern) in (True, False)


def test_matches_length_limits():
    assert safe_matches("x" * 1024, "x$") is True
    assert safe_matches("x" * 1025, "x") is False
    assert safe_matches("abc", "a" + "b?" * 63 + "c") is True       # 128 characters
    assert safe_matches("abc", "a" + "b?" * 64) is False             # 129 characters


@pytest.mark.parametrize("pattern, reason", [
    ("(\\d+)\\1", "invalid escape sequence: \\1"), ("(?P<w>a)(?P=w)", "invalid perl operator: (?P"),
    ("(a)?(?(1)b|c)", "invalid perl operator: (?("), ("a(?=b)", "invalid perl operator"),
    ("(?<!a)b", "invalid perl operator"), ("(unclosed", "missing )"),
])
def test_patterns_re2_refuses_are_compile_errors_at_the_pattern(pattern, reason):
    with pytest.raises(PatternError, match="RE2 cannot compile"):
        safe_matches("abc", pattern)
    literal = pattern.replace("\\", "\\\\")
    error = compile_error(f'policy p: SAFETY {{\n  when x and matches(a, "{literal}") then deny }}')
    assert (error.line, error.column) == (2, 25)
    assert error.message.startswith(f"matches(): RE2 cannot compile {pattern!r}: ")
    assert reason in error.message


def test_a_refused_pattern_from_the_context_fails_the_node_closed():
    result = decide("policy p: SAFETY { when matches(request.text, request.pattern) then allow }",
                    {"request": {"text": "aa", "pattern": "(a)\\1"}})
    assert result.action is ActionType.DENY
    assert result.error.startswith("matches(): RE2 cannot compile '(a)\\\\1'")
    fine = decide("policy p: SAFETY { when matches(request.text, request.pattern) then allow }",
                  {"request": {"text": "aa", "pattern": "(a)+"}})
    assert fine.action is ActionType.ALLOW and fine.error is None


def test_catastrophic_patterns_take_linear_time_through_the_language():
    # Python's backtracking engine needs seconds for the first and centuries for the second.
    for text in ("a" * 34 + "!", "a" * 1023 + "!"):
        started = time.perf_counter()
        result = decide('policy p: SAFETY { when matches(request.text, "(a|aa)+$") then deny allow }',
                        {"request": {"text": text}})
        assert time.perf_counter() - started < 0.5
        assert result.action is ActionType.ALLOW and result.error is None


# --- the engine on one node -------------------------------------------------------------------

def test_first_matching_action_of_any_kind_is_the_result():
    source = """
        policy p: ROUTING {
          when request.kind == "esc" then escalate
          when request.kind == "route" then route to expert
          deny
          allow
        }"""
    assert decide(source, {"request": {"kind": "esc"}}).action is ActionType.ESCALATE
    routed = decide(source, {"request": {"kind": "route"}})
    assert (routed.action, routed.target) == (ActionType.ROUTE, "expert")
    assert decide(source, {}).action is ActionType.DENY


def test_reaching_the_end_yields_no_action():
    result = decide("policy p: SAFETY { priority 3 when false then deny }", {})
    assert result.action is None and result.error is None and result.steps == 2


def test_rule_reference_yields_the_rules_action_or_falls_through():
    source = """
        rule is_guest: SAFETY { when user.role == "guest" then deny }
        policy p: SAFETY {
          rule is_guest
          when user.role == "admin" then escalate
          rule helper
          rule helper: SAFETY { when user.role == "analyst" then route to analyst_desk }
        }"""
    assert decide(source, {"user": {"role": "guest"}}, "p").action is ActionType.DENY
    assert decide(source, {"user": {"role": "admin"}}, "p").action is ActionType.ESCALATE
    assert decide(source, {"user": {"role": "analyst"}}, "p").target == "analyst_desk"
    assert decide(source, {"user": {"role": "other"}}, "p").action is None


def test_self_reference_fails_closed_with_the_cycle_in_the_error():
    result = decide("policy p: SAFETY { rule q }\npolicy q: SAFETY { rule p }", {}, "p")
    assert result.action is ActionType.DENY and not result.success
    assert result.error == "rule reference cycle: p -> q -> p"


def test_step_limit_per_node_fails_closed():
    source = "policy p: SAFETY { when a and b and c then deny allow }"
    module = compile_source(source)
    assert DeterministicEngine(max_steps=5).evaluate(module, "p", {"a": 1, "b": 1, "c": 1}).action \
        is ActionType.DENY
    limited = DeterministicEngine(max_steps=4).evaluate(module, "p", {"a": 1, "b": 1, "c": 0})
    assert limited.action is ActionType.DENY and limited.error == "step limit exceeded (4 steps)"
    assert limited.steps == 5
    assert DeterministicEngine(max_steps=6).evaluate(module, "p", {"a": 1, "b": 1, "c": 0}).action \
        is ActionType.ALLOW
    with pytest.raises(ValueError):
        DeterministicEngine(max_steps=0)


def test_default_step_limit_stops_exponential_rule_chains():
    lines = ["policy p0: SAFETY { when true and true then allow }"]
    lines += [f"policy p{i}: SAFETY {{ rule p{i - 1} rule p{i - 1} }}" for i in range(1, 16)]
    module = compile_source("\n".join(lines))
    # p15 only ever reaches p0's allow on its first branch: cheap.
    assert DeterministicEngine().evaluate(module, "p15", {}).action is ActionType.ALLOW
    lines[0] = "policy p0: SAFETY { when false then allow }"
    result = DeterministicEngine().evaluate(compile_source("\n".join(lines)), "p15", {})
    assert result.action is ActionType.DENY and "step limit exceeded (10000 steps)" == result.error


def test_short_circuit_counts_fewer_steps():
    module = compile_source("policy p: SAFETY { when a or b.c.d.e then deny }")
    engine = DeterministicEngine()
    assert engine.evaluate(module, "p", {"a": True}).steps < engine.evaluate(module, "p", {}).steps


def test_context_is_never_written():
    context = {"user": {"role": "x", "tags": ["b", "a"]}}
    decide('policy p: SAFETY {\n'
           '  when upper(user.role) == "X" and contains(user.tags, "a") then deny }',
           context)
    assert context == {"user": {"role": "x", "tags": ["b", "a"]}}


# --- fuzzing the front end -------------------------------------------------------------------

VOCABULARY = ["policy", "rule", "p", "q", ":", "SAFETY", "ROUTING", "{", "}", "when", "then",
              "deny", "allow", "route", "to", "priority", "1", "2.5", "(", ")", ",", ".", "and",
              "or", "not", "==", "<", '"s"', "true", "import", '"x.plang"', "#", "\n", "len",
              "escalate", "escalate", "=", "!", "-", '"', "\\"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_raises_only_policy_errors(text):
    try:
        compile_source(text, base_dir="/nonexistent-dir")
    except (PolicySyntaxError, PolicyCompileError) as error:
        assert error.line >= 1 and error.column >= 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(VOCABULARY), max_size=40))
def test_fuzz_token_soup_raises_only_policy_errors(words):
    try:
        module = compile_source(" ".join(words), base_dir="/nonexistent-dir")
    except (PolicySyntaxError, PolicyCompileError) as error:
        assert isinstance(error, PolicyError) and str(error).startswith("<string>:")
    else:
        for name in module.nodes:
            assert DeterministicEngine().evaluate(module, name, {}).steps >= 0
