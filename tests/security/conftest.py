"""Hostile clients against the whole suite: fixtures shared by tests/security.

Every test here attacks the gateway from one loopback address (127.0.0.1) and checks, from
another (``bystander``: 127.0.0.2), that ordinary clients are still served within a bound.
"""
import http.client
import json
import socket
import time

import pytest

from tests.e2e.conftest import api, start_suite, suite_config  # noqa: F401 (fixtures)

ATTACKER = "127.0.0.1"
BYSTANDER = "127.0.0.2"


@pytest.fixture
def database_backend():
    """SQLite only, unless a test asks for both (the throttle's state is tested on both)."""
    return "sqlite"


class Bystander:
    """An ordinary client on its own address (``source``): ``get(path)`` -> (status, seconds it
    took); ``request`` -> (status, seconds, body)."""

    def __init__(self, address, timeout=10, source=BYSTANDER):
        self.source = source
        self.host, port = address.split(":")
        self.port = int(port)
        self.timeout = timeout
        self.timings = []

    def request(self, method, path, body=None, headers=None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout,
                                                source_address=(self.source, 0))
        started = time.monotonic()
        try:
            payload = json.dumps(body) if body is not None else None
            all_headers = {"Content-Type": "application/json"} if body is not None else {}
            all_headers.update(headers or {})
            connection.request(method, path, body=payload, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        elapsed = time.monotonic() - started
        self.timings.append(elapsed)
        return response.status, elapsed, data

    def get(self, path):
        status, elapsed, _ = self.request("GET", path)
        return status, elapsed


def raw_connection(address, source=ATTACKER, timeout=30):
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout,
                                    source_address=(source, 0))
    return sock


def read_response(sock):
    """(status, headers, body) of one HTTP response on ``sock`` (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def is_closed(sock, timeout):
    """True if the server closes ``sock`` within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True
