"""The message bus of committed work: facts to the database's subscribers, events to topics.

`subscribe(db, FactType, handler)` registers a handler for the facts writers note on their
transactions (`hoc_drivers.facts`); after COMMIT the coordinator hands each fact to them
(`dispatch`). On PostgreSQL the first subscription of a process to a database also starts that
process's listener for the facts other processes commit there (`listen_for_facts`, see
`pg_guard`), which hands them to `deliver`. `EventPublisher` delivers outbox events by topic.
Neither knows any driver.
"""
import logging
import threading
import weakref
from collections import deque
from types import MethodType

from .commit_guard import database_key, per_database_registry

log = logging.getLogger(__name__)


class EventPublisher:
    """In-process publisher: subscribers per topic ('*' for all); keeps the recent events.

    Delivery is at least once: an event published just before a crash, before it was marked
    published, is published again by `TransactionCoordinator.flush_outbox`. A subscriber that
    must not act twice subscribes `with_event_id=True` and deduplicates on the event's id.
    """

    def __init__(self, history=1000):
        self._subscribers = {}
        self.published = deque(maxlen=history)

    def subscribe(self, topic, callback, with_event_id=False):
        """Call `callback(topic, payload)` for each event of `topic` ('*': every topic), or
        `callback(topic, payload, event_id)` with `with_event_id`."""
        self._subscribers.setdefault(topic, []).append((callback, with_event_id))

    def publish(self, topic, payload, event_id=None):
        """Deliver one event to its subscribers; a failing subscriber is logged, not raised."""
        self.published.append((topic, payload))
        if not self._subscribers:
            return
        for callback, with_event_id in self._subscribers.get(topic, []) + self._subscribers.get("*", []):
            try:
                callback(topic, payload, event_id) if with_event_id else callback(topic, payload)
            except Exception:
                log.exception("event subscriber failed for %s", topic)


_subscriptions = per_database_registry()  # database key -> {fact type: ((owner ref or None, function), ...)}
_subscriptions_lock = threading.Lock()
_NONE = {}  # the subscriptions of a database no one subscribed to (never written)


def subscribe(db, fact_type, handler):
    """After every commit on `db`'s file (any connection in this process) that noted a fact of
    `fact_type`, call `handler(fact)`. A bound method is held weakly, so a subscriber can be
    collected. On PostgreSQL facts committed by other processes come too. Returns a function that
    ends the subscription."""
    owner, function = getattr(handler, "__self__", None), getattr(handler, "__func__", None)
    entry = (None, handler) if owner is None or function is None else (weakref.ref(owner), function)
    with _subscriptions_lock:
        by_type = _subscriptions.setdefault(database_key(db), {})
        live = [e for e in by_type.get(fact_type, ()) if e[0] is None or e[0]() is not None]
        by_type[fact_type] = (*live, entry)
    listen = getattr(db, "listen_for_facts", None)  # PostgreSQL: other processes' facts too
    if listen is not None:
        listen()

    def unsubscribe():
        with _subscriptions_lock:
            by_type = _subscriptions.get(database_key(db), {})
            if entry in by_type.get(fact_type, ()):
                by_type[fact_type] = tuple(e for e in by_type[fact_type] if e is not entry)
    return unsubscribe


def handlers_of(db, fact_type):
    """The live handlers subscribed to `fact_type` on `db`'s file."""
    return [handler for handler in map(_live, _subscriptions.get(db.key, _NONE).get(fact_type, ()))
            if handler is not None]


def _live(entry):
    """The handler of a subscription entry, None when its owner was collected."""
    ref, function = entry
    if ref is None:
        return function
    owner = ref()
    return None if owner is None else MethodType(function, owner)


def dispatch(key, fact, failed):
    """Hand `fact` to the handlers subscribed to its type on the database of key `key`
    (`database_key`); a handler that raises is passed, with its error, to `failed(handler, error)`.

    Read without the lock: `subscribe` replaces a type's tuple of entries whole, under its lock.
    Runs after every commit that noted a fact, so a method is called on its live owner as it
    is (`function(owner, fact)`), without making the bound method `_live` gives."""
    for ref, function in _subscriptions.get(key, _NONE).get(type(fact), ()):
        owner = None
        if ref is not None:
            owner = ref()
            if owner is None:
                continue  # its owner was collected
        try:
            function(fact) if owner is None else function(owner, fact)
        except Exception as error:
            failed(function if owner is None else MethodType(function, owner), error)


def deliver(key, fact):
    """Hand `fact` (committed by another process) to the handlers subscribed to its type on the
    database of key `key` (`database_key`); a failing handler is logged, not raised."""
    dispatch(key, fact, lambda handler, error: log.error("fact handler %r failed for %r", handler, fact,
                                                         exc_info=error))
