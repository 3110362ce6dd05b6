"""How analytics learns the routing key an event was published with.

The kit's event handlers hand a handler the parsed envelopes only. The analytics log also keeps
the routing key, so this subclass of the kit's ``BatchEventHandler`` (same queue, inbox, retries
and dead-lettering) adds each delivery's routing key to the worker's context data, and
``RoutingKeys`` gives them to the handler. A retried delivery comes back through the default
exchange with its queue name as routing key: the kit's ``x-original-routing-key`` header names
the original one then.
"""
from nameko.extensions import DependencyProvider

from contracts.subscriptions import SHELL_EVENT_EXCHANGES
from services.kit.constants import (
    EVENTS_EXCHANGE, HEADER_ORIGINAL_ROUTING_KEY, SHELL_EVENT_EXCHANGE,
)
from services.kit.handlers import BatchEventHandler

CONTEXT_KEY = "delivery_routing_key"
EVENT_EXCHANGES = (EVENTS_EXCHANGE, SHELL_EVENT_EXCHANGE) + SHELL_EVENT_EXCHANGES


def original_routing_key(headers, exchange, routing_key):
    """The routing key the event was published with, or None when the delivery cannot say.

    - the kit's retries and ``replay --to-queue`` carry it in ``x-original-routing-key``;
    - a delivery through the events exchange (or a shell exchange bound to it) has it as is;
    - anything else (the default exchange, e.g. ``dlq requeue``) routed by queue name: unknown.
    """
    original = (headers or {}).get(HEADER_ORIGINAL_ROUTING_KEY)
    if isinstance(original, bytes):
        original = original.decode("utf-8", "replace")
    if isinstance(original, str) and original:
        return original
    if exchange in EVENT_EXCHANGES and routing_key:
        return routing_key
    return None


class RecordingEventHandler(BatchEventHandler):
    """The kit's batch event handler, also telling the worker each event's original routing
    key: ``{event_id: routing key or None}``."""

    def batch_context_data(self, batch):
        context = super().batch_context_data(batch)
        keys = {}
        for message, event in batch:
            info = message.delivery_info or {}
            keys[event.event_id] = original_routing_key(message.headers, info.get("exchange"),
                                                        info.get("routing_key"))
        context[CONTEXT_KEY] = keys
        return context


record_events_handler = RecordingEventHandler.decorator


class RoutingKeys(DependencyProvider):
    """``self.routing_keys``: event_id -> the original routing key (or None) of each event
    being handled."""

    def get_dependency(self, worker_ctx):
        return worker_ctx.context_data.get(CONTEXT_KEY) or {}
