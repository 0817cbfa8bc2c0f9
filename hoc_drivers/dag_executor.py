"""DAG-based executor for PLang v2.0.

Runs a compiled `PolicyModule` stage by stage (SPEC §12): the stages come from
`get_execution_plan`; a stage's action is the most restrictive of its nodes' actions
(DENY > ESCALATE > ROUTE > ALLOW; nodes with no action do not count); a stage that denies
ends the execution; the final action is the most restrictive of the executed stages', ALLOW
when there is none. A node that errors is DENY, its stage is not successful and the error
is in the trace. The trace lists the context paths the executed nodes read but did not find
(`missing_context`: each read as null, so a rule on it did not fire). Nodes of one stage may
run in a thread pool; the trace is the same as when they run one by one. This module never
touches the database.

The trace's counters, as the server edition's `ExecutionTrace.to_dict`: `total_steps` is the
sum, over the executed stages, of each stage's longest node (the steps a stage takes when its
nodes run side by side; each node's own steps are in its result); `intents_count` is how many
intents the executed nodes emitted: one for each node that ran without error and decided an
action. **(ours)** Every decided action is an intent (deny, escalate, route, allow); the server
edition counts only the intents its M19 validator let through (without one, only ALLOW
intents), and its one-node stages count again the steps of every earlier stage (one counter
shared along the run); here each node has its own step count.

    module = compile_file("fixtures/policies/main.plang")
    trace = DAGExecutor().execute(module, {"user": {"id": "u1", "role": "analyst"}})
    trace.final_action, trace.to_dict()
"""
ACCESS = "READ"
# ruff: noqa: E402  (the access declaration comes first, as the self-audit expects)

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .policy import (ActionType, Category, DeterministicEngine, ExecutionPlan, build_plan,
                     execution_id, visualize)

_COUNTED_CATEGORIES = (Category.SAFETY, Category.PRIVACY, Category.OPERATIONAL)


def most_restrictive(results):
    """The first result holding the most restrictive action, or None when none has an action."""
    chosen = None
    for result in results:
        if result.action is not None and (chosen is None
                                          or result.action.precedence > chosen.action.precedence):
            chosen = result
    return chosen


@dataclass(frozen=True)
class StageResult:
    """One executed stage: its node names and their results, in plan order."""

    index: int
    policies: tuple
    results: tuple

    @property
    def decisive(self):
        """The node result that gives the stage its action, or None."""
        return most_restrictive(self.results)

    @property
    def action(self):
        """The most restrictive action of the stage's nodes, or None."""
        decisive = self.decisive
        return decisive.action if decisive else None

    @property
    def steps(self):
        """The steps of the stage's longest node (0 for a stage without nodes)."""
        return max((result.steps for result in self.results), default=0)

    @property
    def intents_count(self):
        """How many of the stage's nodes ran without error and decided an action."""
        return sum(1 for result in self.results if result.success and result.action is not None)

    @property
    def success(self):
        """True when every node of the stage ran without error."""
        return all(result.success for result in self.results)

    @property
    def was_blocked(self):
        """True when the stage denied, which ends the execution."""
        return self.action is ActionType.DENY

    def to_dict(self):
        """`index`, `policies`, `success`, `action` (lower case or null) and each node's result."""
        action = self.action
        return {"index": self.index, "policies": list(self.policies), "success": self.success,
                "action": action.value if action else None,
                "results": [result.to_dict() for result in self.results]}


@dataclass(frozen=True)
class ExecutionTrace:
    """The outcome of executing a plan: executed stages, final action and governance counters."""

    execution_id: str
    total_stages: int
    stages: tuple
    final_action: ActionType
    decided_by: str | None
    final_target: str | None
    total_steps: int
    intents_count: int
    safety_passed: int
    privacy_passed: int
    operational_passed: int
    missing_context: tuple = ()

    def to_dict(self):
        """JSON-ready dict; `total_stages` is the planned count, `stages` the executed ones."""
        return {
            "execution_id": self.execution_id,
            "total_stages": self.total_stages,
            "stages": [stage.to_dict() for stage in self.stages],
            "final_action": self.final_action.value,
            "final_target": self.final_target,
            "decided_by": self.decided_by,
            "intents_count": self.intents_count,
            "total_steps": self.total_steps,
            "governance_summary": {"safety_passed": self.safety_passed,
                                   "privacy_passed": self.privacy_passed,
                                   "operational_passed": self.operational_passed},
            "missing_context": list(self.missing_context),
        }


def get_execution_plan(module):
    """The stages `module` runs in; raises `PolicyCycleError` on a route cycle."""
    return build_plan(module)


def visualize_plan(module):
    """The plan as text: `Execution DAG:`, then each phase's nodes, priorities and dependencies."""
    return visualize(module)


def missing_paths(results):
    """The context paths `results` read but did not find, sorted; a path is left out when a
    longer one under it is listed (`request.text` says that `request` is missing too)."""
    paths = {path for result in results for path in result.missing}
    return tuple(sorted(path for path in paths
                        if not any(other.startswith(path + ".") for other in paths)))


def _build_trace(identifier, plan, stages):
    executed = [result for stage in stages for result in stage.results]
    decisive = most_restrictive(stage.decisive for stage in stages if stage.decisive)
    passed = {category: sum(1 for r in executed if r.success and r.category is category)
              for category in _COUNTED_CATEGORIES}
    return ExecutionTrace(
        execution_id=identifier, total_stages=len(plan.stages), stages=tuple(stages),
        final_action=decisive.action if decisive else ActionType.ALLOW,
        decided_by=decisive.name if decisive else None,
        final_target=decisive.target if decisive else None,
        total_steps=sum(stage.steps for stage in stages),
        intents_count=sum(stage.intents_count for stage in stages),
        safety_passed=passed[Category.SAFETY], privacy_passed=passed[Category.PRIVACY],
        operational_passed=passed[Category.OPERATIONAL], missing_context=missing_paths(executed))


class DAGExecutor:
    """Executes PLang modules in DAG order; `max_workers` > 1 runs each stage in a thread pool."""

    def __init__(self, engine=None, max_workers=1):
        self.engine = engine or DeterministicEngine()
        self.max_workers = max_workers

    def get_execution_plan(self, module):
        """The stages `module` runs in (see the module-level function)."""
        return get_execution_plan(module)

    def visualize_plan(self, module):
        """The plan as text (see the module-level function)."""
        return visualize_plan(module)

    def execute(self, module, context, plan=None):
        """Run `module` against `context` (a JSON object) and return its `ExecutionTrace`.

        `plan` defaults to `get_execution_plan(module)`; a name in it that is not a node of
        the module is an error of that node (DENY).
        """
        if not isinstance(context, dict):
            raise TypeError("the context must be a JSON object (a dict)")
        if plan is None:
            plan = get_execution_plan(module)
        elif not isinstance(plan, ExecutionPlan):
            raise TypeError("plan must be an ExecutionPlan")
        snapshot = copy.deepcopy(context)   # nodes read it, nobody writes it

        def evaluate(name):
            return self.engine.evaluate(module, name, snapshot)

        pool = ThreadPoolExecutor(self.max_workers) if self.max_workers > 1 else None
        stages = []
        try:
            for index, names in enumerate(plan.stages):
                if pool is not None and len(names) > 1:
                    results = tuple(pool.map(evaluate, names))
                else:
                    results = tuple(evaluate(name) for name in names)
                stage = StageResult(index, tuple(names), results)
                stages.append(stage)
                if stage.was_blocked:
                    break
        finally:
            if pool is not None:
                pool.shutdown()
        return _build_trace(execution_id(context), plan, stages)
