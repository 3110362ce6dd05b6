"""Plain-AMQP helpers for tests: pika, as the seed's own clients use it."""
import json
import time
from urllib.parse import unquote, urlparse

import pika

from services.kit.constants import EVENTS_EXCHANGE


def pika_parameters(amqp_uri, port=None):
    url = urlparse(amqp_uri)
    vhost = unquote(url.path[1:]) if len(url.path) > 1 else "/"
    return pika.ConnectionParameters(
        host=url.hostname, port=port or url.port or 5672, virtual_host=vhost,
        credentials=pika.PlainCredentials(unquote(url.username), unquote(url.password)),
        heartbeat=30, blocked_connection_timeout=10)


class PlainClient:
    """A pika connection to the test vhost."""

    def __init__(self, amqp_uri):
        self.connection = pika.BlockingConnection(pika_parameters(amqp_uri))
        self.channel = self.connection.channel()

    def close(self):
        if self.connection.is_open:
            self.connection.close()

    def bind_queue(self, routing_key="#", exchange=EVENTS_EXCHANGE):
        """An exclusive queue bound to the events exchange; returns its name."""
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(queue, exchange, routing_key=routing_key)
        return queue

    def get(self, queue, timeout=10):
        """Wait for one message: (method, properties, body)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is not None:
                return method, properties, body
            self.connection.sleep(0.05)
        raise AssertionError(f"no message on {queue} within {timeout}s")

    def get_all(self, queue):
        messages = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((method, properties, body))

    def message_count(self, queue):
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def publish(self, routing_key, body, exchange=EVENTS_EXCHANGE, properties=None):
        """Publish like the seed does: persistent, as given (bytes or a JSON-able object)."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        self.channel.basic_publish(
            exchange=exchange, routing_key=routing_key, body=body,
            properties=properties or pika.BasicProperties(delivery_mode=2))


def wait_until(predicate, timeout=10, interval=0.05, message="condition"):
    """Poll ``predicate`` (greenthread-friendly) until it is truthy; return its value."""
    import eventlet
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} did not happen within {timeout}s")
        eventlet.sleep(interval)
