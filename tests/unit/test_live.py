"""gateway/live.py: what the public stream shows of an event, bounded buffers, the SSE format."""
import json

import pytest

from gateway.live import LiveEvents, StreamBody, Subscription, public_view, sse_message
from services.kit.errors import ServiceUnavailable


def test_public_view_keeps_ids_titles_and_ratings_never_emails_or_names():
    body = json.dumps({"event_id": "a" * 32, "event_type": "user.registered",
                       "timestamp": "2026-11-26T10:00:00+00:00", "source": "auth", "version": 1,
                       "data": {"user_id": 7, "email": "ada@example.com", "name": "Ada"}})
    view = public_view(body.encode())
    assert view == {"event_id": "a" * 32, "event_type": "user.registered",
                    "timestamp": "2026-11-26T10:00:00+00:00", "source": "auth",
                    "data": {"user_id": 7}}
    review = public_view(json.dumps({"event_type": "review.created", "data": {
        "review_id": 1, "user_id": 2, "course_id": 3, "rating": 5, "has_comment": True,
        "comment": "free text"}}).encode())
    assert review["data"] == {"review_id": 1, "user_id": 2, "course_id": 3, "rating": 5,
                              "has_comment": True}


def test_public_view_of_a_seed_format_event_and_of_garbage():
    seed = public_view(b'{"event_type": "course.created", "timestamp": "2024-01-15T10:30:00",'
                       b' "data": {"course_id": 4, "title": "Go", "instructor_id": 9}}')
    assert seed["event_type"] == "course.created" and seed["event_id"]
    assert seed["timestamp"].startswith("2024-01-15T10:30:00")
    assert seed["data"] == {"course_id": 4, "title": "Go", "instructor_id": 9}
    assert public_view(b"{not json") is None
    assert public_view(b'{"data": {}}') is None


def test_a_full_buffer_drops_its_oldest_event_and_counts_it():
    subscription = Subscription(size=3)
    for n in range(5):
        subscription.offer({"n": n})
    assert subscription.dropped == 2
    assert [subscription.next(timeout=0)["n"] for _ in range(3)] == [2, 3, 4]
    assert subscription.next(timeout=0.01) is None


def test_sse_message_is_one_event_with_json_data():
    text = sse_message({"event_type": "x.y", "data": {"a": 1}}, event_id=3)
    assert text == 'id: 3\nevent: event\ndata: {"event_type":"x.y","data":{"a":1}}\n\n'


def unstarted_live(max_streams, buffer_size):
    """LiveEvents without a container: streams and fan-out only, no feed from the broker."""
    live = LiveEvents()
    live.max_streams, live.buffer_size = max_streams, buffer_size
    return live


def test_stream_sends_events_heartbeats_and_unsubscribes_when_closed():
    live = unstarted_live(max_streams=2, buffer_size=10)
    subscription = live.subscribe()
    body = StreamBody(live, subscription, heartbeat=0.01)
    assert next(body) == "retry: 2000\n\n"
    assert next(body).startswith(": alive, 0 dropped")  # nothing happened: a comment
    live.publish({"event_type": "a.b"})
    assert next(body) == sse_message({"event_type": "a.b"}, 1)
    body.close()  # the client went away
    assert live.subscriptions == set()


def test_streams_beyond_the_limit_are_refused_with_503():
    live = unstarted_live(max_streams=1, buffer_size=10)
    live.subscribe()
    with pytest.raises(ServiceUnavailable):
        live.subscribe()


def test_a_stream_that_fell_behind_is_told_how_many_events_it_missed():
    live = unstarted_live(max_streams=2, buffer_size=2)
    subscription = live.subscribe()
    body = StreamBody(live, subscription, heartbeat=0.01)
    assert next(body) == "retry: 2000\n\n"
    for n in range(5):  # the client reads nothing meanwhile: 3 give way
        live.publish({"n": n})
    assert next(body) == 'event: dropped\ndata: {"dropped":3}\n\n'
    assert next(body) == sse_message({"n": 3}, 1)
    assert next(body) == sse_message({"n": 4}, 2)  # no second notice for the same loss
    assert next(body).startswith(": alive, 3 dropped")
    body.close()
