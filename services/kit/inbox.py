"""The inbox: the events each consumer has processed, so that none has its effect twice.

One ``Inbox`` per event handler (its consumer is the queue name), in the service's ``Database``
(the ``InboxRecordMixin`` and ``InboxHorizonMixin`` tables, db.py)::

    worker starts --> record(event(s)) in the worker's session  (Database.worker_setup)
    handler writes with self.db.session
    commit: effect + inbox records, one transaction --> True
        the records' primary key fails: a concurrent delivery committed first --> False

    before the handler runs, for a message that may have been seen (redelivered, retried,
    replayed; a first delivery skips the lookup):
        knows(event_id)              --> a duplicate: acked and skipped
        replayed, and older than the horizon the retention sweep pruned to (retention.py):
        may_have_forgotten(event)    --> cannot tell: parked, not risked twice
"""
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.kit.constants import HEADER_ATTEMPTS, HEADER_REPLAYED
from services.kit.retention import CLOCK_SKEW_MARGIN


def may_be_duplicate(message):
    """Worth an inbox lookup before the handler runs: seen before, retried, or replayed.

    A first delivery skips the lookup (a SELECT per event, about a third of the cost of
    handling one): a duplicate that arrives fresh (the relay republishing after a crash)
    still has no effect, because its inbox record's primary key fails the commit.
    """
    headers = message.headers or {}
    return bool(message.delivery_info.get("redelivered") or HEADER_ATTEMPTS in headers
                or HEADER_REPLAYED in headers)


def is_replayed(message):
    return HEADER_REPLAYED in (message.headers or {})


class Inbox:
    """The inbox of one consumer (``consumer``: its queue name) in ``database``."""

    def __init__(self, database, consumer):
        self.database = database
        self.consumer = consumer

    @property
    def model(self):
        model = self.database.inbox_model
        self.database.require(model, "InboxRecordMixin", "an @event_handler")
        return model

    def record(self, session, events):
        """Add the records of ``events`` to ``session``: they commit with the handler's writes."""
        model = self.model
        session.add_all([model(consumer=self.consumer, event_id=event.event_id,
                               event_type=event.event_type) for event in events])

    def commit(self, session, event_id):
        """Commit the worker's session; True if committed, False if the event was a duplicate."""
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            if self.has_processed(event_id):
                return False  # a concurrent delivery of the same event committed first
            raise
        return True

    def has_processed(self, event_id):
        """Whether the record of ``event_id`` is committed (on a short session of its own)."""
        model = self.model
        with self.database.Session(close_on_exit=True) as session:
            found = session.execute(
                select(model.event_id).where(model.consumer == self.consumer,
                                             model.event_id == event_id)
            ).first()
            session.rollback()  # a read only: nothing to commit
        return found is not None

    def knows(self, event_id):
        """has_processed(), False when the database does not answer: the handler's worker then
        fails on it too, and the message is retried."""
        try:
            return self.has_processed(event_id)
        except Exception:
            return False

    def may_have_forgotten(self, event):
        """True if the retention sweep may have pruned the record of ``event`` (retention.py).

        False when the database does not answer: the worker fails and the message is retried.
        """
        try:
            pruned_before = self._pruned_before()
        except Exception:
            return False
        if pruned_before is None or event.timestamp is None:
            return False
        if pruned_before.tzinfo is None:  # SQLite hands back naive UTC
            pruned_before = pruned_before.replace(tzinfo=event.timestamp.tzinfo)
        return event.timestamp < pruned_before + CLOCK_SKEW_MARGIN

    def _pruned_before(self):
        horizon_model = self.database.inbox_horizon_model
        if horizon_model is None:
            return None
        with self.database.engine.connect() as connection:
            return connection.scalar(select(horizon_model.pruned_before)
                                     .where(horizon_model.consumer == self.consumer))
