"""Value semantics and the builtin functions of PLang v2.0 (SPEC §12).

Values are JSON values: None (null), bool, int, float, str, list, dict. Nothing here raises
on a value: a comparison that makes no sense is false and a builtin called with the wrong
types or number of arguments yields None.
"""
import re
from functools import lru_cache

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


_BRACE_QUANTIFIER = re.compile(r"\{[0-9]*(,[0-9]*)?\}")


def _quantifier_length(pattern, position):
    """Length of the quantifier starting at `position` (0 when there is none)."""
    character = pattern[position:position + 1]
    if character in ("*", "+", "?"):
        return 1
    if character == "{":
        found = _BRACE_QUANTIFIER.match(pattern, position)
        return len(found.group()) if found else 0
    return 0


def _skip_character_class(pattern, position):
    """Index just after the `[...]` class that starts at `position`."""
    position += 1
    if pattern[position:position + 1] == "^":
        position += 1
    if pattern[position:position + 1] == "]":
        position += 1
    while position < len(pattern) and pattern[position] != "]":
        position += 2 if pattern[position] == "\\" else 1
    return position + 1


def is_dangerous_pattern(pattern):
    """True when `pattern` has a backreference or a repeated group holding a quantifier.

    Those are the shapes that make a backtracking engine take exponential time, like
    `(a+)+` or `(\\w+\\s?)*`; `ab*ab*` and `(ab|cd)+` are fine.
    """
    # One flag per open group: does it contain a quantifier so far?
    quantified = [False]
    position = 0
    while position < len(pattern):
        character = pattern[position]
        if character == "\\":
            if pattern[position + 1:position + 2] in tuple("123456789"):
                return True
            position += 2
            continue
        if character == "[":
            position = _skip_character_class(pattern, position)
            continue
        if character == "(":
            if pattern.startswith(("(?P=", "(?("), position):
                return True
            quantified.append(False)
            position += 2 if pattern[position + 1:position + 2] == "?" else 1
            continue
        if character == ")" and len(quantified) > 1:
            inner = quantified.pop()
            position += 1
            length = _quantifier_length(pattern, position)
            if inner and length and pattern[position] != "?":
                return True
            quantified[-1] = quantified[-1] or inner or bool(length)
            position += length
            continue
        length = _quantifier_length(pattern, position)
        if length:
            quantified[-1] = True
            position += length
            continue
        position += 1
    return False


@lru_cache(maxsize=256)
def _compiled(pattern):
    """The compiled pattern, or None when it is refused or does not compile."""
    if is_dangerous_pattern(pattern):
        return None
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return None


def safe_matches(text, pattern):
    """`matches(s, pattern)`: an unanchored regex search with guards.

    Refused (false): a pattern over 128 characters, an input over 1,024 characters, a
    pattern with a backreference or nested quantifiers, or one that does not compile.
    Not two strings: null.
    """
    if not (isinstance(text, str) and isinstance(pattern, str)):
        return None
    if len(pattern) > MAX_PATTERN_LENGTH or len(text) > MAX_MATCH_INPUT_LENGTH:
        return False
    compiled = _compiled(pattern)
    return compiled is not None and compiled.search(text) is not None


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
