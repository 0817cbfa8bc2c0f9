"""The package's import structure, read from source with `ast` (nothing is imported).

- No import cycle between hoc_drivers modules, counting module-level and function-level imports
  alike: a function-level import still closes the cycle, it only hides it until the call.
- No function-level import of another hoc_drivers module in the modules of `NO_LAZY_IMPORTS`:
  the drivers and the core they build on. Their dependencies must be visible at the top of the
  file and acyclic, so a lazy import there can only be dodging a cycle. Not covered: the CLI
  command modules (`commands/*`, which import the API lazily to keep `hoc-drivers --help` fast),
  and the tooling around the library (audit, bench, demo, cli_docs, testing, policy).
"""
import ast
from pathlib import Path

import hoc_drivers
from hoc_drivers.audit import DRIVERS

PACKAGE = "hoc_drivers"
PACKAGE_DIR = Path(hoc_drivers.__file__).parent
CORE = ("transaction_coordinator", "commit_guard", "db", "run_completion", "facts", "validation")
NO_LAZY_IMPORTS = tuple(f"{PACKAGE}.{name}" for name in dict.fromkeys(DRIVERS + CORE))


def _modules():
    """Module name -> source path; a package's __init__ is the package's own node."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((PACKAGE, *parts))] = path
    return modules


def _imports(name, path, modules):
    """(target module, line, inside a function) for each hoc_drivers import in one module."""
    is_package = path.name == "__init__.py"
    found = []

    def target(dotted):
        """The longest known module that `dotted` names (a name inside a module: that module)."""
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            if isinstance(child, ast.Import):
                targets = [target(alias.name) for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    anchor = name.split(".")
                    anchor = anchor[:len(anchor) - child.level + is_package]
                    base = ".".join(anchor + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                targets = [target(f"{base}.{alias.name}") for alias in child.names]
            else:
                visit(child, nested)
                continue
            found.extend((module, child.lineno, in_function) for module in targets
                         if module and module != name)
    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), False)
    return found


def _graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph):
    """One cycle (a list of modules, first repeated last) per back edge of a depth-first walk."""
    edges = {name: sorted({module for module, _, _ in imports}) for name, imports in graph.items()}
    state, stack, cycles = {}, [], []

    def walk(name):
        state[name] = "open"
        stack.append(name)
        for module in edges[name]:
            if state.get(module) == "open":
                cycles.append(stack[stack.index(module):] + [module])
            elif module not in state:
                walk(module)
        stack.pop()
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            walk(name)
    return cycles


def test_the_graph_resolves_relative_imports():
    graph = {name: {module for module, _, _ in imports} for name, imports in _graph().items()}
    assert f"{PACKAGE}.models" in graph[f"{PACKAGE}.db"]                 # from . import models
    assert f"{PACKAGE}.commit_guard" in graph[f"{PACKAGE}.db"]           # from .commit_guard import …
    assert f"{PACKAGE}.models.base" in graph[f"{PACKAGE}.transaction_coordinator"]  # from .models.base
    assert f"{PACKAGE}.models.alerts" in graph[f"{PACKAGE}.models"]      # __init__: from . import alerts


def test_there_is_no_import_cycle():
    graph = _graph()
    where = {(name, module): f"{module} (line {line}{', in a function' if lazy else ''})"
             for name, imports in graph.items() for module, line, lazy in imports}
    cycles = [" -> ".join([cycle[0], *(where[pair] for pair in zip(cycle, cycle[1:], strict=False))])
              for cycle in _cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_drivers_and_core_import_nothing_of_ours_inside_functions():
    graph = _graph()
    lazy = [f"{name} line {line}: imports {module}" for name in NO_LAZY_IMPORTS
            for module, line, in_function in graph.get(name, ()) if in_function]
    assert not lazy, "function-level imports:\n" + "\n".join(lazy)


def test_the_rule_covers_existing_modules():
    assert set(NO_LAZY_IMPORTS) <= set(_modules())
