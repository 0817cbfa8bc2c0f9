"""docs/plang.md: every example on the page runs and decides what the page says it decides.

The convention is documented at the top of the page: ```plang blocks (optionally
`file=NAME`), an optional ```json context, then `expected: ACTION [to TARGET] [by NODE]` or
`expected error: TEXT`; ```console blocks run `$ hoc-drivers ...` lines and check `# exit N`.
"""
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hoc_drivers.dag_executor import DAGExecutor
from hoc_drivers.policy import PolicyError, compile_source

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plang.md"
_TOKEN = re.compile(r"^```(\w+)(?: file=(\S+))?\n(.*?)^```$|^expected( error)?: ([^\n]*)$",
                    re.S | re.M)
_OUTCOME = re.compile(r"(allow|deny|escalate|route)(?: to (\w+))?(?: by ([\w.]+))?")
_EXIT = re.compile(r"#\s*exit\s+(\d+)\s*$")


@dataclass
class Example:
    """One checked example: files to write, the policy, its context and what must happen."""

    line: int
    files: dict = field(default_factory=dict)
    source: str | None = None
    context: dict = field(default_factory=dict)
    expected: str | None = None        # "deny", "route to x by y", ...
    error: str | None = None           # fragment of the compile error
    commands: list = field(default_factory=list)    # (argv, exit code)


def examples(markdown):
    """The page's examples in order; a ```plang block with no expectation is an error."""
    found, current = [], Example(1)
    for match in _TOKEN.finditer(markdown):
        line = markdown.count("\n", 0, match.start()) + 1
        language, name, body, is_error, expectation = match.groups()
        if expectation is not None:
            assert current.source is not None, f"docs/plang.md:{line}: expectation without policy"
            if is_error:
                current.error = expectation.strip()
            else:
                current.expected = expectation.strip()
            found.append(current)
            current = Example(line)
        elif language == "plang" and name:
            current.files[name] = body
        elif language == "plang":
            assert current.source is None, f"docs/plang.md:{line}: previous policy not checked"
            current.source, current.line = body, line
        elif language == "json" and current.source is not None:
            current.context = json.loads(body)
        elif language == "console":
            current.commands = [_command(text) for text in body.splitlines()
                                if text.startswith("$ ")]
            found.append(current)
            current = Example(line)
    assert current.source is None, f"docs/plang.md:{current.line}: policy without expectation"
    return found


def _command(text):
    """`$ hoc-drivers dag ... # exit N` -> (arguments after the program name, N)."""
    code = _EXIT.search(text)
    assert code, f"no '# exit N' on: {text}"
    argv = shlex.split(text[2:code.start()])
    assert argv[0] == "hoc-drivers", text
    return argv[1:], int(code.group(1))


def run_example(example, folder, run_cli):
    """Write the files, then check the example's expectation; an AssertionError says where."""
    for name, body in example.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(body, encoding="utf-8")
    where = f"docs/plang.md:{example.line}"
    for argv, code in example.commands:
        result = run_cli(folder / "hoc.db", *argv)
        assert result.exit_code == code, f"{where}: {argv} exited {result.exit_code}\n{result.output}"
    if example.source is None:
        return
    executor = DAGExecutor()
    try:
        module = compile_source(example.source, "example.plang", base_dir=str(folder))
        plan = executor.get_execution_plan(module)
    except PolicyError as error:
        assert example.error and example.error in str(error), f"{where}: {error}"
        return
    assert example.error is None, f"{where}: compiled, expected error {example.error!r}"
    trace = executor.execute(module, example.context, plan)
    action, target, by = _OUTCOME.fullmatch(example.expected).groups()
    assert trace.final_action.value == action, f"{where}: {trace.to_dict()}"
    assert target is None or trace.final_target == target, f"{where}: {trace.to_dict()}"
    assert by is None or trace.decided_by == by, f"{where}: {trace.to_dict()}"


EXAMPLES = examples(DOCS.read_text(encoding="utf-8"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"line{e.line}" for e in EXAMPLES])
def test_example_runs_as_documented(example, tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    run_example(example, tmp_path, run_cli)


def test_the_page_covers_every_action_errors_and_the_cli():
    assert 8 <= len(EXAMPLES) <= 20
    outcomes = {e.expected.split()[0] for e in EXAMPLES if e.expected}
    assert outcomes == {"allow", "deny", "escalate", "route"}
    assert sum(1 for e in EXAMPLES if e.error) >= 4
    commands = [argv for e in EXAMPLES for argv, _ in e.commands]
    assert {"--strict", "--fail-on"} <= {arg for argv in commands for arg in argv}


def test_a_wrong_expectation_is_caught(tmp_path, run_cli):
    markdown = DOCS.read_text(encoding="utf-8").replace("expected: deny by kill_switch",
                                                        "expected: deny by suspended_user")
    changed = [e for e in examples(markdown) if e.expected == "deny by suspended_user"]
    with pytest.raises(AssertionError, match="decided_by"):
        run_example(changed[0], tmp_path, run_cli)


def test_a_policy_without_expectation_is_caught():
    with pytest.raises(AssertionError, match="without expectation"):
        examples("```plang\npolicy p: SAFETY { deny }\n```\n")
