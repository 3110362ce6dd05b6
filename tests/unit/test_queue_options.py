"""EVENT_TTL, EVENT_PRIORITY and QUEUE_TYPE: the arguments and message properties they give."""
import pytest

from services.kit import topology
from services.kit.constants import DEAD_LETTER_EXCHANGE


def test_classic_queue_gets_max_priority_only_when_priorities_are_configured():
    assert "x-max-priority" not in topology.consumer_queue_arguments("a.b", {})
    arguments = topology.consumer_queue_arguments(
        "a.b", {"EVENT_PRIORITY": {"user.registered": 9}})
    assert arguments == {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                         "x-dead-letter-routing-key": "a.b", "x-max-priority": 9}


def test_quorum_queue_has_no_priority_and_dead_letters_at_least_once():
    arguments = topology.consumer_queue_arguments(
        "a.b", {"QUEUE_TYPE": "quorum", "EVENT_PRIORITY": {"user.registered": 9}})
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"  # what at-least-once requires
    assert "x-max-priority" not in arguments
    assert topology.consumer_queue("a.b", ["x"], {"QUEUE_TYPE": "quorum"}).durable


def test_message_options_per_event_type():
    options = topology.message_options({
        "EVENT_TTL": {"course.created": 1.5, "user.registered": None},
        "EVENT_PRIORITY": {"user.registered": 9, "review.created": None}})
    assert options("course.created") == {"expiration": "1500"}
    assert options("user.registered") == {"priority": 9}
    assert options("review.created") == {}
    assert options("other") == {}


@pytest.mark.parametrize("config", [
    {"QUEUE_TYPE": "stream"}, {"EVENT_PRIORITY": {"a": 10}}, {"EVENT_PRIORITY": {"a": -1}},
    {"EVENT_TTL": {"a": -1}},
])
def test_invalid_settings_are_refused(config):
    with pytest.raises(ValueError):
        topology.consumer_queue_arguments("a.b", config)
        topology.message_options(config)


def test_mismatch_error_names_the_migration_command():
    error = topology.QueueArgumentsMismatch("a.b", "PRECONDITION_FAILED - inequivalent arg")
    assert "knowledge-nest migrate-queues" in str(error) and "'a.b'" in str(error)
