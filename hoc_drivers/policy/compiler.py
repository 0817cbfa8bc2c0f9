"""From PLang v2.0 text to a checked `PolicyModule` of executable nodes.

Every policy, top-level rule and nested rule (named `policy.rule`) becomes a `PolicyNode`.
The checks of SPEC §12 run here, each failing with a located `PolicyCompileError`:
duplicate names in a scope, names of builtins, undefined `rule X` references, priorities
that are not integers, unreadable or cyclic imports, routes to a node of a later phase,
calls to unknown functions or with the wrong number of arguments, and literal `matches()`
patterns RE2 refuses (located at the pattern).

Imports stay inside the importing file's folder and its subfolders: an absolute path, a
path whose real location (symlinks resolved) is elsewhere, or a file not named `.plang`
is refused before it is read, so no other file's content can reach an error message.
"""
import difflib
import os
from dataclasses import dataclass, field, replace

from .errors import PolicyCompileError
from .functions import BUILTINS, MAX_PATTERN_LENGTH, PatternError, compile_pattern
from .grammar import parse
from .nodes import (ActionItem, Call, Declaration, Import, Literal, PriorityItem, RuleRef, When,
                    expression_children)

MAX_EXPRESSION_DEPTH = 100
MAX_SOURCE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Location:
    """Where something is written: file, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self):
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class RouteEdge:
    """`route to target` inside a node, where `target` is itself a node."""

    target: str
    location: Location


@dataclass(frozen=True)
class PolicyNode:
    """One executable unit: a policy, a top-level rule or a nested rule.

    `body` holds only what runs (`When`, `ActionItem`, and `RuleRef`s whose `name` is the
    full name of the node they call); `routes` are its dependencies on other nodes.
    """

    name: str
    kind: str
    category: object
    priority: int
    body: tuple
    routes: tuple
    location: Location
    index: int

    @property
    def dependencies(self):
        """Names of the nodes this node routes to, sorted."""
        return sorted({edge.target for edge in self.routes})


@dataclass
class PolicyModule:
    """A compiled set of policies: its nodes in source order (imports where they are)."""

    name: str
    nodes: dict = field(default_factory=dict)
    files: tuple = ()


def _error(message, file, item):
    return PolicyCompileError(message, file, item.line, item.column)


class _SourceLoader:
    """Reads a file and its imports, depth first, each file once, into declarations."""

    def __init__(self):
        self.declarations = []     # (file, Declaration) in source order
        self.files = []
        self._loaded = set()
        self._active = []          # real paths of the files being read, outermost first

    def load_text(self, text, file, directory):
        """Parse `text` (named `file`) and everything it imports relative to `directory`."""
        for statement in parse(text, file).statements:
            if isinstance(statement, Import):
                self._import(statement, file, directory)
            else:
                self.declarations.append((file, statement))

    def load_file(self, path, importer=None, where=None):
        """Read and load `path`; `importer`/`where` locate the import statement for errors."""
        real = os.path.realpath(path)
        if real in self._active:
            chain = [os.path.basename(p) for p in self._active[self._active.index(real):]]
            raise _error("import cycle: " + " -> ".join([*chain, os.path.basename(real)]),
                         importer, where)
        if real in self._loaded:
            return
        text = _read_source(path, importer, where)
        self._loaded.add(real)
        self.files.append(path)
        self._active.append(real)
        try:
            self.load_text(text, path, os.path.dirname(path))
        finally:
            self._active.pop()

    def _import(self, statement, file, directory):
        if not statement.path:
            raise _error("import path is empty", file, statement)
        refusal = _import_refusal(statement.path, directory)
        if refusal:
            raise _error(f"cannot import {statement.path!r}: {refusal}", file, statement)
        self.load_file(os.path.normpath(os.path.join(directory, statement.path)), file, statement)


def _import_refusal(target, directory):
    """Why `import "target"` in a file of `directory` is refused (None when it is not).

    Decided before the target is opened: its real path (symlinks resolved) must lie in
    `directory` or below, and it must be a `.plang` file.
    """
    if "\0" in target:
        return "the path holds a NUL character"
    if os.path.isabs(target):
        return "an import is a path relative to the importing file's folder"
    real, root = os.path.realpath(os.path.join(directory, target)), os.path.realpath(directory)
    if os.path.commonpath([real, root]) != root:
        return ("it is outside the importing file's folder (imports stay in that folder and "
                "its subfolders)")
    if not real.endswith(".plang"):
        return "not a .plang file"
    return None


def _read_source(path, importer, where):
    """The text of a policy file; any failure is a compile error at the import (or 1:1)."""
    def failure(reason):
        if importer is None:
            return PolicyCompileError(f"cannot read {path}: {reason}", path, 1, 1)
        return _error(f"cannot import {path!r}: {reason}", importer, where)

    try:
        if not os.path.isfile(path):
            raise failure("not a readable file")
        if os.path.getsize(path) > MAX_SOURCE_BYTES:
            raise failure(f"larger than {MAX_SOURCE_BYTES} bytes")
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except PolicyCompileError:
        raise
    except UnicodeDecodeError:
        raise failure("not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise failure(getattr(exc, "strerror", None) or str(exc)) from None


def _check_name(declaration, file, scope, scope_name):
    """Refuse builtin names and a second declaration of the same name in one scope."""
    if declaration.name in BUILTINS:
        raise _error(f"{declaration.kind} {declaration.name!r} is named like a builtin function",
                     file, declaration)
    first = scope.get(declaration.name)
    if first is not None:
        raise _error(f"duplicate name {declaration.name!r} in {scope_name} "
                     f"(first declared at {first})", file, declaration)
    scope[declaration.name] = Location(file, declaration.line, declaration.column)


def _priority(declaration, file):
    """The last `priority N` of a declaration's own items, else its category's default."""
    priorities = [item for item in declaration.items if isinstance(item, PriorityItem)]
    if not priorities:
        return declaration.category.default_priority
    last = priorities[-1]
    for item in priorities:
        if "." in item.text:
            raise _error(f"priority must be an integer, not {item.text}", file, item)
    try:
        return int(last.text)
    except ValueError:
        raise _error("priority is too large", file, last) from None


def _check_call(call, file):
    """Refuse an unknown function, a wrong number of arguments and a literal pattern RE2 refuses."""
    entry = BUILTINS.get(call.function)
    if entry is None:
        close = difflib.get_close_matches(call.function, BUILTINS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _error(f"unknown function {call.function!r}{hint}", file, call)
    expected = entry[1]
    if len(call.args) != expected:
        raise _error(f"{call.function}() takes {expected} argument{'s' if expected > 1 else ''}, "
                     f"not {len(call.args)}", file, call)
    pattern = call.args[1] if call.function == "matches" else None
    if (isinstance(pattern, Literal) and isinstance(pattern.value, str)
            and len(pattern.value) <= MAX_PATTERN_LENGTH):
        try:
            compile_pattern(pattern.value)
        except PatternError as error:
            raise _error(str(error), file, pattern) from None


def _check_condition(condition, file, item):
    """Check every call of a condition and refuse nesting deeper than MAX_EXPRESSION_DEPTH
    (walked without recursion)."""
    pending = [(condition, 1)]
    while pending:
        expression, depth = pending.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise _error(f"expression nested deeper than {MAX_EXPRESSION_DEPTH} levels", file, item)
        if isinstance(expression, Call):
            _check_call(expression, file)
        pending.extend((child, depth + 1) for child in expression_children(expression))


class _ModuleBuilder:
    """Checks the loaded declarations and turns them into `PolicyNode`s."""

    def __init__(self, declarations):
        self.declarations = declarations
        self.top_level = {}        # name -> Location
        self.nested = {}           # policy name -> {rule name -> Location}
        self.categories = {}       # top-level name -> Category

    def build(self, module):
        """Fill `module.nodes`; raise `PolicyCompileError` on the first problem."""
        for file, declaration in self.declarations:
            _check_name(declaration, file, self.top_level, "the module")
            self.categories[declaration.name] = declaration.category
            scope = self.nested.setdefault(declaration.name, {})
            for item in declaration.items:
                if isinstance(item, Declaration):
                    _check_name(item, file, scope, f"policy {declaration.name!r}")
        for file, declaration in self.declarations:
            self._add(module, file, declaration, declaration.name, declaration.name)
            for item in declaration.items:
                if isinstance(item, Declaration):
                    full_name = f"{declaration.name}.{item.name}"
                    self._add(module, file, item, full_name, declaration.name)

    def _add(self, module, file, declaration, full_name, policy_name):
        body, routes = [], []
        for item in declaration.items:
            if isinstance(item, RuleRef):
                body.append(replace(item, name=self._resolve(item, file, policy_name)))
            elif isinstance(item, (When, ActionItem)):
                if isinstance(item, When):
                    _check_condition(item.condition, file, item)
                action = item.action if isinstance(item, When) else item
                routes.extend(self._route_edge(action, file, declaration))
                body.append(item)
        module.nodes[full_name] = PolicyNode(
            full_name, declaration.kind, declaration.category, _priority(declaration, file),
            tuple(body), tuple(routes), Location(file, declaration.line, declaration.column),
            len(module.nodes))

    def _resolve(self, reference, file, policy_name):
        """`rule X` in policy P is P's nested rule X if there is one, else the top-level X."""
        if reference.name in self.nested.get(policy_name, {}):
            return f"{policy_name}.{reference.name}"
        if reference.name in self.top_level:
            return reference.name
        raise _error(f"undefined rule {reference.name!r}", file, reference)

    def _route_edge(self, action, file, declaration):
        """The dependency a `route to X` makes when X is a node; a later phase is an error."""
        target_category = self.categories.get(action.target)
        if target_category is None:
            return ()
        if target_category.rank > declaration.category.rank:
            raise _error(f"route to {action.target!r} ({target_category.value}) from "
                         f"{declaration.name!r} ({declaration.category.value}): a route target "
                         "must not run in a later phase", file, action)
        return (RouteEdge(action.target, Location(file, action.line, action.column)),)


def _build(loader, name):
    module = PolicyModule(name, files=tuple(loader.files))
    _ModuleBuilder(loader.declarations).build(module)
    return module


def compile_source(text, file="<string>", module_name="main", base_dir=None):
    """Compile PLang source text; imports resolve against `base_dir` (default: the cwd)."""
    loader = _SourceLoader()
    loader.load_text(text, file, base_dir if base_dir is not None else os.getcwd())
    return _build(loader, module_name)


def compile_file(path, module_name=None):
    """Compile a `.plang` file and its imports (relative to the importing file)."""
    loader = _SourceLoader()
    loader.load_file(path)
    return _build(loader, module_name or os.path.splitext(os.path.basename(path))[0])
