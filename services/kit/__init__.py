"""The one kit every KnowledgeNest service uses: events, outbox, inbox, database and config.

A service imports what it needs from here::

    from services.kit import Database, EventDispatcher, event_handler

and nothing from any other service.
"""
from services.kit.db import Database, InboxHorizonMixin, InboxRecordMixin, OutboxEventMixin
from services.kit.envelope import Event, InvalidEvent
from services.kit.handlers import (
    BatchEventHandler, EventHandler, batch_event_handler, event_handler,
)
from services.kit.outbox import EventDispatcher

__all__ = [
    "BatchEventHandler",
    "Database",
    "Event",
    "EventDispatcher",
    "EventHandler",
    "InboxHorizonMixin",
    "InboxRecordMixin",
    "InvalidEvent",
    "OutboxEventMixin",
    "batch_event_handler",
    "event_handler",
]
