"""services/kit/metrics.py: the METRICS_PORT server and the message helpers."""
import requests
from nameko.testing.utils import find_free_port

from services.kit import metrics


class FakeMessage:
    def __init__(self, properties=None, headers=None, routing_key=None):
        self.properties = properties or {}
        self.headers = headers
        self.delivery_info = {"routing_key": routing_key}


def test_metrics_port_serves_the_process_metrics():
    metrics.event_published("unit-test", "user.registered", 3)
    port = metrics.serve(find_free_port())
    assert metrics.serve(port + 1) == port  # one server per process
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    assert ('knowledge_nest_events_published_total{event_type="user.registered",'
            'service="unit-test"} 3.0') in body


def test_event_type_of_a_message():
    assert metrics.event_type_of(FakeMessage({"type": "course.created"})) == "course.created"
    assert metrics.event_type_of(FakeMessage(
        headers={"x-original-routing-key": "review.created"}, routing_key="x.retry")) \
        == "review.created"
    assert metrics.event_type_of(FakeMessage(routing_key="user.registered")) == "user.registered"
    assert metrics.event_type_of(FakeMessage()) == "unknown"
