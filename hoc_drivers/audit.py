"""Self-audit: read our own source (AST) and check the commit authority and READ/WRITE claims.

For each driver module: Purpose (first docstring line), Access (declared `ACCESS`),
Transaction (derived from the code: OWNS COMMIT, Flush only, Forbidden) and a Verdict.
Any other module of the package that commits is reported too.
"""
import ast
from dataclasses import dataclass, field
from pathlib import Path

DRIVERS = ("alert_driver", "alert_emitter", "cross_domain", "dag_executor", "decisions",
           "governance_signal_driver", "guard_cache", "guard_write_driver", "idempotency",
           "ledger", "schema_parity", "transaction_coordinator", "worker_write_service_async")
COMMIT_AUTHORITY = "transaction_coordinator"
# db.py defines the guard itself (its commit() overrides call Peewee's); this module only
# names the SQL it looks for; bench.py commits on raw sqlite3 baselines over scratch files.
NOT_SCANNED = ("db", "audit", "bench")
ACCESS_VALUES = ("READ", "WRITE", "READ+WRITE")

_COMMIT_CALLS = {"commit", "rollback", "atomic", "manual_commit", "begin"}
_COMMIT_SQL = {"COMMIT", "COMMIT TRANSACTION", "ROLLBACK", "ROLLBACK TRANSACTION", "END TRANSACTION",
               "BEGIN", "BEGIN TRANSACTION", *(f"BEGIN {mode}{suffix}"
                                               for mode in ("IMMEDIATE", "EXCLUSIVE", "DEFERRED")
                                               for suffix in ("", " TRANSACTION"))}
_WRITE_CALLS = {"insert", "insert_many", "insert_from", "replace", "replace_many", "save",
                "delete_instance", "create", "bulk_create", "bulk_update", "get_or_create",
                "update", "delete", "publish"}
_WRITE_SQL = ("INSERT", "UPDATE", "DELETE", "REPLACE")


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
            elif name == "execute_sql" and node.args and isinstance(node.args[0], ast.Constant):
                sql = str(node.args[0].value).lstrip().upper()
                if sql.startswith(_WRITE_SQL):
                    self._write(where)
        self.generic_visit(node)

    def visit_Expr(self, node):
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.generic_visit(node)  # a bare string statement is a docstring, not SQL

    def visit_Constant(self, node):
        if isinstance(node.value, str) and " ".join(node.value.upper().rstrip("; ").split()) in _COMMIT_SQL:
            self.findings.commits.append(f"line {node.lineno}: SQL {node.value.strip()!r}")


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
