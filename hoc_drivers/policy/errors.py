"""Errors of PLang v2.0: every one carries the file, line and column it is about."""


class PolicyError(ValueError):
    """A policy source that cannot be used; `str()` is `FILE:LINE:COL: message`."""

    def __init__(self, message, file="<string>", line=1, column=1):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column

    def __str__(self):
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicySyntaxError(PolicyError):
    """The text does not follow the grammar; `expected` names what could have come instead."""

    def __init__(self, message, file="<string>", line=1, column=1, expected=()):
        super().__init__(message, file, line, column)
        self.expected = tuple(expected)


class PolicyCompileError(PolicyError):
    """The text parses but means nothing usable: bad names, priorities, imports or routes."""


class PolicyCycleError(PolicyCompileError):
    """Routes form a cycle; `cycle` lists its nodes in route order, the first one repeated."""

    def __init__(self, message, file="<string>", line=1, column=1, cycle=()):
        super().__init__(message, file, line, column)
        self.cycle = tuple(cycle)


class PolicyRuntimeError(Exception):
    """An error while evaluating a node; the node's result becomes DENY with this message."""
