"""Queue names and arguments: what an operator sees in the management UI."""
import amqp
import pytest

from services.kit import topology
from services.kit.constants import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE


def test_consumer_queue_is_durable_bound_and_dead_letters_to_its_dlq():
    queue = topology.consumer_queue("course.update_rating", ("review.created",))
    assert queue.durable
    assert [(b.exchange.name, b.routing_key) for b in queue.bindings] == [
        (EVENTS_EXCHANGE, "review.created")]
    assert queue.queue_arguments == {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                                     "x-dead-letter-routing-key": "course.update_rating"}
    dlq = topology.dead_letter_queue("course.update_rating")
    assert dlq.name == "course.update_rating.dlq"
    assert (dlq.exchange.name, dlq.routing_key) == (DEAD_LETTER_EXCHANGE, "course.update_rating")


def test_retry_queue_sends_back_after_its_delay():
    queue = topology.retry_queue("course.update_rating", 1.5)
    assert queue.name == "course.update_rating.retry.1500ms"
    assert queue.queue_arguments == {"x-message-ttl": 1500, "x-dead-letter-exchange": "",
                                     "x-dead-letter-routing-key": "course.update_rating"}


def test_retry_delays_from_config_list_or_environment_string():
    assert topology.retry_delays({}) == (1.0, 5.0, 30.0)
    assert topology.retry_delays({"EVENT_RETRY_DELAYS": [0.5, 2]}) == (0.5, 2.0)
    assert topology.retry_delays({"EVENT_RETRY_DELAYS": "1, 10"}) == (1.0, 10.0)
    assert topology.retry_delays({"EVENT_RETRY_DELAYS": []}) == ()


def test_every_subscription_names_a_service_method_and_binding_keys():
    subscriptions = topology.configured_subscriptions(
        {"SUBSCRIPTIONS": "contracts.subscriptions:SUBSCRIPTIONS"})
    assert subscriptions
    for queue_name, keys in subscriptions.items():
        service, method = queue_name.split(".")
        assert service and method and keys


def test_the_routing_contract_comes_from_config_with_the_extra_subscriptions():
    assert topology.configured_subscriptions({}) == {}
    assert topology.configured_subscriptions({
        "SUBSCRIPTIONS": {"a.b": ["x.y"]}, "EXTRA_SUBSCRIPTIONS": {"reporting.record": ["#"]},
    }) == {"a.b": ("x.y",), "reporting.record": ("#",)}


class RacingQueue:
    """A queue whose first declarations lose a race on the broker (RabbitMQ's 404)."""

    name = "notification.send_welcome.retry.1000ms"

    def __init__(self, losses, reply_text="NOT_FOUND - home node 'rabbit@localhost' of durable "
                 "queue 'notification.send_welcome.retry.1000ms' in vhost '/' is down or "
                 "inaccessible"):
        self.losses, self.reply_text, self.declared = losses, reply_text, 0

    def __call__(self, channel):
        return self

    def declare(self):
        self.declared += 1
        if self.declared <= self.losses:
            raise amqp.exceptions.NotFound(self.reply_text)


def test_a_declaration_that_raced_another_is_tried_again(monkeypatch):
    monkeypatch.setattr(topology.time, "sleep", lambda seconds: None)
    queue = RacingQueue(losses=2)
    topology.declare_queue(channel=None, queue=queue)
    assert queue.declared == 3


def test_a_queue_that_stays_inaccessible_or_is_missing_raises(monkeypatch):
    monkeypatch.setattr(topology.time, "sleep", lambda seconds: None)
    with pytest.raises(amqp.exceptions.NotFound):
        topology.declare_queue(channel=None, queue=RacingQueue(losses=99))
    missing = RacingQueue(losses=1, reply_text="NOT_FOUND - no exchange 'x' in vhost '/'")
    with pytest.raises(amqp.exceptions.NotFound):
        topology.declare_queue(channel=None, queue=missing)
    assert missing.declared == 1  # not a race: not tried again
