"""gateway/live.py against the real broker (a throwaway vhost per test): the gateway's own queue
of every event, garbage on the exchange, and the connection cut by the broker."""
from urllib.parse import unquote, urlparse

import eventlet
import pytest
from nameko.rpc import rpc

from gateway import live as live_module
from gateway.live import LiveEvents, LiveFeed
from tests.support.broker import PlainClient, wait_until

pytestmark = pytest.mark.integration

EVENT = {"event_id": "b" * 32, "event_type": "user.registered", "source": "auth", "version": 1,
         "timestamp": "2026-11-26T10:00:00+00:00",
         "data": {"user_id": 7, "email": "ada@example.com", "name": "Ada"}}


class Watcher:
    name = "watcher"
    live = LiveFeed()

    @rpc
    def ping(self):  # pragma: no cover (a container needs an entrypoint)
        return "pong"


def _live(container):
    return next(ext for ext in container.extensions if isinstance(ext, LiveEvents))


@pytest.fixture
def watched(container_factory, rabbit_config):
    """Two containers (two gateway processes' worth), each with its own LiveEvents, started."""
    lives = []
    for _ in range(2):
        container = container_factory(Watcher, rabbit_config)
        container.start()
        lives.append(_live(container))
    plain = PlainClient(rabbit_config["AMQP_URI"])
    yield lives, plain
    plain.close()


def live_queues(rabbit_manager, rabbit_config):
    return sorted(q["name"] for q in rabbit_manager.get_queues(live_vhost(rabbit_config))
                  if q["name"].startswith("gateway.live."))


def test_every_process_gets_every_event_and_garbage_is_ignored(watched):
    (first, second), plain = watched
    subscriptions = [first.subscribe(), second.subscribe()]  # each binds its queue first
    assert first.queue_name != second.queue_name
    plain.publish("whatever", b"{not json")  # on the exchange, not an event: skipped
    plain.publish("user.registered", EVENT)
    for subscription in subscriptions:
        view = subscription.next(timeout=5)
        assert view is not None, "no event within 5 s"
        assert view["event_id"] == EVENT["event_id"]
        assert view["data"] == {"user_id": 7}  # the email and the name never reach a stream
        assert subscription.next(timeout=0.2) is None  # once, and nothing for the garbage


def test_the_feed_comes_back_after_the_broker_cuts_its_connection(watched, rabbit_config,
                                                                  rabbit_manager):
    (live, other), _ = watched
    subscription = live.subscribe()

    def feed_connections():  # named after the feed's queue (as the management UI shows them)
        return [c["name"] for c in rabbit_manager.get_connections()
                if c.get("client_properties", {}).get("connection_name") == live.queue_name]

    # the management API lists a connection some seconds after it opened
    cut = wait_until(feed_connections, timeout=30, message="the feed's connection listed")
    assert len(cut) == 1
    rabbit_manager.delete_connection(cut[0])
    # the feed reconnects by itself, with a new connection, and declares its queue again
    wait_until(lambda: set(feed_connections()) - set(cut), timeout=30,
               message="the feed's new connection")
    wait_until(lambda: any(q["name"] == live.queue_name
                           for q in rabbit_manager.get_queues(live_vhost(rabbit_config))),
               timeout=20, message="the feed's queue declared again")
    plain = PlainClient(rabbit_config["AMQP_URI"])
    try:
        plain.publish("user.registered", dict(EVENT, event_id="c" * 32))
        view = subscription.next(timeout=5)
        assert view is not None and view["event_id"] == "c" * 32
    finally:
        plain.close()


def live_vhost(rabbit_config):
    return unquote(urlparse(rabbit_config["AMQP_URI"]).path[1:])


def test_the_feed_runs_only_while_someone_watches(watched, rabbit_config, rabbit_manager,
                                                  monkeypatch):
    monkeypatch.setattr(live_module, "FEED_IDLE_SECONDS", 0.5)
    (live, _), plain = watched
    eventlet.sleep(1.5)
    assert live_queues(rabbit_manager, rabbit_config) == []  # nobody watches: no queue at all

    subscription = live.subscribe()
    first_queue = live.queue_name
    wait_until(lambda: live_queues(rabbit_manager, rabbit_config) == [first_queue], timeout=30,
               message="the feed's queue listed")
    plain.publish("user.registered", EVENT)
    assert subscription.next(timeout=5)["event_id"] == EVENT["event_id"]

    live.unsubscribe(subscription)
    wait_until(lambda: live_queues(rabbit_manager, rabbit_config) == [], timeout=30,
               message="the feed stopped and its queue went away")

    again = live.subscribe()  # a new stream: a new feed, a new queue
    assert live.queue_name != first_queue
    plain.publish("user.registered", dict(EVENT, event_id="d" * 32))
    assert again.next(timeout=5)["event_id"] == "d" * 32
