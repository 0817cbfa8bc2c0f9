"""`format_source`: PLang v2.0 source in its one canonical layout (what `dag fmt` prints).

The layout: one statement or declaration item per line, two spaces of indentation per open
brace, one space between tokens except around `.`, inside `( )`, before `,` and `:` and
between a function name and its `(`. Tokens (comments included) keep their order and text,
so the formatted source means the same; a blank line in the source is kept as one blank
line (none right after `{` or before `}`). A comment on the line of the token before it
stays at the end of that line; any other comment gets a line of its own. Formatting is
idempotent: formatting formatted source returns it unchanged.
"""
from .grammar import _get_parser, parse

_INDENT = "  "
_CONTINUATION = _INDENT * 2
# Keywords that start a statement or item (unless an action right after `then`).
_ITEM_STARTS = {"import", "policy", "rule", "priority", "when", "deny", "allow", "escalate",
                "route"}
_NO_SPACE_BEFORE = {")", ",", ".", ":"}
_NO_SPACE_AFTER = {"(", "."}


def _needs_space(previous, token):
    """Whether one space separates `previous` from `token` on a line."""
    if token in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER:
        return False
    return not (token == "(" and previous.type == "IDENT")


class _Layout:
    """The output lines, built token by token."""

    def __init__(self):
        self.lines = []
        self.line = ""
        self.depth = 0
        self.last = None  # the previous significant token
        self.just_opened = False  # no line since the last `{`

    def flush(self):
        if self.line:
            self.lines.append(self.line)
        self.line = ""

    def blank(self):
        """A blank line before the next one (never first, nor right after `{`)."""
        self.flush()
        if self.lines and self.lines[-1] and not self.just_opened:
            self.lines.append("")

    def start(self, indent):
        self.flush()
        self.line = _INDENT * self.depth + indent
        self.just_opened = False

    def comment(self, token, trailing):
        """A comment at the end of the current line (`trailing`) or on a line of its own."""
        if trailing and self.line:
            self.line += "  " + token.rstrip()
        else:
            self.start(token.rstrip())
        self.flush()

    def add(self, token):
        """Place a significant token: on a new line if it starts an item or ends a block."""
        if token == "}":
            self.depth -= 1
            self.start("")
        elif (token in _ITEM_STARTS and self.last != "then") or self.last in ("{", "}"):
            self.start("")
        elif not self.line:
            self.start(_CONTINUATION)
        elif _needs_space(self.last, token):
            self.line += " "
        self.line += token
        self.last = token
        if token == "{":
            self.depth += 1
            self.just_opened = True


def format_source(text, file="<string>"):
    """`text` in the canonical layout; raises `PolicySyntaxError` when it does not parse."""
    parse(text, file)
    layout = _Layout()
    previous_end = None  # line where the previous token (comment included) ended
    for token in _get_parser().lex(text, dont_ignore=True):
        if token.type.startswith("__IGNORE"):
            continue
        if previous_end is not None and token.line - previous_end >= 2 and token != "}":
            layout.blank()
        if token.type == "COMMENT":
            layout.comment(token, previous_end == token.line)
        else:
            layout.add(token)
        previous_end = token.end_line
    layout.flush()
    return "\n".join(layout.lines) + "\n" if layout.lines else ""
