"""The PLang v2.0 syntax tree, its categories and its actions.

The parser builds these nodes; the compiler checks them and keeps the ones that run.
Positions are 1-based lines and columns of the token that starts the construct; among
expressions only string literals and calls carry one (0 when built by hand), and it takes no
part in equality.
"""
from dataclasses import dataclass, field
from enum import Enum


class Category(Enum):
    """A policy category; its order is the order of the execution phases."""

    SAFETY = "SAFETY"
    PRIVACY = "PRIVACY"
    OPERATIONAL = "OPERATIONAL"
    ROUTING = "ROUTING"
    CUSTOM = "CUSTOM"

    @property
    def rank(self):
        """Phase position: SAFETY 0 runs first, CUSTOM 4 last."""
        return _CATEGORY_ORDER.index(self)

    @property
    def default_priority(self):
        """Priority of a node of this category without `priority N`."""
        return _DEFAULT_PRIORITY[self]

    @property
    def phase_label(self):
        """The heading of this phase in `visualize_plan`."""
        return _PHASE_LABEL[self]


_CATEGORY_ORDER = list(Category)
_DEFAULT_PRIORITY = {Category.SAFETY: 100, Category.PRIVACY: 90, Category.OPERATIONAL: 50,
                     Category.ROUTING: 30, Category.CUSTOM: 10}
_PHASE_LABEL = {Category.SAFETY: "SAFETY_CHECK", Category.PRIVACY: "PRIVACY_CHECK",
                Category.OPERATIONAL: "OPERATIONAL", Category.ROUTING: "ROUTING",
                Category.CUSTOM: "CUSTOM"}


class ActionType(Enum):
    """What a node decides; `precedence` orders them from least to most restrictive."""

    DENY = "deny"
    ESCALATE = "escalate"
    ROUTE = "route"
    ALLOW = "allow"

    @property
    def precedence(self):
        """DENY 100 > ESCALATE 80 > ROUTE 50 > ALLOW 10."""
        return _PRECEDENCE[self]


_PRECEDENCE = {ActionType.DENY: 100, ActionType.ESCALATE: 80, ActionType.ROUTE: 50,
               ActionType.ALLOW: 10}


# --- expressions -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Literal:
    """A number, string, `true` or `false`; a string knows where it is written."""

    value: object
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Variable:
    """A top-level key of the context (`user`, `request`, ...)."""

    name: str


@dataclass(frozen=True, slots=True)
class Attribute:
    """`target.name`: a key of a dictionary value."""

    target: object
    name: str


@dataclass(frozen=True, slots=True)
class Call:
    """`function(args...)`; `x.f(a)` is `f(x, a)`; the position is the function name's."""

    function: str
    args: tuple
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Compare:
    """`left op right` with op one of == != < > <= >=."""

    op: str
    left: object
    right: object


@dataclass(frozen=True, slots=True)
class And:
    """`a and b and ...`, evaluated left to right until one is falsy."""

    operands: tuple


@dataclass(frozen=True, slots=True)
class Or:
    """`a or b or ...`, evaluated left to right until one is truthy."""

    operands: tuple


@dataclass(frozen=True, slots=True)
class Not:
    """`not operand`."""

    operand: object


# --- body items and statements -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ActionItem:
    """`deny`, `allow`, `escalate` or `route to target`."""

    action: ActionType
    target: str | None
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class When:
    """`when condition then action`."""

    condition: object
    action: ActionItem
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class RuleRef:
    """`rule name` inside a policy body: evaluate that rule here."""

    name: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class PriorityItem:
    """`priority N`; `text` is the number as written (the compiler insists on an integer)."""

    text: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Declaration:
    """`policy name: CATEGORY { ... }` or `rule name: CATEGORY { ... }`."""

    kind: str
    name: str
    category: Category
    items: tuple
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Import:
    """`import "path"`, relative to the importing file."""

    path: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Program:
    """One file: its statements in source order."""

    file: str
    statements: tuple


def expression_children(expression):
    """The sub-expressions of `expression`, left to right."""
    if isinstance(expression, Attribute):
        return (expression.target,)
    if isinstance(expression, Call):
        return expression.args
    if isinstance(expression, Compare):
        return (expression.left, expression.right)
    if isinstance(expression, (And, Or)):
        return expression.operands
    if isinstance(expression, Not):
        return (expression.operand,)
    return ()
