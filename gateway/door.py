"""The gateway's door: timeouts and connection limits, before any nameko worker is involved.

nameko's ``WebServer`` runs ``eventlet.wsgi`` with no socket timeout, keeps idle connections
forever, accepts any number of them, and the gateway read request bodies inside a worker: ten
clients trickling a body one byte at a time held all ``max_workers`` and nothing else was served,
``/health`` included. Here, per connection (in the server's own greenthread, not a worker):

- ``HTTP_IDLE_TIMEOUT``: a connection (new, or kept alive between requests) that sends nothing for
  this long is closed;
- ``HTTP_HEADER_TIMEOUT``: once a request's first byte arrived, its request line and headers
  must be complete within this long, else 408 and the connection is closed;
- ``HTTP_BODY_TIMEOUT``: the whole body must arrive within this long (``JsonWsgiApp`` reads it
  into memory, at most ``MAX_BODY_BYTES``, before a worker is spawned), else 408 and close;
- ``HTTP_SOCKET_TIMEOUT``: any single send or receive (a client that does not read its answer);
- ``HTTP_MAX_CONNECTIONS_PER_CLIENT`` open connections per client address (429 beyond), and
  ``HTTP_MAX_CONNECTIONS`` in all (503 beyond), answered at once without reading the request.

The client address is the TCP peer: behind a reverse proxy every client is the proxy, so there
the per-client cap belongs in the proxy (docs/operations.md, "In front of the gateway").
"""
import errno
import json
import logging
import socket
import urllib.parse
from collections import Counter
from functools import partial

import eventlet
from nameko.web.server import HttpOnlyProtocol

from gateway.settings import (
    HTTP_BODY_TIMEOUT, HTTP_HEADER_TIMEOUT, HTTP_IDLE_TIMEOUT, HTTP_MAX_CONNECTIONS,
    HTTP_MAX_CONNECTIONS_PER_CLIENT, HTTP_SOCKET_TIMEOUT,
)

log = logging.getLogger(__name__)

LIMITS = (HTTP_IDLE_TIMEOUT, HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT, HTTP_SOCKET_TIMEOUT,
          HTTP_MAX_CONNECTIONS_PER_CLIENT, HTTP_MAX_CONNECTIONS)
PROTOCOL_ENVIRON_KEY = "gateway.protocol"  # lets the WSGI app close the connection after it
REFUSAL_SEND_TIMEOUT = 2.0
ACCEPT_RETRY_SECONDS = 0.1


class HeaderTimeout(Exception):
    """The request line and headers did not arrive within HTTP_HEADER_TIMEOUT."""


def read_limits(config):
    """{key: value} of the LIMITS, each positive."""
    limits = {}
    for setting in LIMITS:
        value = setting.read(config)
        if value <= 0:
            raise ValueError(f"{setting.key} must be positive, got {value!r}")
        limits[setting.key] = value
    return limits


def raw_json_response(status_line, code, message, extra_headers=()):
    """A complete HTTP/1.1 response with our JSON error body, for answers sent outside WSGI."""
    body = json.dumps({"error": code, "message": message, "fields": {}}).encode()
    head = [f"HTTP/1.1 {status_line}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", "Connection: close", *extra_headers, "", ""]
    return "\r\n".join(head).encode("latin-1") + body


REQUEST_TIMEOUT_RESPONSE = raw_json_response(
    "408 Request Timeout", "request_timeout", "the request did not arrive in time")


class JsonCannedErrors:
    """eventlet answers a request it cannot parse (line or header too long, a bad
    Content-Length) with a bodiless HTTP/1.0 4xx of its own: sent as our JSON error instead."""
    CODES = {414: "uri_too_long"}

    def __init__(self, wfile):
        self._wfile = wfile

    def write(self, data):
        if data[:10] == b"HTTP/1.0 4" and b"Connection: close" in data[:200]:
            status_line = data.split(b"\r\n", 1)[0][9:].decode("latin-1")
            status = int(status_line[:3])
            data = raw_json_response(status_line, self.CODES.get(status, "bad_request"),
                                     status_line[4:].lower() or "bad request")
        return self._wfile.write(data)

    def __getattr__(self, name):
        return getattr(self._wfile, name)


class DoorProtocol(HttpOnlyProtocol):
    """eventlet's protocol with a deadline on each request's line and headers.

    eventlet's own timeouts are per ``recv``: one byte every few seconds keeps a request alive
    forever. The idle wait (for a request's first byte) uses ``keepalive`` (HTTP_IDLE_TIMEOUT);
    from that byte on, the line and headers run under one ``eventlet.Timeout``.
    """
    header_timeout = HTTP_HEADER_TIMEOUT.default

    def setup(self):
        super().setup()
        self.wfile = JsonCannedErrors(self.wfile)

    def handle_one_request(self):
        self._header_timer = None
        try:
            super().handle_one_request()
        except HeaderTimeout:
            self.close_connection = 1
            try:
                self.wfile.write(REQUEST_TIMEOUT_RESPONSE)
                self.wfile.flush()
            except OSError:
                pass
        finally:
            self._cancel_header_timer()

    def _read_request_line(self):
        if self.rfile.closed:
            self.close_connection = 1
            return ""
        self.connection.settimeout(self.server.keepalive)
        try:
            self.rfile.peek(1)  # idle until the first byte (socket.timeout: eventlet closes)
        except OSError:
            self.close_connection = 1
            return ""
        self._header_timer = eventlet.Timeout(self.header_timeout, HeaderTimeout())
        return super()._read_request_line()

    def parse_request(self):
        try:
            return super().parse_request()
        finally:
            self._cancel_header_timer()

    def get_environ(self):
        environ = super().get_environ()
        environ[PROTOCOL_ENVIRON_KEY] = self
        # Python's http.server turns a leading "//" into "/" (an open-redirect fix): route the
        # path as it was sent, so that "//api/courses" is a 404 like "/api//courses"
        target = self.raw_requestline.split(b" ")[1:2]
        if target and target[0].startswith(b"//"):
            raw_path = target[0].split(b"?", 1)[0].decode("latin-1")
            environ["RAW_PATH_INFO"] = raw_path
            environ["PATH_INFO"] = urllib.parse.unquote(raw_path, encoding="latin1")
        return environ

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None


def close_after_response(environ):
    """Close the connection once the current response is sent (the body was not read)."""
    protocol = environ.get(PROTOCOL_ENVIRON_KEY)
    if protocol is not None:
        protocol.close_connection = 1


class ConnectionGate:
    """Counts open connections, in all and per client address; refuses those over a cap."""

    def __init__(self, per_client, total):
        self.per_client = per_client
        self.total = total
        self.open = Counter()
        self.open_total = 0

    def admit(self, address):
        """None if admitted (call ``release`` when it closes), else the refusal to send."""
        host = address[0]
        if self.open_total >= self.total:
            return raw_json_response("503 Service Unavailable", "service_unavailable",
                                     "too many open connections; try again later",
                                     ["Retry-After: 1"])
        if self.open[host] >= self.per_client:
            return raw_json_response(
                "429 Too Many Requests", "too_many_requests",
                f"at most {self.per_client} open connections per client", ["Retry-After: 1"])
        self.open[host] += 1
        self.open_total += 1
        return None

    def release(self, address):
        host = address[0]
        self.open_total -= 1
        self.open[host] -= 1
        if not self.open[host]:
            del self.open[host]


def refuse(sock, response):
    """Send ``response`` and close, without reading what the client sent."""
    try:
        sock.settimeout(REFUSAL_SEND_TIMEOUT)
        sock.sendall(response)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


def prepare_connection(sock, socket_timeout):
    """An accepted connection's settings: HTTP_SOCKET_TIMEOUT per send or receive, and no
    Nagle delay. eventlet writes a response's headers and its body in separate sends; with
    Nagle's algorithm on, the body's last segment waited for the client's delayed ACK of the
    headers: ~40 ms more on every response longer than one segment (bench/NOTES.md)."""
    sock.settimeout(socket_timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DoorMixin:
    """For a nameko ``WebServer``: the limits above (``JsonWebServer`` in gateway/http.py)."""

    def setup(self):
        super().setup()
        self.limits = read_limits(self.container.config)
        self.gate = ConnectionGate(self.limits[HTTP_MAX_CONNECTIONS_PER_CLIENT.key],
                                   self.limits[HTTP_MAX_CONNECTIONS.key])

    def get_wsgi_server(self, sock, wsgi_app, protocol=DoorProtocol, debug=False):
        protocol = type("GatewayProtocol", (protocol,),
                        {"header_timeout": self.limits[HTTP_HEADER_TIMEOUT.key]})
        server = super().get_wsgi_server(sock, wsgi_app, protocol=protocol, debug=debug)
        server.keepalive = self.limits[HTTP_IDLE_TIMEOUT.key]
        server.socket_timeout = self.limits[HTTP_SOCKET_TIMEOUT.key]
        return server

    def run(self):
        # nameko's loop, with the connection gate in front of process_request
        while self._is_accepting:
            try:
                sock, address = self._sock.accept()
            except OSError as exc:  # EMFILE/ENFILE: out of file descriptors (ulimit -n)
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                log.warning("cannot accept connections: %s; retrying", exc)
                eventlet.sleep(ACCEPT_RETRY_SECONDS)  # nameko's loop would end the gateway
                continue
            refusal = self.gate.admit(address)
            if refusal is not None:
                eventlet.spawn_n(refuse, sock, refusal)
                continue
            prepare_connection(sock, self._serv.socket_timeout)
            self.container.spawn_managed_thread(partial(self._serve, sock, address))

    def _serve(self, sock, address):
        try:
            self.process_request(sock, address)
        finally:
            self.gate.release(address)
            sock.close()
