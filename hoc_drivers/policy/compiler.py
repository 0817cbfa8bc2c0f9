"""From PLang v2.0 text to a checked `PolicyModule` of executable nodes.

Every policy, top-level rule and nested rule (named `policy.rule`) becomes a `PolicyNode`.
The checks of SPEC §12 run here: duplicate names in a scope, names of builtins, undefined
`rule X` references, priorities that are not integers, unreadable or cyclic imports, routes
to a node of a later phase, calls to unknown functions or with the wrong number of arguments,
and literal `matches()` patterns RE2 refuses (located at the pattern). Each problem is a
located `PolicyCompileError` with its code, handed to `Diagnostics`: `compile_source` and
`compile_file` raise the first; `collect_file` (for `dag check`) keeps them all, skipping
what is wrong and going on with the rest.

Imports stay inside the importing file's folder and its subfolders: an absolute path, a
path whose real location (symlinks resolved) is elsewhere, or a file not named `.plang`
is refused before it is read, so no other file's content can reach an error message.
"""
import difflib
import os
from dataclasses import dataclass, field, replace

from .errors import PolicyCompileError
from .functions import BUILTINS, MAX_PATTERN_LENGTH, PatternError, compile_pattern
from .grammar import parse, parse_recovering
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


def _error(code, message, file, item):
    return PolicyCompileError(message, file, item.line, item.column, code)


class Diagnostics:
    """Where compile errors go: raised at once (`collect=False`) or kept in `errors`."""

    def __init__(self, collect=False):
        self.collect = collect
        self.errors = []

    def report(self, error):
        """Raise `error`, or keep it when collecting (the caller then skips what is wrong)."""
        if not self.collect:
            raise error
        self.errors.append(error)


class _SourceLoader:
    """Reads a file and its imports, depth first, each file once, into declarations."""

    def __init__(self, diagnostics):
        self.diagnostics = diagnostics
        self.declarations = []     # (file, Declaration) in source order
        self.files = []
        self.imports = []          # (importing file, Import, real path of the imported file)
        self.real_paths = {}       # file as loaded -> its real path
        self.loaded = set()        # real paths of the files read
        self._active = []          # real paths of the files being read, outermost first

    def load_text(self, text, file, directory):
        """Parse `text` (named `file`) and everything it imports relative to `directory`."""
        if self.diagnostics.collect:
            program, errors = parse_recovering(text, file)
            self.diagnostics.errors.extend(errors)
        else:
            program = parse(text, file)
        for statement in program.statements:
            if isinstance(statement, Import):
                self._import(statement, file, directory)
            else:
                self.declarations.append((file, statement))

    def load_file(self, path, importer=None, where=None):
        """Read and load `path`; `importer`/`where` locate the import statement for errors."""
        real = os.path.realpath(path)
        if real in self._active:
            chain = [os.path.basename(p) for p in self._active[self._active.index(real):]]
            self.diagnostics.report(_error(
                "P106", "import cycle: " + " -> ".join([*chain, os.path.basename(real)]),
                importer, where))
            return
        if importer is not None:
            self.imports.append((importer, where, real))
        if real in self.loaded:
            return
        try:
            text = _read_source(path, importer, where)
        except PolicyCompileError as error:
            self.diagnostics.report(error)
            return
        self.loaded.add(real)
        self.files.append(path)
        self.real_paths[path] = real
        self._active.append(real)
        try:
            self.load_text(text, path, os.path.dirname(path))
        finally:
            self._active.pop()

    def _import(self, statement, file, directory):
        if not statement.path:
            self.diagnostics.report(_error("P105", "import path is empty", file, statement))
            return
        refusal = _import_refusal(statement.path, directory)
        if refusal:
            self.diagnostics.report(
                _error("P105", f"cannot import {statement.path!r}: {refusal}", file, statement))
            return
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
            return PolicyCompileError(f"cannot read {path}: {reason}", path, 1, 1, "P105")
        return _error("P105", f"cannot import {path!r}: {reason}", importer, where)

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


def _priority(declaration, file, report):
    """The last `priority N` of a declaration's own items, else its category's default (also
    when the number is refused)."""
    priorities = [item for item in declaration.items if isinstance(item, PriorityItem)]
    if not priorities:
        return declaration.category.default_priority
    last = priorities[-1]
    for item in priorities:
        if "." in item.text:
            report(_error("P104", f"priority must be an integer, not {item.text}", file, item))
            return declaration.category.default_priority
    try:
        return int(last.text)
    except ValueError:
        report(_error("P104", "priority is too large", file, last))
        return declaration.category.default_priority


def _check_call(call, file, report):
    """Refuse an unknown function, a wrong number of arguments and a literal pattern RE2 refuses."""
    entry = BUILTINS.get(call.function)
    if entry is None:
        close = difflib.get_close_matches(call.function, BUILTINS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        report(_error("P110", f"unknown function {call.function!r}{hint}", file, call))
        return
    expected = entry[1]
    if len(call.args) != expected:
        report(_error("P111", f"{call.function}() takes {expected} argument"
                      f"{'s' if expected > 1 else ''}, not {len(call.args)}", file, call))
        return
    pattern = call.args[1] if call.function == "matches" else None
    if (isinstance(pattern, Literal) and isinstance(pattern.value, str)
            and len(pattern.value) <= MAX_PATTERN_LENGTH):
        try:
            compile_pattern(pattern.value)
        except PatternError as error:
            report(_error("P112", str(error), file, pattern))


def _check_condition(condition, file, item, report):
    """Check every call of a condition and refuse nesting deeper than MAX_EXPRESSION_DEPTH
    (walked without recursion); False when it is too deep."""
    pending = [(condition, 1)]
    while pending:
        expression, depth = pending.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            report(_error("P108", f"expression nested deeper than {MAX_EXPRESSION_DEPTH} levels",
                          file, item))
            return False
        if isinstance(expression, Call):
            _check_call(expression, file, report)
        pending.extend((child, depth + 1) for child in expression_children(expression))
    return True


class _ModuleBuilder:
    """Checks the loaded declarations and turns them into `PolicyNode`s."""

    def __init__(self, declarations, diagnostics):
        self.declarations = declarations
        self.report = diagnostics.report
        self.top_level = {}        # name -> Location
        self.nested = {}           # policy name -> {rule name -> Location}
        self.categories = {}       # top-level name -> Category
        self.too_deep = set()      # ids of the `When`s whose condition is nested too deeply

    def build(self, module):
        """Fill `module.nodes`, reporting each problem (a declaration named wrongly is left out)."""
        declarations = []
        for file, declaration in self.declarations:
            if not self._check_name(declaration, file, self.top_level, "the module"):
                continue
            self.categories[declaration.name] = declaration.category
            scope = self.nested.setdefault(declaration.name, {})
            items = tuple(item for item in declaration.items if not isinstance(item, Declaration)
                          or self._check_name(item, file, scope, f"policy {declaration.name!r}"))
            if len(items) < len(declaration.items):
                declaration = replace(declaration, items=items)
            declarations.append((file, declaration))
        for file, declaration in declarations:
            self._add(module, file, declaration, declaration.name, declaration.name)
            for item in declaration.items:
                if isinstance(item, Declaration):
                    full_name = f"{declaration.name}.{item.name}"
                    self._add(module, file, item, full_name, declaration.name)

    def _check_name(self, declaration, file, scope, scope_name):
        """False, reported, for a builtin's name or a second declaration of a name in a scope."""
        if declaration.name in BUILTINS:
            self.report(_error("P102", f"{declaration.kind} {declaration.name!r} is named like a "
                               "builtin function", file, declaration))
            return False
        first = scope.get(declaration.name)
        if first is not None:
            self.report(_error("P101", f"duplicate name {declaration.name!r} in {scope_name} "
                               f"(first declared at {first})", file, declaration))
            return False
        scope[declaration.name] = Location(file, declaration.line, declaration.column)
        return True

    def _add(self, module, file, declaration, full_name, policy_name):
        body, routes = [], []
        for item in declaration.items:
            if isinstance(item, RuleRef):
                name = self._resolve(item, file, policy_name)
                if name is not None:
                    body.append(replace(item, name=name))
            elif isinstance(item, (When, ActionItem)):
                if isinstance(item, When):
                    if not _check_condition(item.condition, file, item, self.report):
                        self.too_deep.add(id(item))
                action = item.action if isinstance(item, When) else item
                routes.extend(self._route_edge(action, file, declaration))
                body.append(item)
        module.nodes[full_name] = PolicyNode(
            full_name, declaration.kind, declaration.category,
            _priority(declaration, file, self.report), tuple(body), tuple(routes),
            Location(file, declaration.line, declaration.column), len(module.nodes))

    def _resolve(self, reference, file, policy_name):
        """`rule X` in policy P is P's nested rule X if there is one, else the top-level X."""
        if reference.name in self.nested.get(policy_name, {}):
            return f"{policy_name}.{reference.name}"
        if reference.name in self.top_level:
            return reference.name
        self.report(_error("P103", f"undefined rule {reference.name!r}", file, reference))
        return None

    def _route_edge(self, action, file, declaration):
        """The dependency a `route to X` makes when X is a node; a later phase is an error."""
        target_category = self.categories.get(action.target)
        if target_category is None:
            return ()
        if target_category.rank > declaration.category.rank:
            self.report(_error(
                "P107", f"route to {action.target!r} ({target_category.value}) from "
                f"{declaration.name!r} ({declaration.category.value}): a route target must not "
                "run in a later phase", file, action))
            return ()
        return (RouteEdge(action.target, Location(file, action.line, action.column)),)


def _build(loader, name):
    """The module of what `loader` read, and the builder that checked it."""
    module = PolicyModule(name, files=tuple(loader.files))
    builder = _ModuleBuilder(loader.declarations, loader.diagnostics)
    builder.build(module)
    return module, builder


def _file_module_name(path):
    return os.path.splitext(os.path.basename(path))[0]


def compile_source(text, file="<string>", module_name="main", base_dir=None):
    """Compile PLang source text; imports resolve against `base_dir` (default: the cwd)."""
    loader = _SourceLoader(Diagnostics())
    loader.load_text(text, file, base_dir if base_dir is not None else os.getcwd())
    return _build(loader, module_name)[0]


def compile_file(path, module_name=None):
    """Compile a `.plang` file and its imports (relative to the importing file)."""
    loader = _SourceLoader(Diagnostics())
    loader.load_file(path)
    return _build(loader, module_name or _file_module_name(path))[0]


@dataclass
class Collected:
    """What `collect_file` found: the module built from what compiles, the loader's record of
    imports and files, the builder's conditions too deep to evaluate, and every error."""

    module: PolicyModule
    loader: _SourceLoader
    too_deep: set
    errors: list


def collect_file(path):
    """Compile `path` and its imports as far as possible, collecting every error instead of
    raising the first (syntax errors per top-level statement, then compile errors)."""
    loader = _SourceLoader(Diagnostics(collect=True))
    loader.load_file(path)
    module, builder = _build(loader, _file_module_name(path))
    return Collected(module, loader, builder.too_deep, loader.diagnostics.errors)
