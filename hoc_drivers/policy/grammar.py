"""PLang v2.0 grammar (SPEC §12) and the parser that turns text into a `Program`.

The grammar is lark's LALR(1) with the basic lexer, so keywords are reserved everywhere
(`user.priority` is an error, as in the server edition) and the syntax tree is built
while parsing, without an intermediate parse tree.
"""
import re
from functools import cache

from lark import Lark, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .errors import PolicyCompileError, PolicyError, PolicySyntaxError
from .nodes import (ActionItem, ActionType, And, Attribute, Call, Category, Compare,
                    Declaration, Import, Literal, Not, Or, PriorityItem, Program, RuleRef,
                    Variable, When)

GRAMMAR = r"""
start: _statement*
_statement: policy_decl | rule_decl | import_stmt

policy_decl: "policy" IDENT ":" category "{" _policy_item* "}"
rule_decl: RULE IDENT ":" category "{" _rule_item* "}"
category: SAFETY | PRIVACY | OPERATIONAL | ROUTING | CUSTOM
_policy_item: rule_ref | rule_decl | _rule_item
_rule_item: priority_decl | condition_block | action
rule_ref: RULE IDENT
priority_decl: PRIORITY NUMBER
condition_block: WHEN expr "then" action
action: DENY | ALLOW | ESCALATE | ROUTE "to" IDENT
import_stmt: "import" STRING

?expr: or_expr
?or_expr: and_expr ("or" and_expr)*
?and_expr: not_expr ("and" not_expr)*
?not_expr: "not" not_expr -> negation
         | comparison
?comparison: value
           | value COMP_OP value -> compare
?value: NUMBER -> number
      | STRING -> string
      | "true" -> true
      | "false" -> false
      | "(" expr ")"
      | postfix
?postfix: IDENT -> variable
        | IDENT arguments -> call
        | postfix "." IDENT -> attribute
        | postfix "." IDENT arguments -> method_call
arguments: "(" ")"
         | "(" expr ("," expr)* ")"

SAFETY: "SAFETY"
PRIVACY: "PRIVACY"
OPERATIONAL: "OPERATIONAL"
ROUTING: "ROUTING"
CUSTOM: "CUSTOM"
RULE: "rule"
PRIORITY: "priority"
WHEN: "when"
DENY: "deny"
ALLOW: "allow"
ESCALATE: "escalate"
ROUTE: "route"
COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
IDENT: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /[0-9]+(\.[0-9]+)?/
STRING: /"(\\.|[^"\\])*"/s
COMMENT: /#[^\n]*/
%ignore COMMENT
%ignore /[ \t\r\n\f]+/
"""

# How terminals that are not a fixed word are named in "expected ..." messages.
_TERMINAL_NAMES = {"IDENT": "a name", "NUMBER": "a number", "STRING": "a string",
                   "COMP_OP": "a comparison operator", "$END": "end of input"}
_TOKEN_KINDS = {"IDENT": "name", "NUMBER": "number", "STRING": "string"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def unescape(body):
    """The value of a string literal's body: `\\n \\t \\r` are control characters, `\\"` and
    `\\\\` are `"` and `\\`; a backslash before any other character is kept (`\\d` stays `\\d`)."""
    if "\\" not in body:
        return body
    characters, position = [], 0
    while position < len(body):
        character = body[position]
        if character == "\\" and position + 1 < len(body):
            position += 1
            character = _ESCAPES.get(body[position], "\\" + body[position])
        characters.append(character)
        position += 1
    return "".join(characters)


class _NumberTooLong(Exception):
    """An integer literal Python refuses to convert (over 4,300 digits)."""

    def __init__(self, token):
        super().__init__(token)
        self.token = token


@v_args(inline=True)
class _SyntaxBuilder(Transformer):
    """Callbacks lark runs at each reduction; they return `nodes` objects."""

    def start(self, *statements):
        return statements

    def policy_decl(self, name, category, *items):
        return Declaration("policy", str(name), category, items, name.line, name.column)

    def rule_decl(self, keyword, name, category, *items):
        return Declaration("rule", str(name), category, items, name.line, name.column)

    def category(self, token):
        return Category(str(token))

    def rule_ref(self, keyword, name):
        return RuleRef(str(name), name.line, name.column)

    def priority_decl(self, keyword, number):
        return PriorityItem(str(number), number.line, number.column)

    def condition_block(self, keyword, condition, action):
        return When(condition, action, keyword.line, keyword.column)

    def action(self, keyword, target=None):
        return ActionItem(ActionType(str(keyword)), None if target is None else str(target),
                          keyword.line, keyword.column)

    def import_stmt(self, path):
        return Import(unescape(path[1:-1]), path.line, path.column)

    def or_expr(self, *operands):
        return Or(operands)

    def and_expr(self, *operands):
        return And(operands)

    def negation(self, operand):
        return Not(operand)

    def compare(self, left, op, right):
        return Compare(str(op), left, right)

    def number(self, token):
        if "." in token:
            return Literal(float(token))
        try:
            return Literal(int(token))
        except ValueError:
            raise _NumberTooLong(token) from None

    def string(self, token):
        return Literal(unescape(token[1:-1]), token.line, token.column)

    def true(self):
        return Literal(True)

    def false(self):
        return Literal(False)

    def variable(self, name):
        return Variable(str(name))

    def call(self, name, arguments):
        return Call(str(name), arguments, name.line, name.column)

    def attribute(self, target, name):
        return Attribute(target, str(name))

    def method_call(self, target, name, arguments):
        return Call(str(name), (target, *arguments), name.line, name.column)

    def arguments(self, *expressions):
        return expressions


@cache
def _get_parser():
    """The LALR parser, built on first use (about 50 ms); parsing with it is thread-safe."""
    return Lark(GRAMMAR, parser="lalr", lexer="basic", transformer=_SyntaxBuilder())


def _describe_terminal(name, patterns):
    """`'deny'` for a keyword or symbol, a phrase for a class of tokens."""
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    pattern = patterns.get(name)
    if pattern is not None and pattern.type == "str":
        return repr(pattern.value)
    return name.lower()


def _describe_token(token):
    if token.type == "$END":
        return "end of input"
    kind = _TOKEN_KINDS.get(token.type)
    return f"{kind} {str(token)!r}" if kind else repr(str(token))


def _position(text, offset):
    """Line and column of `text[offset]` (`offset` may be the end of the text)."""
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _syntax_error(error, text, file):
    """Turn a lark error into a `PolicySyntaxError` with a readable message."""
    if isinstance(error, UnexpectedCharacters):
        offset, line, column = error.pos_in_stream, error.line, error.column
        found = ("unterminated string" if error.char == '"'
                 else f"unexpected character {error.char!r}")
    else:  # UnexpectedToken; LALR reports the end of the text as a `$END` token
        token = error.token
        at_end = token.type == "$END"
        offset = len(text) if at_end else token.start_pos
        line, column = _position(text, offset) if at_end else (token.line, token.column)
        found = f"unexpected {_describe_token(token)}"
    names = _accepted_after(text[:offset]) or getattr(error, "expected", None) or ()
    patterns = {t.name: t.pattern for t in _get_parser().terminals}
    expected = sorted({_describe_terminal(name, patterns) for name in names})
    message = found if not expected else f"{found}; expected {_join_alternatives(expected)}"
    return PolicySyntaxError(message, file, line, column, expected)


def _accepted_after(prefix):
    """Terminal names the parser accepts after `prefix` (which lexes and parses cleanly)."""
    try:
        interactive = _get_parser().parse_interactive(prefix)
        interactive.exhaust_lexer()
        return interactive.accepts()
    except (UnexpectedInput, _NumberTooLong):
        return ()


def _join_alternatives(names):
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def parse(text, file="<string>"):
    """Parse PLang v2.0 source into a `Program`; raise `PolicySyntaxError` where it is wrong."""
    try:
        statements = _get_parser().parse(text)
    except (UnexpectedCharacters, UnexpectedToken) as error:
        raise _syntax_error(error, text, file) from None
    except _NumberTooLong as error:
        raise PolicyCompileError("number literal is too long", file, error.token.line,
                                 error.token.column, "P002") from None
    return Program(file, tuple(statements))


# What the statement splitter looks at: strings (ended by a newline too), comments, braces
# and the words that start a statement.
_SCAN = re.compile(r'"(?:\\.|[^"\\\n])*"?|#[^\n]*|[{}]|\b(?:policy|import|rule)\b')
_HEADER = re.compile(r"(policy|rule)\s+([A-Za-z_][A-Za-z0-9_]*)\s*:\s*"
                     r"(SAFETY|PRIVACY|OPERATIONAL|ROUTING|CUSTOM)\b")


def _statement_starts(text):
    """Offsets where a top-level statement seems to start: each `policy` and `import` (they
    can start nothing else, so a missing `}` before them is survived) and each `rule` outside
    braces."""
    starts, depth = [0], 0
    for match in _SCAN.finditer(text):
        word = match.group()
        if word == "{":
            depth += 1
        elif word == "}":
            depth = max(depth - 1, 0)
        elif word in ("policy", "import") or (word == "rule" and depth == 0):
            starts.append(match.start())
            depth = 0
    return sorted(set(starts))


def _placeholder(text, start, end):
    """An empty `Declaration` for the statement `text[start:end]` that does not parse but whose
    `policy NAME: CATEGORY` header does, so that references to its name are not errors too."""
    header = _HEADER.match(text, start, end)
    if header is None:
        return None
    line, column = _position(text, header.start(2))
    return Declaration(header.group(1), header.group(2), Category(header.group(3)), (),
                       line, column)


def _parse_statement(text, start, end, file):
    """Parse `text[start:end]` alone, where it is (lines and columns as in `text`); a statement
    that ends too early is reported at the word starting the next one, as parsing the whole
    text would."""
    line, column = _position(text, start)
    chunk = "\n" * (line - 1) + " " * (column - 1) + text[start:end]
    try:
        return parse(chunk, file).statements
    except PolicyError as error:
        if end == len(text) or not error.message.startswith("unexpected end of input"):
            raise
    parse(chunk + re.match(r"\w+", text[end:]).group(), file)
    raise AssertionError("unreachable: a statement cut short never ends with a keyword")


def parse_recovering(text, file="<string>"):
    """Parse like `parse`, but return `(Program, errors)` instead of raising. When the text
    does not parse, each top-level statement is parsed on its own, so that every statement's
    first error is reported; a statement that fails is left out, or kept as an empty
    declaration when its `policy NAME: CATEGORY` header is readable. The whole text's first
    error (what `parse` raises) is always among the errors, in place of its statement's own."""
    try:
        return parse(text, file), []
    except PolicyError as error:
        first = error
    starts = _statement_starts(text)
    statements, errors = [], [first]
    where = (first.line, first.column)
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        try:
            statements.extend(_parse_statement(text, start, end, file))
        except PolicyError as error:
            holds_first = _position(text, start) <= where and (end == len(text)
                                                              or where < _position(text, end))
            if not holds_first:
                errors.append(error)
            placeholder = _placeholder(text, start, end)
            if placeholder is not None:
                statements.append(placeholder)
    return Program(file, tuple(statements)), errors
