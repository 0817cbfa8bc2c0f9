"""Self-audit: read our own source (AST) and check the commit authority and READ/WRITE claims.

For each driver module: Purpose (first docstring line), Access (declared `ACCESS`),
Transaction (derived from the code: OWNS COMMIT, Flush only, Forbidden) and a Verdict.
Any other module of the package that commits is reported too.

Two kinds of evidence. Calls: `.commit()`, `.rollback()`, `.atomic()`, … and Peewee write calls
on a model, found by name in the AST. SQL: every string expression of a module (a literal, an
f-string, a `+` of strings; docstrings aside) is handed to SQLite itself, never compared with a
list of spellings. A value known only at run time stands in once as a quoted name and once as
nothing, and the stronger verdict counts (`%`, `.format()` and `join` are judged by their
literal parts only). SQLite prepares each statement under `EXPLAIN` (nothing runs) on a private
in-memory database holding our schema (`models.ALL_MODELS`), and an authorizer records the
actions SQLite reports, as the commit guard does:
- a syntax error (also "incomplete input", "unrecognized token"): not SQL, whatever was
  recorded before it ('begin the run' is not a BEGIN);
- transaction control (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE): a commit finding;
- a write as the guard defines it (INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, …): a write;
- SQL that SQLite reported no action for, because it failed on a name outside our schema (a
  write to another table, an unknown column) or is a no-op here (`DROP TABLE IF EXISTS` of an
  unknown table): unknown SQL, counted as a write, since the audit cannot vouch that it only
  reads. If SQLite reported actions before such an error (`SELECT * FROM elsewhere`), the
  statement is judged by them.
"""
import ast
import re
import sqlite3
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from peewee import SqliteDatabase

from . import models
from .commit_guard import CONTROL, WRITE, classify  # the guard's own sense of both

DRIVERS = ("alert_driver", "alert_emitter", "cross_domain", "dag_executor", "decisions",
           "governance_signal_driver", "guard_cache", "guard_write_driver", "idempotency",
           "ledger", "schema_parity", "transaction_coordinator", "worker_write_service_async")
COMMIT_AUTHORITY = "transaction_coordinator"
# commit_guard.py and pg_guard.py define the guard: they name COMMIT and ROLLBACK and call the
# drivers' commit() and rollback() (the coordinator sends them); dialect.py names the BEGIN
# each backend's coordinator sends; this module names the calls it looks for; bench.py commits
# on raw sqlite3 baselines over scratch files.
NOT_SCANNED = ("commit_guard", "pg_guard", "dialect", "audit", "bench")
ACCESS_VALUES = ("READ", "WRITE", "READ+WRITE")

_COMMIT_CALLS = {"commit", "rollback", "atomic", "manual_commit", "begin"}
_WRITE_CALLS = {"insert", "insert_many", "insert_from", "replace", "replace_many", "save",
                "delete_instance", "create", "bulk_create", "bulk_update", "get_or_create",
                "update", "delete", "publish"}
READ = "read"
# A run-time value: a quoted name (SQLite reads it as a string where a value goes), or nothing.
_HOLES = ('"hoc"', "")
_NOT_SQL = re.compile(r"syntax error|incomplete input|unrecognized token")


def _statements(text):
    """Split `text` at each semicolon where SQLite's tokenizer sees a statement end."""
    start = 0
    for end, char in enumerate(text, 1):
        if char == ";" and sqlite3.complete_statement(text[start:end]):
            yield text[start:end]
            start = end
    yield text[start:]


class _SqlJudge:
    """SQLite's answer to "what would this text do?" (see the module docstring)."""

    def __init__(self):
        # No statement cache: SQLite consults the authorizer only when it prepares a text.
        database = SqliteDatabase(":memory:", check_same_thread=False, cached_statements=0)
        models.create_schema(database)
        self._kinds = set()
        self._lock = threading.Lock()
        self._conn = database.connection()
        self._conn.set_authorizer(
            lambda action, arg1, arg2, *_: self._kinds.add(classify(action, arg1, arg2) or READ)
            or sqlite3.SQLITE_OK)

    def kind(self, texts):
        """CONTROL, WRITE or READ: the strongest of the SQL statements in `texts`; None if no
        text is SQL."""
        with self._lock:
            kinds = {self._statement_kind(statement) for text in texts if "\0" not in text
                     for statement in _statements(text)}
        return next((kind for kind in (CONTROL, WRITE, READ) if kind in kinds), None)

    def _statement_kind(self, statement):
        self._kinds.clear()
        try:
            self._conn.execute("EXPLAIN " + statement)
        except sqlite3.Error as exc:  # an unknown name, unbound parameters, … or not SQL at all
            if _NOT_SQL.search(str(exc)):
                return None
        except UnicodeEncodeError:
            return None
        if CONTROL in self._kinds:
            return CONTROL
        return WRITE if not self._kinds or WRITE in self._kinds else READ


@lru_cache(maxsize=None)
def _judge():
    return _SqlJudge()


def _spelled(node, hole, parts):
    """The text a string expression spells, `hole` standing for each value known only at run
    time (f-string fields, non-string operands of `+`); None if `node` is no string expression.
    Adds the string nodes it is made of to `parts`."""
    if isinstance(node, ast.Constant):
        text = node.value if isinstance(node.value, str) else None
    elif isinstance(node, ast.JoinedStr):
        text = "".join(part.value if isinstance(part, ast.Constant) else hole for part in node.values)
        parts.extend(node.values)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _spelled(node.left, hole, parts), _spelled(node.right, hole, parts)
        text = None if left is None and right is None else (
            (hole if left is None else left) + (hole if right is None else right))
    else:
        text = None
    if text is not None:
        parts.append(node)
    return text


@dataclass
class ModuleFindings:
    """What the AST of one module shows."""

    commits: list = field(default_factory=list)     # one "line N: <call>" text per finding
    writes: list = field(default_factory=list)
    class_access: dict = field(default_factory=dict)
    class_writes: dict = field(default_factory=dict)


def _receiver(node):
    """Dotted source text of the object a method is called on (e.g. `self.db`)."""
    return ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) else ""


def _is_model_receiver(text):
    """True for `Model` / `models.Model` / `Model.field`-style receivers (capitalised names)."""
    last = text.split("(")[0].split(".")[-1] if text else ""
    head = text.split(".")[0]
    return bool(last[:1].isupper() or head[:1].isupper())


class _Visitor(ast.NodeVisitor):
    def __init__(self):
        self.findings = ModuleFindings()
        self._class = None
        self._judged = set()  # ids of string nodes already judged as part of a larger one

    def visit_ClassDef(self, node):
        outer, self._class = self._class, node.name
        for item in node.body:
            if (isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ACCESS"
                                                     for t in item.targets)
                    and isinstance(item.value, ast.Constant)):
                self.findings.class_access[node.name] = item.value.value
        self.generic_visit(node)
        self._class = outer

    def _write(self, text):
        self.findings.writes.append(text)
        if self._class:
            self.findings.class_writes.setdefault(self._class, []).append(text)

    def visit_Call(self, node):
        if isinstance(node.func, ast.Attribute):
            name, receiver = node.func.attr, _receiver(node)
            where = f"line {node.lineno}: {ast.unparse(node.func)}()"
            if name in _COMMIT_CALLS or (name == "transaction" and "coordinator" not in receiver.lower()):
                self.findings.commits.append(where)
            elif name == "publish" and receiver.split(".")[-1] == "tx":
                self._write(where)
            elif name in _WRITE_CALLS - {"publish"} and _is_model_receiver(receiver):
                self._write(where)
        elif isinstance(node.func, ast.Name) and node.func.id == "PreparedInsert":
            self._write(f"line {node.lineno}: PreparedInsert()")  # a prepared INSERT statement
        self.generic_visit(node)

    def visit_Expr(self, node):
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)  # a bare string statement is a docstring, not SQL

    def _judge_string(self, node):
        parts = []
        texts = {_spelled(node, hole, parts) for hole in _HOLES} - {None}
        if texts and id(node) not in self._judged:
            self._judged.update(map(id, parts))
            kind = _judge().kind(texts)
            where = f"line {node.lineno}: SQL {' '.join(ast.unparse(node).split())[:70]}"
            if kind is CONTROL:
                self.findings.commits.append(where)
            elif kind is WRITE:
                self._write(where)
        self.generic_visit(node)

    visit_Constant = visit_JoinedStr = visit_BinOp = _judge_string


@dataclass
class AuditRow:
    """One module's line in the inventory."""

    script: str
    purpose: str
    access: str
    transaction: str
    verdict: str
    problems: list

    def to_dict(self):
        """JSON-ready dict."""
        return {"script": self.script, "purpose": self.purpose, "access": self.access,
                "transaction": self.transaction, "verdict": self.verdict,
                "problems": self.problems}


def _declared_access(tree):
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ACCESS"
                                                 for t in node.targets)
                and isinstance(node.value, ast.Constant)):
            return node.value.value
    return None


def audit_module(path, name):
    """Audit one source file; `name` is its module name inside the package."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    visitor = _Visitor()
    visitor.visit(tree)
    found = visitor.findings
    doc = (ast.get_docstring(tree) or "").strip().splitlines()
    access = _declared_access(tree)
    transaction = "OWNS COMMIT" if found.commits else "Flush only" if found.writes else "Forbidden"
    problems = []
    if found.commits and name != COMMIT_AUTHORITY:
        problems.append("commits outside the coordinator: " + "; ".join(found.commits))
    if access not in ACCESS_VALUES:
        problems.append(f"no valid ACCESS declaration (got {access!r})")
    elif access == "READ" and found.writes:
        problems.append("declared READ but writes: " + "; ".join(found.writes))
    for cls, cls_access in found.class_access.items():
        if cls_access == "READ" and found.class_writes.get(cls):
            problems.append(f"class {cls} declared READ but writes: "
                            + "; ".join(found.class_writes[cls]))
    classes = ", ".join(f"{c}: {a}" for c, a in sorted(found.class_access.items()))
    return AuditRow(f"{name}.py", doc[0] if doc else "", (access or "?") + (f" ({classes})" if classes else ""),
                    transaction, "VIOLATION" if problems else "OK", problems)


def audit_package(package_dir=None):
    """Audit the 13 drivers, plus any other module of the package that commits."""
    package_dir = Path(package_dir or Path(__file__).parent)
    rows = []
    for name in DRIVERS:
        path = package_dir / f"{name}.py"
        if path.exists():
            rows.append(audit_module(path, name))
        else:
            rows.append(AuditRow(f"{name}.py", "", "?", "?", "VIOLATION", ["module is missing"]))
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir).with_suffix("")
        name = ".".join(relative.parts)
        if name in DRIVERS or name in NOT_SCANNED:
            continue
        row = audit_module(path, name)
        if row.transaction == "OWNS COMMIT":
            row.problems = ["commits outside the coordinator"]
            row.verdict = "VIOLATION"
            rows.append(row)
    return rows
