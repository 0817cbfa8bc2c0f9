"""Generated PLang v2.0 sources of any size, for benchmarks and load tests.

`generate_policies(count)` writes `count` policies spread over the five categories, with
conditions on the usual context fields, priorities, nested rules, rule references and
routes, so that parsing, checking, planning and executing all have real work to do. The
same count and seed always give the same text.
"""
import random

from .nodes import Category

_CONDITIONS = (
    'user.role == "{word}" and request.amount > {number}',
    'contains(lower(request.text), "{word}")',
    "not in_list(user.region, user.allowed_regions) or user.age > {number}",
    'request.tokens >= {number} and agent.tier != "{word}"',
    'startswith(request.path, "/{word}") and not is_empty(user.tags)',
    'len(request.text) > {number} or matches(request.text, "^{word}[0-9]+$")',
    'budget.spent_cents > budget.limit_cents and budget.limit_cents > {number}',
)
_WORDS = ("admin", "guest", "trial", "export", "internal", "batch", "premium", "legacy")
_CATEGORIES = list(Category)


def sample_context():
    """A context under which generated policies evaluate their conditions without denying."""
    return {
        "request": {"id": "req-bench", "amount": 10, "text": "summarise the quarterly report",
                    "tokens": 120, "path": "/v1/chat"},
        "user": {"id": "user-bench", "role": "analyst", "region": "eu", "age": 40,
                 "tags": ["finance"], "allowed_regions": ["eu", "us"]},
        "agent": {"id": "agent-bench", "tier": "standard"},
        "budget": {"spent_cents": 100, "limit_cents": 5000},
    }


def _route_target(number, chooser):
    """Another ROUTING policy: a chain over the first five, then one of those five."""
    step = len(_CATEGORIES)
    if number < 6 * step:
        return number - step
    return Category.ROUTING.rank + step * chooser.randint(0, 4)


def generate_policies(count, seed=0):
    """PLang source for `count` policies (names `p0`...), deterministic in `count` and `seed`."""
    chooser = random.Random(seed)
    lines = []
    for number in range(count):
        category = _CATEGORIES[number % len(_CATEGORIES)]
        condition = chooser.choice(_CONDITIONS).format(word=chooser.choice(_WORDS),
                                                       number=chooser.randint(1000, 9000))
        lines.append(f"# generated policy {number}")
        lines.append(f"policy p{number}: {category.value} {{")
        if number % 3 == 0:
            lines.append(f"  priority {chooser.randint(1, 200)}")
        action = "deny" if category in (Category.SAFETY, Category.PRIVACY) else "escalate"
        lines.append(f"  when {condition} then {action}")
        if number % 7 == 0:
            lines.append(f"  rule check_{number}: {category.value} "
                         '{ when user.role == "guest" then deny }')
            lines.append(f"  rule check_{number}")
        if category is Category.ROUTING and number >= len(_CATEGORIES):
            target = _route_target(number, chooser)
            lines.append(f"  when request.tokens > 100000 then route to p{target}")
        if category is Category.ROUTING:
            lines.append('  when agent.tier == "premium" then route to premium_agent')
        lines.append("}")
    return "\n".join(lines) + "\n"
