"""How analytics learns the routing key an event was published with.

The kit's ``event_handler`` hands a handler the parsed envelope only. The analytics log also keeps
the routing key, so this subclass of the kit's ``EventHandler`` (same queue, inbox, retries and
dead-lettering) adds the delivery's routing key to the worker's context data, and ``RoutingKey``
gives it to the handler. A retried delivery comes back through the default exchange with its queue
name as routing key: the kit's ``x-original-routing-key`` header names the original one then.
"""
from nameko.extensions import DependencyProvider

from contracts.subscriptions import SHELL_EVENT_EXCHANGES
from services.kit.constants import (
    EVENTS_EXCHANGE, HEADER_ORIGINAL_ROUTING_KEY, SHELL_EVENT_EXCHANGE,
)
from services.kit.handlers import EventHandler

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


class RecordingEventHandler(EventHandler):
    """The kit's event handler, also telling the worker the delivery's original routing key."""

    def unpack_message_headers(self, message):
        context = super().unpack_message_headers(message)
        info = message.delivery_info or {}
        context[CONTEXT_KEY] = original_routing_key(message.headers, info.get("exchange"),
                                                    info.get("routing_key"))
        return context


record_event_handler = RecordingEventHandler.decorator


class RoutingKey(DependencyProvider):
    """``self.routing_key``: the original routing key of the event being handled (or None)."""

    def get_dependency(self, worker_ctx):
        return worker_ctx.context_data.get(CONTEXT_KEY)
