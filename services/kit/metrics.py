"""Prometheus metrics for every service, in prometheus_client's default registry.

Where to read them:
- ``make run`` (every service in one process): the gateway's ``GET /metrics`` shows them all.
- one process per service (docker compose): set ``METRICS_PORT`` and every service with the kit's
  event machinery (or ``MetricsServer()`` as a dependency) serves ``http://<host>:<port>/metrics``
  from that process; 0 or empty (the default) serves nothing. A process serves one port even when
  it runs several services.

Events (label ``service``: the one counting; ``event_type``; ``queue``: ``<service>.<method>``):

    knowledge_nest_events_published_total        confirmed by the broker, from the outbox
    knowledge_nest_events_handled_total          handler ran and its transaction committed
    knowledge_nest_events_failed_total           handler raised (each try; retried or parked)
    knowledge_nest_events_dead_lettered_total    parked in "<queue>.dlq" (label ``reason``:
                                                 failed / invalid)
    knowledge_nest_events_duplicates_skipped_total  already in the inbox: acked, not run again
    knowledge_nest_outbox_backlog                events in the outbox not yet published
    knowledge_nest_rows_pruned_total             outbox rows and inbox records deleted by the
                                                 retention sweep (label ``table``: outbox/inbox)

The gateway counts its HTTP requests in the same registry (gateway/metrics.py).
"""
import logging
import threading

from nameko.extensions import SharedExtension
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from prometheus_client import REGISTRY, start_http_server

from services.kit.settings import METRICS_PORT

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "knowledge_nest_events_published_total", "Events published from the outbox and confirmed",
    ["service", "event_type"])
EVENTS_HANDLED = Counter(
    "knowledge_nest_events_handled_total", "Events a handler processed and committed",
    ["service", "queue", "event_type"])
EVENTS_FAILED = Counter(
    "knowledge_nest_events_failed_total", "Handler runs that raised (each try)",
    ["service", "queue", "event_type"])
EVENTS_DEAD_LETTERED = Counter(
    "knowledge_nest_events_dead_lettered_total", "Messages parked in a dead-letter queue",
    ["service", "queue", "event_type", "reason"])
EVENTS_DUPLICATES = Counter(
    "knowledge_nest_events_duplicates_skipped_total",
    "Redelivered events skipped because the inbox already had them",
    ["service", "queue", "event_type"])
OUTBOX_BACKLOG = Gauge(
    "knowledge_nest_outbox_backlog", "Events in the outbox not yet published",
    ["service"])
ROWS_PRUNED = Counter(
    "knowledge_nest_rows_pruned_total", "Sent outbox rows and inbox records past retention deleted",
    ["service", "table"])


# Hooks, called by services/kit/outbox.py and handlers.py: one line each there.

def event_published(service, event_type, count=1):
    EVENTS_PUBLISHED.labels(service, event_type).inc(count)


def event_handled(service, queue, event_type):
    EVENTS_HANDLED.labels(service, queue, event_type).inc()


def event_failed(service, queue, event_type):
    EVENTS_FAILED.labels(service, queue, event_type).inc()


def event_dead_lettered(service, queue, event_type, reason):
    EVENTS_DEAD_LETTERED.labels(service, queue, event_type or "unknown", reason).inc()


def duplicate_skipped(service, queue, event_type):
    EVENTS_DUPLICATES.labels(service, queue, event_type).inc()


def rows_pruned(service, table, count):
    ROWS_PRUNED.labels(service, table).inc(count)


def outbox_backlog(service, count):
    OUTBOX_BACKLOG.labels(service).set(count)


def latest():
    """(body, content type) of the process's metrics, for an HTTP response."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_server_lock = threading.Lock()
_server_port = None


def serve(port):
    """Serve /metrics on ``port`` from this process, once (later calls are no-ops)."""
    global _server_port
    with _server_lock:
        if _server_port is None:
            start_http_server(port)
            _server_port = port
            log.info("Prometheus metrics on http://0.0.0.0:%d/metrics", port)
    return _server_port


class MetricsServer(SharedExtension):
    """Serves this process's metrics on ``METRICS_PORT`` when that is set (see above)."""

    def start(self):
        port = METRICS_PORT.read(self.container.config)
        if port:  # unset or 0: no port
            serve(port)


def event_type_of(message):
    """The event type of an AMQP message, from its properties or routing key ("unknown")."""
    headers = message.headers or {}
    return (message.properties.get("type") or headers.get("x-original-routing-key")
            or (message.delivery_info or {}).get("routing_key") or "unknown")
