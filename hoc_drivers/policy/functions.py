"""Value semantics and the builtin functions of PLang v2.0 (SPEC §12).

Values are JSON values: None (null), bool, int, float, str, list, dict. A comparison that
makes no sense is false and a builtin called with the wrong types yields None (the compiler
refuses unknown functions and wrong numbers of arguments; `call_builtin` yields None for
them). The one thing that raises on a value is `matches()` given a pattern RE2 refuses
(`PatternError`), so that its node fails closed.

`matches()` runs RE2 (google-re2, the engine behind OPA's Go regexp family): no backtracking,
so a search takes time linear in the input (at most 1,024 characters) whatever the pattern
(at most 128 characters); nested quantifiers run as written.
"""
from functools import lru_cache

import re2

from .errors import PolicyRuntimeError

MAX_PATTERN_LENGTH = 128
MAX_MATCH_INPUT_LENGTH = 1024


def is_number(value):
    """True for int and float, not for bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def values_equal(left, right):
    """`==`: null equals only null, 1 == 1.0, and a boolean equals only a boolean."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    return left == right


def ordered(op, left, right):
    """`<`, `>`, `<=`, `>=` on two numbers or two strings; anything else is false."""
    if not ((is_number(left) and is_number(right))
            or (isinstance(left, str) and isinstance(right, str))):
        return False
    if op == "<":
        return left < right
    if op == ">":
        return left > right
    if op == "<=":
        return left <= right
    return left >= right


def compare(op, left, right):
    """`left op right` for op one of == != < > <= >=."""
    if op == "==":
        return values_equal(left, right)
    if op == "!=":
        return not values_equal(left, right)
    return ordered(op, left, right)


def _contains(container, item):
    if isinstance(container, str):
        return item in container if isinstance(item, str) else None
    if isinstance(container, list):
        return any(values_equal(element, item) for element in container)
    if isinstance(container, dict):
        return item in container if isinstance(item, str) else None
    return None


def _startswith(text, prefix):
    if isinstance(text, str) and isinstance(prefix, str):
        return text.startswith(prefix)
    return None


def _endswith(text, suffix):
    if isinstance(text, str) and isinstance(suffix, str):
        return text.endswith(suffix)
    return None


def _length(value):
    return len(value) if isinstance(value, (str, list, dict)) else None


def _lower(text):
    return text.lower() if isinstance(text, str) else None


def _upper(text):
    return text.upper() if isinstance(text, str) else None


def _in_list(item, values):
    if not isinstance(values, list):
        return None
    return any(values_equal(element, item) for element in values)


def _is_empty(value):
    if value is None:
        return True
    return len(value) == 0 if isinstance(value, (str, list, dict)) else None


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False      # RE2 would print refused patterns on stderr
_RE2_OPTIONS.never_capture = True    # a yes/no answer needs no submatches


class PatternError(PolicyRuntimeError):
    """A `matches()` pattern RE2 refuses: a compile error when written in the policy, a node
    error (DENY) when it comes from the context."""


@lru_cache(maxsize=256)
def compile_pattern(pattern):
    """`pattern` compiled by RE2; `PatternError` when RE2 cannot compile it (backreferences,
    look-arounds, bad syntax, a program over RE2's memory budget)."""
    try:
        return re2.compile(pattern.encode("utf-8", "surrogatepass"), _RE2_OPTIONS)
    except re2.error as error:
        reason = error.args[0]      # RE2's message: bytes in google-re2 1.1
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(f"matches(): RE2 cannot compile {pattern!r}: {reason}") from None


def safe_matches(text, pattern):
    """`matches(s, pattern)`: an unanchored search by RE2, in time linear in the input.

    False for a pattern over 128 characters or an input over 1,024 characters; null when
    either is not a string; `PatternError` for a pattern RE2 refuses (see `compile_pattern`).
    """
    if not (isinstance(text, str) and isinstance(pattern, str)):
        return None
    if len(pattern) > MAX_PATTERN_LENGTH or len(text) > MAX_MATCH_INPUT_LENGTH:
        return False
    return compile_pattern(pattern).search(text.encode("utf-8", "surrogatepass")) is not None


# name -> (function, number of arguments)
BUILTINS = {
    "contains": (_contains, 2),
    "startswith": (_startswith, 2),
    "starts_with": (_startswith, 2),
    "endswith": (_endswith, 2),
    "len": (_length, 1),
    "lower": (_lower, 1),
    "upper": (_upper, 1),
    "in_list": (_in_list, 2),
    "is_empty": (_is_empty, 1),
    "matches": (safe_matches, 2),
}


def call_builtin(name, args):
    """The value of `name(*args)`: None for an unknown name, a wrong arity or wrong types."""
    entry = BUILTINS.get(name)
    if entry is None or len(args) != entry[1]:
        return None
    return entry[0](*args)
