"""/api/events/ws with a real WebSocket client (websocket-client) against the real gateway web
server (its RPC proxies mocked, no broker): the same messages as the SSE stream, the same limits,
ping/pong, and close 1001 when the gateway stops."""
import json
import struct
import time

import eventlet
import pytest
import requests
import websocket

from gateway import live as live_module
from tests.support.broker import wait_until
from tests.unit.test_gateway import _live_events, assert_error, gateway  # noqa: F401 (fixture)

REGISTERED = {"event_id": "c" * 32, "event_type": "user.registered", "source": "auth",
              "version": 1, "timestamp": "2026-11-26T10:00:00+00:00",
              "data": {"user_id": 7, "email": "ada@example.com", "name": "Ada"}}


class AmqpMessage:
    """What LiveEvents' consumer hands over: a body and properties."""

    def __init__(self, body):
        self.body, self.properties = json.dumps(body).encode(), {}


def ws_url(base):
    return base.replace("http://", "ws://") + "/api/events/ws"


def connect(base, **kwargs):
    return websocket.create_connection(ws_url(base), timeout=5, **kwargs)


def test_the_websocket_carries_what_the_sse_stream_carries(gateway):  # noqa: F811
    base, _ = gateway()
    live = _live_events(gateway.container)
    client = connect(base)
    sse = requests.get(f"{base}/api/events/stream", stream=True, timeout=5)
    try:
        wait_until(lambda: len(live.subscriptions) == 2, message="both streams open")
        live._on_message(AmqpMessage(REGISTERED))  # as it comes from the broker
        message = json.loads(client.recv())
        lines = sse.iter_lines(decode_unicode=True)
        data = next(line for line in lines if line.startswith("data: "))
        assert message == {"type": "event", "id": 1, "event": json.loads(data[len("data: "):])}
        assert message["event"]["data"] == {"user_id": 7}  # the public view: no email, no name
        assert "ada@example.com" not in json.dumps(message)
    finally:
        client.close()
        sse.close()


def test_a_slow_websocket_client_is_told_what_it_missed(gateway):  # noqa: F811
    base, _ = gateway(LIVE_BUFFER=2)
    live = _live_events(gateway.container)
    client = connect(base)
    total, title = 400, "x" * 65536  # 25 MiB: more than the sockets' buffers hold
    try:
        wait_until(lambda: live.subscriptions, message="stream open")
        for n in range(total):  # the client reads nothing meanwhile
            live.publish({"event_type": "a.b", "n": n, "title": title})
            eventlet.sleep(0)
        messages = []
        while not messages or messages[-1].get("event", {}).get("n") != total - 1:
            messages.append(json.loads(client.recv()))
        notices = [message["dropped"] for message in messages if message["type"] == "dropped"]
        events = [message for message in messages if message["type"] == "event"]
        assert notices and notices == sorted(notices)  # each notice: the total so far
        assert notices[-1] + len(events) == total  # every event is either sent or counted
        assert [message["id"] for message in events] == list(range(1, len(events) + 1))
    finally:
        client.close()


def test_websocket_and_sse_share_live_max_streams(gateway):  # noqa: F811
    base, _ = gateway(LIVE_MAX_STREAMS=2)
    live = _live_events(gateway.container)
    first = connect(base)
    sse = requests.get(f"{base}/api/events/stream", stream=True, timeout=5)
    try:
        wait_until(lambda: len(live.subscriptions) == 2, message="two streams open")
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            connect(base)
        assert refused.value.status_code == 503
        assert refused.value.resp_headers["retry-after"] == "10"
        assert json.loads(refused.value.resp_body)["error"] == "too_many_streams"
        assert_error(requests.get(f"{base}/api/events/stream", timeout=5), 503,
                     "too_many_streams")
        first.close()  # a closed WebSocket frees its slot at once
        wait_until(lambda: len(live.subscriptions) == 1, timeout=2, message="slot freed")
        second = connect(base)
        second.close()
    finally:
        sse.close()


def test_a_plain_get_of_the_websocket_route_is_a_json_400(gateway):  # noqa: F811
    base, _ = gateway()
    body = assert_error(requests.get(f"{base}/api/events/ws", timeout=5), 400, "bad_request")
    assert "takes a WebSocket upgrade" in body["message"]
    assert _live_events(gateway.container).subscriptions == set()


def test_idle_websocket_gets_pings_and_a_client_that_never_pongs_is_dropped(gateway,  # noqa: F811
                                                                            monkeypatch):
    monkeypatch.setattr(live_module, "HEARTBEAT_SECONDS", 0.2)
    base, _ = gateway()
    live = _live_events(gateway.container)
    client = connect(base)
    try:
        opcode, frame = client.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_PING  # and websocket-client answered it
        wait_until(lambda: live.subscriptions, message="stream open")
        # a client that reads nothing sends no pong: dropped after a few heartbeats
        wait_until(lambda: not live.subscriptions, timeout=3, message="silent client dropped")
    finally:
        client.close()


def test_a_websocket_that_answers_pings_stays_open(gateway, monkeypatch):  # noqa: F811
    monkeypatch.setattr(live_module, "HEARTBEAT_SECONDS", 0.2)
    base, _ = gateway()
    live = _live_events(gateway.container)
    client = connect(base)
    try:
        deadline = time.monotonic() + 1.5  # several heartbeats
        pings = 0
        while time.monotonic() < deadline:
            opcode, _ = client.recv_data_frame(control_frame=True)  # answers each ping
            pings += opcode == websocket.ABNF.OPCODE_PING
        assert pings >= 4 and len(live.subscriptions) == 1
        live.publish({"event_type": "still.here"})
        while True:
            opcode, frame = client.recv_data_frame(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                break
        assert json.loads(frame.data)["event"] == {"event_type": "still.here"}
    finally:
        client.close()


def test_the_gateway_stopping_closes_websockets_with_1001(gateway):  # noqa: F811
    base, _ = gateway()
    live = _live_events(gateway.container)
    client = connect(base)
    wait_until(lambda: live.subscriptions, message="stream open")
    stopping = eventlet.spawn(gateway.container.stop)
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == 1001
    assert frame.data[2:] == b"the gateway is shutting down"
    stopping.wait()
    assert live.subscriptions == set()
    client.close()
