"""The broker's ceiling with plain pika: persistent 200-byte JSON into a durable queue."""
import collections
import time
from urllib.parse import unquote, urlparse

import pika

from bench.payload import event_body

QUEUE = "bench.pika"


def parameters(amqp_uri):
    url = urlparse(amqp_uri)
    return pika.ConnectionParameters(
        host=url.hostname, port=url.port or 5672, virtual_host=unquote(url.path[1:]) or "/",
        credentials=pika.PlainCredentials(url.username, url.password), heartbeat=60)


class Pika:
    def __init__(self, amqp_uri):
        self.connection = pika.BlockingConnection(parameters(amqp_uri))
        self.body = event_body()
        self.properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)

    def fresh_channel(self):
        channel = self.connection.channel()
        channel.queue_declare(QUEUE, durable=True)
        channel.queue_purge(QUEUE)
        return channel

    def close(self):
        self.connection.close()

    def publish_unconfirmed(self, count):
        channel = self.fresh_channel()
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish("", QUEUE, self.body, self.properties)
        # a round trip: everything before it reached the broker
        channel.queue_declare(QUEUE, durable=True, passive=True)
        seconds = time.perf_counter() - started
        channel.close()
        return count / seconds

    def publish_confirmed_each(self, count):
        channel = self.fresh_channel()
        channel.confirm_delivery()
        started = time.perf_counter()
        for _ in range(count):
            channel.basic_publish("", QUEUE, self.body, self.properties)  # waits for its confirm
        seconds = time.perf_counter() - started
        channel.close()
        return count / seconds

    def publish_confirmed_pipelined(self, count, window=1000):
        channel = self.fresh_channel()
        pending = collections.deque()
        done = set()
        selected = []

        def on_confirm(frame):
            method = frame.method
            tag = method.delivery_tag
            if not isinstance(method, pika.spec.Basic.Ack):
                raise RuntimeError("broker nacked a message")
            if method.multiple:
                while pending and pending[0] <= tag:
                    pending.popleft()
            else:
                done.add(tag)
            while pending and pending[0] in done:
                done.discard(pending.popleft())

        channel._impl.confirm_delivery(ack_nack_callback=on_confirm,
                                       callback=lambda _frame: selected.append(True))
        while not selected:
            self.connection.process_data_events(0.05)
        started = time.perf_counter()
        for tag in range(1, count + 1):
            pending.append(tag)  # before publishing: its confirm may be read while publishing
            channel.basic_publish("", QUEUE, self.body, self.properties)
            while len(pending) >= window:
                self.connection.process_data_events(0)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            self.connection.process_data_events(0.01)
        if pending:
            raise RuntimeError(f"{len(pending)} confirms missing")
        seconds = time.perf_counter() - started
        channel.close()
        return count / seconds

    def consume(self, count, prefetch=100):
        """Fill the queue with ``count`` messages, then consume them with manual acks."""
        channel = self.fresh_channel()
        for _ in range(count):
            channel.basic_publish("", QUEUE, self.body, self.properties)
        deadline = time.monotonic() + 60
        while (channel.queue_declare(QUEUE, durable=True, passive=True).method.message_count
               < count and time.monotonic() < deadline):
            self.connection.sleep(0.05)
        channel.basic_qos(prefetch_count=prefetch)
        received = [0]

        def on_message(ch, method, _properties, _body):
            ch.basic_ack(method.delivery_tag)
            received[0] += 1

        channel.basic_consume(QUEUE, on_message)
        started = time.perf_counter()
        deadline = time.monotonic() + 60
        while received[0] < count and time.monotonic() < deadline:
            self.connection.process_data_events(0.01)
        seconds = time.perf_counter() - started
        channel.close()
        return received[0] / seconds
