"""Errors of PLang v2.0: every one carries the file, line and column it is about, and a stable
code (the table is in docs/plang.md): P0xx syntax, P1xx compile errors, W0xx warnings."""


class PolicyError(ValueError):
    """A policy source that cannot be used; `str()` is `FILE:LINE:COL: message`."""

    default_code = "P100"

    def __init__(self, message, file="<string>", line=1, column=1, code=None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.code = code or self.default_code

    def __str__(self):
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    @property
    def severity(self):
        """"warning" for a W code (an error under `dag check --strict`), else "error"."""
        return "warning" if self.code.startswith("W") else "error"

    def to_dict(self):
        """JSON-ready: file, line, column, code, severity and message."""
        return {"file": self.file, "line": self.line, "column": self.column, "code": self.code,
                "severity": self.severity, "message": self.message}


class PolicySyntaxError(PolicyError):
    """The text does not follow the grammar; `expected` names what could have come instead."""

    default_code = "P001"

    def __init__(self, message, file="<string>", line=1, column=1, expected=()):
        super().__init__(message, file, line, column)
        self.expected = tuple(expected)


class PolicyCompileError(PolicyError):
    """The text parses but means nothing usable: bad names, priorities, imports or routes."""


class PolicyCycleError(PolicyCompileError):
    """Routes form a cycle; `cycle` lists its nodes in route order, the first one repeated."""

    default_code = "P109"

    def __init__(self, message, file="<string>", line=1, column=1, cycle=()):
        super().__init__(message, file, line, column)
        self.cycle = tuple(cycle)


class PolicyRuntimeError(Exception):
    """An error while evaluating a node; the node's result becomes DENY with this message."""
