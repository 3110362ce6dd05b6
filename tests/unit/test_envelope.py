"""The envelope: what we publish, and how liberally we read what others publish."""
import json
from datetime import datetime, timezone

import pytest

from services.kit.envelope import InvalidEvent, derive_event_id, new_event, parse_event


def test_new_event_serializes_the_design_envelope():
    event = new_event("course.enrolled", {"enrollment_id": 456, "course_title": "Pythön"},
                      source="course")
    document = json.loads(event.to_json().decode("utf-8"))
    assert list(document) == ["event_id", "event_type", "timestamp", "source", "version", "data"]
    assert document["event_type"] == "course.enrolled"
    assert document["source"] == "course"
    assert document["version"] == 1
    assert document["data"]["course_title"] == "Pythön"
    assert datetime.fromisoformat(document["timestamp"]).utcoffset().total_seconds() == 0
    assert len(document["event_id"]) == 32


def test_event_ids_are_unique():
    assert new_event("a.b", {}, "s").event_id != new_event("a.b", {}, "s").event_id


def test_data_that_is_not_json_fails_at_dispatch_time():
    with pytest.raises(TypeError):
        new_event("a.b", {"when": object()}, "s").to_json()
    with pytest.raises(TypeError):
        new_event("a.b", ["not", "a", "dict"], "s")
    with pytest.raises(ValueError):
        new_event("", {}, "s")


def test_round_trip():
    event = new_event("review.created", {"rating": 5}, source="review")
    assert parse_event(event.to_json()) == event


def test_seed_format_is_accepted_with_naive_timestamp_as_utc():
    body = b'{"event_type": "user.registered", "timestamp": "2024-01-15T10:30:00", ' \
           b'"data": {"user_id": 123, "email": "user@example.com", "name": "John Doe"}}'
    event = parse_event(body)
    assert event.event_type == "user.registered"
    assert event.timestamp == datetime(2024, 1, 15, 10, 30, tzinfo=timezone.utc)
    assert event.data["user_id"] == 123
    assert event.source == "unknown"
    assert event.version == 1
    # the derived id is stable: a redelivery of the same body dedupes
    assert parse_event(body).event_id == event.event_id
    assert event.event_id == derive_event_id("user.registered", "2024-01-15T10:30:00",
                                             event.data)


def test_derived_id_differs_for_different_events():
    first = parse_event(b'{"event_type": "a.b", "timestamp": "2024-01-15T10:30:00", "data": {}}')
    second = parse_event(b'{"event_type": "a.b", "timestamp": "2024-01-15T10:30:01", "data": {}}')
    assert first.event_id != second.event_id


def test_amqp_properties_fill_in_missing_fields():
    event = parse_event(b'{"event_type": "a.b", "data": {}}', message_id="m-1", app_id="pika")
    assert event.event_id == "m-1"
    assert event.source == "pika"


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "not an object"),
    (b'"text"', "not an object"),
    (b'{"data": {}}', "no event_type"),
    (b'{"event_type": "", "data": {}}', "no event_type"),
    (b'{"event_type": 7, "data": {}}', "no event_type"),
    (b'{"event_type": "a.b"}', "no data object"),
    (b'{"event_type": "a.b", "data": [1]}', "no data object"),
    (b'{"event_type": "a.b", "data": {}, "timestamp": "yesterday"}', "not ISO 8601"),
    (b'{"event_type": "a.b", "data": {}, "timestamp": 1700000000}', "ISO 8601 string"),
    (b'{"event_type": "a.b", "data": {}, "version": 0}', "version"),
    (b'{"event_type": "a.b", "data": {}, "version": true}', "version"),
    (b'{"event_type": "a.b", "data": {}, "event_id": ""}', None),
])
def test_what_is_not_an_event_says_why(body, reason):
    if reason is None:  # an empty event_id is replaced by a derived one, not refused
        assert parse_event(body).event_id
        return
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(body)
