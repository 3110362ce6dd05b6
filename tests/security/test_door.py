"""Slow and idle clients, and too many connections: the door's limits (gateway/door.py)."""
import threading
import time

import pytest

from tests.security.conftest import (Bystander, is_closed, raw_connection, read_response)

pytestmark = pytest.mark.integration

LIMITS = dict(HTTP_IDLE_TIMEOUT=2, HTTP_HEADER_TIMEOUT=2, HTTP_BODY_TIMEOUT=3,
              HTTP_SOCKET_TIMEOUT=10, HTTP_MAX_CONNECTIONS_PER_CLIENT=40, MAX_WORKERS=10,
              max_workers=10)
SERVED_WITHIN = 2.0  # seconds an ordinary request may take while the attack runs


@pytest.fixture
def door(start_suite):
    api = start_suite(**LIMITS)
    return api.base_url.removeprefix("http://")


def trickle(address, head, pause, results, stop):
    """Send ``head`` and then one body byte per ``pause`` until the server answers or closes."""
    try:
        sock = raw_connection(address)
        sock.sendall(head)
        sock.settimeout(pause)
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except OSError:
                data = None
            if data is not None:
                results.append(data)
                return
            try:
                sock.sendall(b"{")
            except OSError:
                results.append(b"")
                return
    except OSError as exc:
        results.append(repr(exc).encode())


def watch(bystander, paths, until, statuses):
    while time.monotonic() < until:
        for path in paths:
            status, elapsed = bystander.get(path)
            statuses.append((path, status, elapsed))
        time.sleep(0.1)


def test_slow_bodies_get_408_while_others_are_served(door):
    # 20 slow bodies: twice max_workers, which used to take the whole API down
    head = (b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n")
    results, stop, threads = [], threading.Event(), []
    for _ in range(20):
        thread = threading.Thread(target=trickle, args=(door, head, 0.5, results, stop))
        thread.start()
        threads.append(thread)
    time.sleep(0.5)
    bystander, statuses = Bystander(door), []
    started = time.monotonic()
    watch(bystander, ["/api/courses", "/health"], started + 4, statuses)
    for thread in threads:
        thread.join(timeout=10)
    stop.set()

    assert statuses and all(status == 200 for _, status, _ in statuses), statuses
    slowest = max(elapsed for _, _, elapsed in statuses)
    assert slowest < SERVED_WITHIN, statuses
    assert len(results) == 20
    assert all(b" 408 " in answer.split(b"\r\n")[0] and b'"request_timeout"' in answer
               for answer in results), results[:3]
    print(f"\nslow bodies: 20 x 1 byte/0.5 s; bystander {len(statuses)} requests, "
          f"slowest {slowest * 1000:.0f} ms, median "
          f"{sorted(e for *_, e in statuses)[len(statuses) // 2] * 1000:.0f} ms")


def test_slow_headers_get_408(door):
    sock = raw_connection(door)
    started = time.monotonic()
    sock.sendall(b"GET /api/courses HTTP/1.1\r\n")
    sock.settimeout(1)
    answer = b""
    while time.monotonic() - started < 6:
        try:
            sock.sendall(b"X-A: b\r\n")  # one header line a second, never the blank line
            answer = sock.recv(65536)
            if answer:
                break
        except OSError:
            pass
    elapsed = time.monotonic() - started
    assert b" 408 " in answer.split(b"\r\n")[0], answer
    assert 1.5 < elapsed < 4, elapsed
    assert Bystander(door).get("/api/courses")[0] == 200


def test_idle_connections_are_closed_while_others_are_served(door):
    # more idle connections than the per-client cap would allow at once: from several addresses
    idle = [raw_connection(door, source=f"127.0.1.{i % 30 + 1}") for i in range(300)]
    bystander = Bystander(door)
    status, elapsed = bystander.get("/api/courses")
    assert status == 200 and elapsed < SERVED_WITHIN
    started = time.monotonic()
    closed = [is_closed(sock, timeout=6) for sock in idle]
    assert all(closed)
    assert time.monotonic() - started < 8
    # kept-alive connections too: one request, then silence
    sock = raw_connection(door)
    sock.sendall(b"GET /api/courses HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(sock)[0] == 200
    idle_started = time.monotonic()
    assert is_closed(sock, timeout=6)
    idle_for = time.monotonic() - idle_started
    assert 1.5 < idle_for < 4, idle_for
    print(f"\nidle: 300 connections closed after {time.monotonic() - started:.1f} s; "
          f"kept-alive connection closed after {idle_for:.1f} s idle; "
          f"bystander {elapsed * 1000:.0f} ms")


def test_connections_per_client_are_capped(door):
    held = [raw_connection(door) for _ in range(LIMITS["HTTP_MAX_CONNECTIONS_PER_CLIENT"])]
    time.sleep(0.3)
    over = raw_connection(door)
    status, headers, body = read_response(over)
    assert status == 429 and headers["retry-after"] == "1"
    assert b'"too_many_requests"' in body
    assert Bystander(door).get("/api/courses")[0] == 200  # another address: served
    for sock in held:
        sock.close()
    time.sleep(0.3)
    again = raw_connection(door)
    again.sendall(b"GET /api/courses HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_response(again)[0] == 200


def test_oversize_declared_body_is_refused_without_reading_it(door):
    sock = raw_connection(door)
    sock.sendall(b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 100000000\r\n\r\n")
    status, headers, body = read_response(sock)
    assert status == 413 and b'"payload_too_large"' in body
    assert headers.get("connection") == "close"
