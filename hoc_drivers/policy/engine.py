"""The deterministic engine: evaluates one node of a `PolicyModule` against a context.

A node's body runs in order: `when C then A` yields A when C is truthy; a bare action
yields itself; `rule X` evaluates X there and yields X's action if it has one. The first
action reached is the node's result; reaching the end yields none. The context's top-level
keys are the variables; it is only read, never written. A variable or key the context does
not have reads as null, and its dotted path (`request.text`) is recorded in the result's
`missing`; the result's `source` is where the deciding `when` or bare action is written (for
test coverage). Each node has its own step budget; any error (step limit, a rule that calls
itself, a pattern RE2 refuses) fails closed: the result is DENY with the error recorded.
"""
import hashlib
from dataclasses import dataclass

from .compiler import Location
from .errors import PolicyRuntimeError
from .functions import call_builtin, compare
from .nodes import (ActionItem, ActionType, And, Attribute, Call, Compare, Literal, Not, Or,
                    RuleRef, Variable)

DEFAULT_MAX_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class NodeResult:
    """What one node decided: its action and route target, steps used, any error, and the
    context paths it read but did not find (`missing`, in reading order) and the `Location`
    of the `when` or bare action that decided (`source`, None when nothing did)."""

    name: str
    category: object
    action: ActionType | None
    target: str | None
    steps: int
    error: str | None = None
    missing: tuple = ()
    source: Location | None = None

    @property
    def success(self):
        """True when the node ran without error (whatever it decided)."""
        return self.error is None

    def to_dict(self):
        """JSON-ready dict; actions in lower case, null when the node decided nothing."""
        return {"name": self.name, "category": self.category.value if self.category else None,
                "action": self.action.value if self.action else None, "target": self.target,
                "steps": self.steps, "error": self.error}


def execution_id(context):
    """`exec_` + 16 hex digits of sha256("{request.id}:{user.id}:{agent.id}").

    A missing id is written `None`, so the same context always gives the same id.
    """
    ids = []
    for key in ("request", "user", "agent"):
        holder = context.get(key) if isinstance(context, dict) else None
        ids.append(holder.get("id") if isinstance(holder, dict) else None)
    digest = hashlib.sha256(":".join(str(value) for value in ids).encode("utf-8")).hexdigest()
    return "exec_" + digest[:16]


class _NodeEvaluation:
    """The state of evaluating one node: the step count and the chain of rules being called."""

    def __init__(self, module, context, max_steps):
        self.module = module
        self.context = context
        self.max_steps = max_steps
        self.steps = 0
        self.calling = []
        self.missing = {}          # dotted paths read but absent, in reading order
        self.source = None         # Location of the item that decided

    def limit_exceeded(self):
        """The error raised when a step goes over the budget."""
        return PolicyRuntimeError(f"step limit exceeded ({self.max_steps} steps)")

    def run(self, name):
        """The `ActionItem` node `name` yields, or None."""
        if name in self.calling:
            chain = " -> ".join(self.calling[self.calling.index(name):] + [name])
            raise PolicyRuntimeError(f"rule reference cycle: {chain}")
        node = self.module.nodes.get(name)
        if node is None:
            raise PolicyRuntimeError(f"unknown policy {name!r}")
        self.calling.append(name)
        try:
            for item in node.body:
                self.steps += 1
                if self.steps > self.max_steps:
                    raise self.limit_exceeded()
                kind = type(item)
                if kind is RuleRef:
                    called = self.run(item.name)
                    if called is not None:
                        return called
                elif kind is ActionItem or self.evaluate(item.condition):
                    self.source = Location(node.location.file, item.line, item.column)
                    return item if kind is ActionItem else item.action
            return None
        finally:
            self.calling.pop()

    def evaluate(self, expression):
        """The value of an expression."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise self.limit_exceeded()
        return _EVALUATORS[type(expression)](self, expression)

    def _literal(self, expression):
        return expression.value

    def _variable(self, expression):
        if expression.name in self.context:
            return self.context[expression.name]
        self.missing[expression.name] = None
        return None

    def _attribute(self, expression):
        target = self.evaluate(expression.target)
        if isinstance(target, dict) and expression.name in target:
            return target[expression.name]
        path = _context_path(expression)
        if path is not None:
            self.missing[path] = None
        return None

    def _call(self, expression):
        return call_builtin(expression.function, [self.evaluate(arg) for arg in expression.args])

    def _compare(self, expression):
        return compare(expression.op, self.evaluate(expression.left),
                       self.evaluate(expression.right))

    def _and(self, expression):
        return all(self.evaluate(operand) for operand in expression.operands)

    def _or(self, expression):
        return any(self.evaluate(operand) for operand in expression.operands)

    def _not(self, expression):
        return not self.evaluate(expression.operand)


def _context_path(expression):
    """`a.b.c` for an attribute chain that starts at a variable, else None (`lower(a).b`)."""
    names = []
    while type(expression) is Attribute:
        names.append(expression.name)
        expression = expression.target
    if type(expression) is not Variable:
        return None
    names.append(expression.name)
    return ".".join(reversed(names))


_EVALUATORS = {Literal: _NodeEvaluation._literal, Variable: _NodeEvaluation._variable,
               Attribute: _NodeEvaluation._attribute, Call: _NodeEvaluation._call,
               Compare: _NodeEvaluation._compare, And: _NodeEvaluation._and,
               Or: _NodeEvaluation._or, Not: _NodeEvaluation._not}


class DeterministicEngine:
    """Evaluates nodes one at a time; the same module and context always give the same result."""

    def __init__(self, max_steps=DEFAULT_MAX_STEPS):
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.max_steps = max_steps

    def evaluate(self, module, name, context):
        """Evaluate node `name` of `module` against `context` (a dict read, never written)."""
        node = module.nodes.get(name)
        evaluation = _NodeEvaluation(module, context, self.max_steps)
        try:
            if not isinstance(context, dict):
                raise PolicyRuntimeError(f"context must be a JSON object, got {type(context).__name__}")
            item = evaluation.run(name)
        except Exception as error:  # fail closed: no error may turn into an ALLOW
            message = (str(error) if isinstance(error, PolicyRuntimeError)
                       else f"{type(error).__name__}: {error}")
            return NodeResult(name, node.category if node else None, ActionType.DENY, None,
                              evaluation.steps, message, tuple(evaluation.missing))
        action, target = (item.action, item.target) if item is not None else (None, None)
        return NodeResult(name, node.category, action, target, evaluation.steps,
                          missing=tuple(evaluation.missing), source=evaluation.source)
