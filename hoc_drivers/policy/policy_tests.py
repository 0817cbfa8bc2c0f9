"""Policy unit tests: the test-file format and its runner (`hoc-drivers dag test`).

A test file is JSON named `NAME_test.json`, beside the policy `NAME.plang` it tests:

    {"cases": [
      {"name": "frozen agent is denied",
       "context": {"agent": {"frozen": true}},
       "action": "deny",
       "decided_by": "kill_switch",
       "target": null}
    ]}

`name`, `context` (a JSON object) and `action` (allow, deny, escalate or route: the final
action) are required; `decided_by` (the deciding policy or rule) and `target` (the route
target) are checked only when given. A top-level `"policy": "other.plang"` (relative to the
test file) tests another file. Coverage lists every `when` and bare action of the compiled
policies (imports included) as FILE:LINE, with whether any case's executed node decided there.
"""
import json
import os
from dataclasses import dataclass

from ..dag_executor import DAGExecutor, get_execution_plan
from .compiler import Location, compile_file
from .nodes import ActionItem, ActionType, When

TEST_SUFFIX = "_test.json"
_CASE_KEYS = {"name", "context", "action", "decided_by", "target"}
_ACTIONS = {action.value for action in ActionType}


class PolicyTestFileError(ValueError):
    """A test file that cannot be read or does not follow the format."""


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome: `failure` is the one-line difference, None when it passed."""

    file: str
    name: str
    failure: str | None

    @property
    def passed(self):
        """True when the case got what it expected."""
        return self.failure is None

    def to_dict(self):
        """JSON-ready dict: file, name, passed and failure."""
        return {"file": self.file, "name": self.name, "passed": self.passed,
                "failure": self.failure}


def find_test_files(paths):
    """The `*_test.json` files among `paths` (files, or folders searched recursively), sorted."""
    found = set()
    for path in paths:
        if os.path.isdir(path):
            for folder, _, names in os.walk(path):
                found.update(os.path.join(folder, name) for name in names
                             if name.endswith(TEST_SUFFIX))
        else:
            found.add(path)
    return sorted(found)


def _fail(path, message):
    raise PolicyTestFileError(f"{path}: {message}")


def load_test_file(path):
    """The policy path and the checked cases of test file `path`; raises `PolicyTestFileError`."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        _fail(path, f"cannot read: {error}")
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        _fail(path, 'must be a JSON object with a "cases" list')
    default = os.path.basename(path).removesuffix(TEST_SUFFIX) + ".plang"
    policy = data.get("policy", default)
    if not isinstance(policy, str):
        _fail(path, '"policy" must be a file name')
    for index, case in enumerate(data["cases"]):
        if not isinstance(case, dict) or not {"name", "context", "action"} <= set(case):
            _fail(path, f"case {index + 1}: needs name, context and action")
        if set(case) - _CASE_KEYS:
            _fail(path, f"case {index + 1}: unknown keys {sorted(set(case) - _CASE_KEYS)}")
        if not isinstance(case["context"], dict) or case["action"] not in _ACTIONS:
            _fail(path, f"case {index + 1}: context must be an object and action one of "
                        f"{sorted(_ACTIONS)}")
    return os.path.join(os.path.dirname(path), policy), data["cases"]


def _outcome(action, decided_by, target):
    text = action + (f" by {decided_by}" if decided_by else "")
    return text + (f" to {target}" if target else "")


def run_case(file, module, plan, case, executor):
    """Run one case; returns its `CaseResult` and the `Location`s its executed nodes decided at."""
    trace = executor.execute(module, case["context"], plan)
    actual = {"action": trace.final_action.value, "decided_by": trace.decided_by,
              "target": trace.final_target}
    expected = {key: case[key] for key in ("action", "decided_by", "target") if key in case}
    failure = None
    if any(actual[key] != value for key, value in expected.items()):
        failure = (f"expected {_outcome(*(expected.get(k) for k in actual))}, "
                   f"got {_outcome(*actual.values())}")
    sources = {result.source for stage in trace.stages for result in stage.results
               if result.source is not None}
    return CaseResult(file, case["name"], failure), sources


def decision_points(module):
    """{Location: node name} of every `when` and bare action in the module's nodes."""
    return {Location(node.location.file, item.line, item.column): node.name
            for node in module.nodes.values() for item in node.body
            if type(item) in (When, ActionItem)}


def run_test_files(paths):
    """Run every case of the test files; returns (case results, coverage).

    Coverage maps each policy file to a list of {"line", "node", "fired"}, sorted by line.
    Raises `PolicyTestFileError` for a malformed test file and `PolicyError` for a policy that
    does not compile.
    """
    executor = DAGExecutor()
    results, points, fired = [], {}, set()
    for file in paths:
        policy, cases = load_test_file(file)
        module = compile_file(policy)
        plan = get_execution_plan(module)
        points.update(decision_points(module))
        for case in cases:
            result, sources = run_case(file, module, plan, case, executor)
            results.append(result)
            fired |= sources
    coverage = {}
    for location in sorted(points, key=lambda at: (at.file, at.line, at.column)):
        coverage.setdefault(location.file, []).append(
            {"line": location.line, "node": points[location], "fired": location in fired})
    return results, coverage
