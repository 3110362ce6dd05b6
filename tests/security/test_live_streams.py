"""Hostile and careless clients of the live streams (issue 15): HEAD requests, clients that go
away, more streams than LIVE_MAX_STREAMS. The real gateway web server, RPC proxies mocked."""
import socket
import struct
import time

import requests
import websocket

from tests.support.broker import wait_until
from tests.unit.test_gateway import _live_events, assert_error, gateway  # noqa: F401 (fixture)

FREED_WITHIN = 2.0  # seconds; a heartbeat is 15 s, so a slot freed in time was not found late


def open_raw_stream(base):
    """A GET of the stream on a bare socket, its response headers read: (socket, headers)."""
    host, port = base[len("http://"):].split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"GET /api/events/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream"
                 b"\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(4096)
    return sock, received.split(b"\r\n\r\n")[0].decode()


def freed_after(live, since):
    wait_until(lambda: not live.subscriptions, timeout=FREED_WITHIN * 2,
               message="the stream's slot freed")
    return time.monotonic() - since


def test_head_requests_take_no_stream_slot(gateway):  # noqa: F811
    base, _ = gateway(LIVE_MAX_STREAMS=5)
    live = _live_events(gateway.container)
    for _ in range(100):
        response = requests.head(f"{base}/api/events/stream", timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
    assert live.subscriptions == set()
    stream = requests.get(f"{base}/api/events/stream", stream=True, timeout=5)
    try:
        assert stream.status_code == 200
    finally:
        stream.close()


def test_a_closed_stream_frees_its_slot_at_once(gateway):  # noqa: F811
    base, _ = gateway(LIVE_MAX_STREAMS=1)
    live = _live_events(gateway.container)
    for _ in range(3):  # a client that reconnects: each time the slot is back at once
        sock, headers = open_raw_stream(base)
        assert headers.startswith("HTTP/1.1 200")
        assert len(live.subscriptions) == 1
        closed = time.monotonic()
        sock.close()
        assert freed_after(live, closed) < FREED_WITHIN


def test_a_reset_connection_frees_its_slot_at_once(gateway):  # noqa: F811
    base, _ = gateway(LIVE_MAX_STREAMS=1)
    live = _live_events(gateway.container)
    sock, _ = open_raw_stream(base)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reset = time.monotonic()
    sock.close()  # RST, not FIN
    assert freed_after(live, reset) < FREED_WITHIN
    assert requests.get(f"{base}/api/events/stream", stream=True, timeout=5).status_code == 200


def test_a_websocket_client_that_vanishes_frees_its_slot_at_once(gateway):  # noqa: F811
    base, _ = gateway(LIVE_MAX_STREAMS=1)
    live = _live_events(gateway.container)
    url = base.replace("http://", "ws://") + "/api/events/ws"
    client = websocket.create_connection(url, timeout=5)
    wait_until(lambda: live.subscriptions, message="stream open")
    gone = time.monotonic()
    client.sock.close()  # no close frame: the connection just ends
    assert freed_after(live, gone) < FREED_WITHIN
    client = websocket.create_connection(url, timeout=5)
    wait_until(lambda: live.subscriptions, message="stream open again")
    closed = time.monotonic()
    client.close()  # with a close frame
    assert freed_after(live, closed) < FREED_WITHIN


def test_over_the_limit_the_503_says_too_many_streams_with_retry_after(gateway):  # noqa: F811
    base, _ = gateway(LIVE_MAX_STREAMS=2)
    live = _live_events(gateway.container)
    held = [open_raw_stream(base)[0] for _ in range(2)]
    try:
        refused = requests.get(f"{base}/api/events/stream", timeout=5)
        body = assert_error(refused, 503, "too_many_streams")
        assert "too many open live streams" in body["message"]
        assert "LIVE_MAX_STREAMS" in body["message"]
        assert "did not answer" not in body["message"]
        assert int(refused.headers["Retry-After"]) > 0
        # meanwhile the rest of the API is served
        assert requests.get(f"{base}/api/openapi.json", timeout=5).status_code == 200
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: not live.subscriptions, timeout=FREED_WITHIN, message="slots freed")
    assert requests.head(f"{base}/api/events/stream", timeout=5).status_code == 200
