"""`check_file`: every error of a policy file and its imports in one pass, and the warnings.

Errors are what `compile_file` and `build_plan` would raise, all of them: each top-level
statement's first syntax error, then every compile error of what parsed, then every route
cycle. Warnings (codes W001-W004, errors under `dag check --strict`) are written plainly in
docs/plang.md ("Checking policies"):

- W001 an `import` that adds nothing: the imported file declares no policy and the importing
  file refers (`rule X`, `route to X`) to none of its names, or it is imported twice;
- W002 a `when` that never fires: its condition is false after constant folding (literals,
  `not`/`and`/`or`, comparisons and builtins of constants), or an item after an action
  that always decides (a bare action, or a `when` whose condition folds to true);
- W003 two nested rules of one policy in the same phase with the same priority: which one
  runs first, and so wins a tie, depends only on where they are written;
- W004 `route to X` where X is no policy or rule (so an agent's name) but is close to the
  name of one (difflib ratio at least 0.85): a misspelt policy.
"""
import difflib
from dataclasses import dataclass

from .compiler import collect_file
from .errors import PolicyCompileError, PolicyCycleError, PolicyRuntimeError
from .functions import BUILTINS, call_builtin, compare
from .nodes import ActionItem, ActionType, And, Call, Compare, Declaration, Literal, Not, Or, RuleRef, When
from .planner import build_plan, route_cycles

UNKNOWN = object()        # a value constant folding cannot know
ROUTE_TYPO_CUTOFF = 0.85


@dataclass
class CheckReport:
    """What `check_file` found: the module built from what compiles, its plan (None when its
    routes form a cycle), and the errors and warnings, each sorted by file, line and column."""

    file: str
    module: object
    plan: object
    errors: list
    warnings: list


def check_file(path):
    """Check `path` and its imports: every error and every warning (a `CheckReport`)."""
    collected = collect_file(path)
    module, errors = collected.module, list(collected.errors)
    try:
        plan = build_plan(module)
    except PolicyCycleError:
        plan = None
        errors.extend(route_cycles(module))
    warnings = [*_unused_imports(collected.loader), *_never_fires(module, collected.too_deep),
                *_same_priorities(module), *_routes_to_missing(module)]
    rank = {file: index for index, file in enumerate(module.files)}

    def order(error):
        return rank.get(error.file, -1), error.line, error.column, error.code

    return CheckReport(path, module, plan, sorted(errors, key=order), sorted(warnings, key=order))


def _warning(code, message, file, item):
    return PolicyCompileError(message, file, item.line, item.column, code)


def _action_of(item):
    """The action of a `when` or bare action, else None."""
    if isinstance(item, When):
        return item.action
    return item if isinstance(item, ActionItem) else None


def _references(declaration):
    """Names a declaration (and its nested rules) refers to: `rule X` and `route to X`."""
    for item in declaration.items:
        if isinstance(item, RuleRef):
            yield item.name
        elif isinstance(item, Declaration):
            yield from _references(item)
        elif (action := _action_of(item)) is not None and action.target is not None:
            yield action.target


def _unused_imports(loader):
    """W001: imports of a file that declares no policy and none of whose names the importing
    file refers to, and second imports of a file in one file."""
    declared, referenced = {}, {}
    for file, declaration in loader.declarations:
        declared.setdefault(loader.real_paths[file], []).append(declaration)
        referenced.setdefault(file, set()).update(_references(declaration))
    seen = {}
    for importer, statement, real in loader.imports:
        if real not in loader.loaded:       # unreadable: an error already
            continue
        first = seen.setdefault((importer, real), statement)
        if first is not statement:
            yield _warning("W001", f"{statement.path!r} is already imported by this file "
                           f"(line {first.line})", importer, statement)
        elif not any(declaration.kind == "policy" or declaration.name in referenced.get(importer, ())
                     for declaration in declared.get(real, ())):
            yield _warning("W001", f"unused import {statement.path!r}: it declares no policy and "
                           "this file refers to none of its rules", importer, statement)


def _never_fires(module, too_deep):
    """W002: `when`s whose condition folds to false, and items after an action that always
    decides."""
    for node in module.nodes.values():
        file, decided = node.location.file, None
        for item in node.body:
            if decided is not None:
                yield _warning("W002", f"never reached: the {_describe(decided)} at line "
                               f"{decided.line} always decides first", file, item)
            elif isinstance(item, ActionItem):
                decided = item
            elif isinstance(item, When) and id(item) not in too_deep:
                value = fold(item.condition)
                if value is UNKNOWN:
                    continue
                if not value:
                    yield _warning("W002", "this `when` never fires: its condition is always false",
                                   file, item)
                else:
                    decided = item


def _describe(item):
    return "`when` whose condition is always true" if isinstance(item, When) else "bare action"


def fold(expression):
    """The constant value of `expression` as the engine would compute it, or `UNKNOWN` when it
    depends on the context (or is nested too deeply to fold)."""
    try:
        return _fold(expression)
    except RecursionError:
        return UNKNOWN


def _fold(expression):
    kind = type(expression)
    if kind is Literal:
        return expression.value
    if kind is Not:
        value = _fold(expression.operand)
        return value if value is UNKNOWN else not value
    if kind is And or kind is Or:
        values = [_fold(operand) for operand in expression.operands]
        deciding = kind is Or    # a truthy operand decides an `or`, a falsy one an `and`
        if any(value is not UNKNOWN and bool(value) is deciding for value in values):
            return deciding
        return UNKNOWN if UNKNOWN in values else not deciding
    if kind is Compare:
        left, right = _fold(expression.left), _fold(expression.right)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        return compare(expression.op, left, right)
    if kind is Call:
        return _fold_call(expression)
    return UNKNOWN                # a variable or attribute: read from the context


def _fold_call(call):
    entry = BUILTINS.get(call.function)
    if entry is None or len(call.args) != entry[1]:
        return UNKNOWN
    args = [_fold(arg) for arg in call.args]
    if UNKNOWN in args:
        return UNKNOWN
    try:
        return call_builtin(call.function, args)
    except PolicyRuntimeError:
        return UNKNOWN


def _same_priorities(module):
    """W003: a nested rule with the phase and priority of an earlier nested rule of its policy."""
    first = {}
    for name, node in module.nodes.items():
        policy, nested, _ = name.partition(".")
        if not nested:
            continue
        earlier = first.setdefault((policy, node.category, node.priority), node)
        if earlier is not node:
            yield PolicyCompileError(
                f"rule {name!r} has the phase and priority ({node.priority}) of {earlier.name!r} "
                f"({earlier.location}): the one written first runs first and wins a tie",
                node.location.file, node.location.line, node.location.column, "W003")


def _routes_to_missing(module):
    """W004: `route to X` where X is no node but is close to the name of a policy or rule."""
    names = [name for name in module.nodes if "." not in name]
    close = {}
    for node in module.nodes.values():
        for item in node.body:
            action = _action_of(item)
            if action is None or action.action is not ActionType.ROUTE or action.target in module.nodes:
                continue
            if action.target not in close:
                close[action.target] = difflib.get_close_matches(action.target, names, n=1,
                                                                 cutoff=ROUTE_TYPO_CUTOFF)
            if close[action.target]:
                yield _warning("W004", f"route to {action.target!r}, which is no policy or rule "
                               f"(so an agent's name): did you mean {close[action.target][0]!r}?",
                               node.location.file, action)
