"""The PLang compiler at its edges: the exact, coded message of each import refusal, module
names and the folder imports resolve against, the pattern-length boundary of the compile-time
RE2 check, and messages that carry no stray text."""
import os
import subprocess
import sys
import textwrap

import pytest

from hoc_drivers.policy import PolicyCompileError, compile_file, compile_source, compiler


def compile_error(source, **kwargs):
    with pytest.raises(PolicyCompileError) as caught:
        compile_source(textwrap.dedent(source).lstrip("\n"), **kwargs)
    return caught.value


@pytest.mark.parametrize("target, reason", [
    ("/etc/passwd.plang", "an import is a path relative to the importing file's folder"),
    ("../up.plang", "it is outside the importing file's folder (imports stay in that folder and "
                    "its subfolders)"),
    ("notes.txt", "not a .plang file"),
])
def test_an_import_refusal_is_p105_with_its_whole_reason(tmp_path, target, reason):
    main = tmp_path / "main.plang"
    main.write_text(f'import "{target}"\n')
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(str(main))
    error = caught.value
    assert (error.code, error.message) == ("P105", f"cannot import {target!r}: {reason}")
    assert str(error) == f"{main}:1:8: cannot import {target!r}: {reason}"


def test_an_empty_import_is_p105_and_says_so():
    error = compile_error('import ""')
    assert (error.code, error.message, error.line, error.column) == (
        "P105", "import path is empty", 1, 8)


def test_a_missing_file_is_p105_located_in_that_file(tmp_path):
    path = str(tmp_path / "absent.plang")
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(path)
    assert caught.value.to_dict() == {
        "file": path, "line": 1, "column": 1, "code": "P105", "severity": "error",
        "message": f"cannot read {path}: not a readable file"}


def test_an_unknown_function_without_a_close_name_gets_no_hint():
    error = compile_error("policy p: SAFETY { when frobnicate() then deny }")
    assert (error.code, error.message) == ("P110", "unknown function 'frobnicate'")
    error = compile_error("policy p: SAFETY { when lenn(a) > 1 then deny }")
    assert error.message == "unknown function 'lenn' (did you mean 'len'?)"


def test_a_literal_pattern_is_checked_up_to_the_longest_pattern_matches_takes():
    refused = "a(?=b)"
    at_limit = refused + "a" * (compiler.MAX_PATTERN_LENGTH - len(refused))
    error = compile_error(f'policy p: SAFETY {{ when matches(t, "{at_limit}") then deny }}')
    assert error.code == "P112" and error.message.startswith("matches(): RE2 cannot compile")
    # longer: matches() never runs it (always false), so it is not compiled either
    compile_source(f'policy p: SAFETY {{ when matches(t, "{at_limit}a") then deny }}')


def test_module_names_default_to_main_or_the_files_stem(tmp_path):
    assert compile_source("policy p: SAFETY { }").name == "main"
    assert compile_source("policy p: SAFETY { }", module_name="other").name == "other"
    path = tmp_path / "guards.plang"
    path.write_text("policy p: SAFETY { }\n")
    assert compile_file(str(path)).name == "guards"
    assert compiler.collect_file(str(path)).module.name == "guards"


def test_source_imports_resolve_against_base_dir_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "lib.plang").write_text("rule shared: SAFETY { deny }\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    module = compile_source('import "lib.plang"\npolicy p: SAFETY { rule shared }',
                            base_dir=str(tmp_path))
    assert list(module.nodes) == ["shared", "p"]
    error = compile_error('import "lib.plang"')  # the cwd, where there is no lib.plang
    assert error.message == f"cannot import {str(elsewhere / 'lib.plang')!r}: not a readable file"


def test_a_file_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused(tmp_path):
    limit = compiler.MAX_SOURCE_BYTES
    path = tmp_path / "big.plang"
    path.write_text("#" + "x" * (limit - 2) + "\n")
    assert compile_file(str(path)).nodes == {}
    path.write_text("#" + "x" * (limit - 1) + "\n")
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(str(path))
    assert caught.value.message == f"cannot read {path}: larger than {limit} bytes"


def test_a_file_that_is_not_utf8_is_refused_as_such(tmp_path):
    path = tmp_path / "latin1.plang"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(PolicyCompileError) as caught:
        compile_file(str(path))
    assert (caught.value.code, caught.value.message) == ("P105", f"cannot read {path}: not UTF-8 text")


@pytest.mark.skipif(not os.path.isfile("/proc/self/mem"), reason="needs Linux's /proc")
def test_a_file_that_fails_while_read_is_refused_with_the_systems_reason():
    # /proc/self/mem is a regular file that fails with EIO when read from its start
    with pytest.raises(PolicyCompileError) as caught:
        compile_file("/proc/self/mem")
    assert caught.value.message == "cannot read /proc/self/mem: Input/output error"


def test_a_priority_too_large_is_p104_and_says_so():
    error = compile_error("policy p: SAFETY { priority " + "9" * 5000 + " }")
    assert (error.code, error.message) == ("P104", "priority is too large")


@pytest.mark.parametrize("nots, refused", [(99, False), (100, True)])
def test_a_condition_may_nest_exactly_100_levels(nots, refused):
    source = "policy p: SAFETY { when " + "not " * nots + "a then deny }"  # a at depth nots + 1
    if not refused:
        assert list(compile_source(source).nodes) == ["p"]
        return
    error = compile_error(source)
    assert (error.code, error.message) == ("P108", "expression nested deeper than 100 levels")


def test_collecting_keeps_the_first_of_a_duplicate_and_leaves_out_builtin_names(tmp_path):
    path = tmp_path / "dup.plang"
    path.write_text("policy p: SAFETY {\n"
                    "  rule r: SAFETY { deny }\n"
                    "  rule r: SAFETY { allow }\n"
                    "  rule len: SAFETY { allow }\n"
                    "}\n"
                    "policy q: PRIVACY { deny }\n"
                    "policy q: PRIVACY { allow }\n"
                    "rule contains: SAFETY { deny }\n")
    collected = compiler.collect_file(str(path))
    assert sorted((e.code, e.line) for e in collected.errors) == [
        ("P101", 3), ("P101", 7), ("P102", 4), ("P102", 8)]
    nodes = collected.module.nodes
    assert [(n.name, n.kind, n.location.line) for n in nodes.values()] == [
        ("p", "policy", 1), ("p.r", "rule", 2), ("q", "policy", 6)]
    assert [nodes[name].body[0].action.value for name in ("p.r", "q")] == ["deny", "deny"]


def test_policy_files_are_read_as_utf8_whatever_the_locale(tmp_path):
    path = tmp_path / "accents.plang"
    path.write_text('policy p: SAFETY { when contains(request.text, "café") then deny }\n',
                    encoding="utf-8")
    script = ("import sys\nfrom hoc_drivers.policy import DeterministicEngine, compile_file\n"
              "module = compile_file(sys.argv[1])\n"
              "print(DeterministicEngine().evaluate(module, 'p', {'request': {'text': 'un caf\\u00e9'}})"
              ".action.value)\n")
    # the C locale without UTF-8 mode: Python's default encoding for open() is ASCII there
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0",
               PYTHONPATH=os.pathsep.join(sys.path))  # the child imports hoc_drivers from where this process does
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, cwd=os.getcwd(),
                          capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "deny"), done.stderr
