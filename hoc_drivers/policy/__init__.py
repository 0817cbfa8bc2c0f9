r"""PLang v2.0: grammar, checked module, planner and deterministic engine (SPEC §12).

    module = compile_file("fixtures/policies/main.plang")   # or compile_source(text)
    plan = build_plan(module)                                # stages of node names
    result = DeterministicEngine().evaluate(module, "pii_guard", context)

`hoc_drivers.dag_executor.DAGExecutor` runs a whole plan and returns the trace;
`checker.check_file(path)` reports every error and warning at once (`dag check`).

String escapes: `\n`, `\t` and `\r` are newline, tab and carriage return, `\"` is a double
quote and `\\` a backslash; a backslash before any other character is kept with that character
(`"\s\d\."` is the six characters `\s\d\.`), so a `matches()` pattern written with single
backslashes means what it says to the regex engine.
"""
from .compiler import Location, PolicyModule, PolicyNode, compile_file, compile_source
from .engine import DEFAULT_MAX_STEPS, DeterministicEngine, NodeResult, execution_id
from .errors import (PolicyCompileError, PolicyCycleError, PolicyError, PolicyRuntimeError,
                     PolicySyntaxError)
from .grammar import parse
from .nodes import ActionType, Category
from .planner import ExecutionPlan, build_plan, visualize

__all__ = [
    "ActionType", "Category", "DEFAULT_MAX_STEPS", "DeterministicEngine", "ExecutionPlan",
    "Location", "NodeResult", "PolicyCompileError", "PolicyCycleError", "PolicyError",
    "PolicyModule", "PolicyNode", "PolicyRuntimeError", "PolicySyntaxError", "build_plan",
    "compile_file", "compile_source", "execution_id", "parse", "visualize",
]
