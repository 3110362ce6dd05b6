"""HTTP plumbing of the gateway: one table from exception to (status, error code), JSON everywhere.

Every response the gateway sends is JSON, errors included:

    {"error": "<code>", "message": "...", "fields": {...}}

That holds for the errors of a route (``response_from_exception`` below), for werkzeug's own
404/405 (unknown path, wrong method: ``JsonWsgiApp``), for a body over ``MAX_BODY_BYTES`` (413)
or too slow (408), for eventlet's own answers to unreadable requests and the connection caps
(gateway/door.py), and for anything unexpected (500 ``internal_error``, logged here with its
traceback, never sent).
"""
import io
import json
import logging

import eventlet
from nameko.exceptions import (
    ConfigurationError, IncorrectSignature, MethodNotFound, UnknownService,
)
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug import exceptions as http_exceptions
from werkzeug.routing import Map, RequestRedirect, Rule, WebsocketMismatch
from werkzeug.routing.converters import BaseConverter
from werkzeug.wrappers import Request, Response

from gateway.door import DoorMixin, close_after_response
from gateway.settings import HTTP_BODY_TIMEOUT, MAX_BODY_BYTES
from services.kit.errors import (Busy, Conflict, Forbidden, NotFound, ServiceError,
                                 ServiceUnavailable, TooManyRequests, Unauthorized,
                                 ValidationError)
from services.kit.rpc import BROKER_ERRORS
from services.kit.settings import RPC_TIMEOUT
from services.kit.turns import Turns, TurnTimeout

log = logging.getLogger(__name__)


class BadRequest(ServiceError):
    """The request itself is unusable: not JSON, wrong content type, a body that is no object."""
    code = "bad_request"


class BodyTimeout(Exception):
    """The request body did not arrive within HTTP_BODY_TIMEOUT (gateway/door.py)."""


class TooManyStreams(ServiceUnavailable):
    """This gateway serves LIVE_MAX_STREAMS live streams already (SSE and WebSocket together)."""
    code = "too_many_streams"

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = int(retry_after)


# THE table: exception class -> (HTTP status, error code). First match wins (subclasses first).
# A service's message is passed on for the expected errors (it is written for users: "course 7
# does not exist"); for the rest a fixed message is sent (None: use the exception's message).
ERROR_TABLE = (
    (ValidationError, 400, "validation_error", None),
    (BadRequest, 400, "bad_request", None),
    (WebsocketMismatch, 400, "bad_request",
     "this route takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"),
    (http_exceptions.BadRequest, 400, "bad_request", "the request could not be understood"),
    (Unauthorized, 401, "unauthorized", None),
    (Forbidden, 403, "forbidden", None),
    (NotFound, 404, "not_found", None),
    (http_exceptions.NotFound, 404, "not_found", "no such resource"),
    (http_exceptions.MethodNotAllowed, 405, "method_not_allowed",
     "method not allowed on this resource"),
    (Conflict, 409, "conflict", None),
    (BodyTimeout, 408, "request_timeout", "the request body did not arrive in time"),
    (http_exceptions.RequestEntityTooLarge, 413, "payload_too_large",
     "request body too large"),
    (TooManyRequests, 429, "too_many_requests", None),
    (Busy, 503, "service_unavailable", None),  # refused at once: its message says why
    (TooManyStreams, 503, "too_many_streams", None),
    (ServiceUnavailable, 503, "service_unavailable",
     "a service did not answer in time; try again later"),
    # The target service is not running at all (nameko: no queue bound for it).
    (UnknownService, 503, "service_unavailable",
     "a service did not answer in time; try again later"),
    # A service instance of another version than the gateway's (a rolling deploy half way):
    # it does not know the method or one of its arguments. Another instance may.
    ((IncorrectSignature, MethodNotFound), 503, "service_unavailable",
     "a service is being upgraded and could not take this request; try again later"),
    # The broker failed under the request (refused, reset, channel closed, nack): a node
    # restarting or failing over. TimedRpcProxy turns these into ServiceUnavailable; this row
    # catches them anywhere else.
    (BROKER_ERRORS, 503, "service_unavailable",
     "the message broker is unavailable; try again later"),
)

# Seconds a client is told to wait after a 503: a broker node fails over in about a second,
# a restarting one takes several.
RETRY_AFTER_SECONDS = 2

INTERNAL_ERROR = (500, "internal_error", "internal error")


def read_body(request):
    """The request's body, or RequestEntityTooLarge (413) when it is over MAX_BODY_BYTES."""
    data = request.get_data(cache=False)
    if len(data) > getattr(request, "max_body_bytes", MAX_BODY_BYTES.default):
        raise http_exceptions.RequestEntityTooLarge()
    return data


def json_response(payload, status=200, headers=None):
    return Response(json.dumps(payload), status=status, headers=headers,
                    content_type="application/json")


def error_body(code, message, fields=None):
    return {"error": code, "message": message, "fields": fields or {}}


def response_for_exception(exc):
    """The JSON response for ``exc``: from the table, else a 500 that tells nothing."""
    for exc_type, status, code, fixed_message in ERROR_TABLE:
        if isinstance(exc, exc_type):
            break
    else:
        log.error("unexpected error answering a request: %r", exc, exc_info=exc)
        status, code, message = INTERNAL_ERROR
        return json_response(error_body(code, message), status)

    if fixed_message is not None:
        message, fields = fixed_message, {}
    else:
        message = getattr(exc, "message", "") or code.replace("_", " ")
        fields = getattr(exc, "fields", None) or {}
    headers = {}
    if getattr(exc, "retry_after", None) is not None:  # the refusal knows when to come back
        headers["Retry-After"] = str(max(1, int(exc.retry_after)))
    elif status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(exc, http_exceptions.MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    return json_response(error_body(code, message, fields), status, headers)


class JsonWsgiApp(WsgiApp):
    """nameko's WSGI app, with werkzeug's HTML error pages (404, 405, 413) replaced by JSON, a
    body size limit, and a last guard so that no traceback ever reaches a client."""

    def __init__(self, server, max_body_bytes, body_timeout):
        super().__init__(server)
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    def __call__(self, environ, start_response):
        try:
            self._buffer_body(environ)
            request = Request(environ, shallow=True)
            request.max_body_bytes = self.max_body_bytes
            if environ.get("PATH_INFO", "").startswith("//"):  # werkzeug would match "/..."
                raise http_exceptions.NotFound()
            adapter = self.url_map.bind_to_environ(environ)
            try:
                provider, values = adapter.match()
            except RequestRedirect:
                # werkzeug would answer "//x" or "/x/" with a redirect built from the Host
                # header; no route of ours has such a form
                raise http_exceptions.NotFound() from None
            request.path_values = values
            response = provider.handle_request(request)
        except Exception as exc:  # 404/405/413 from werkzeug, or a bug in the plumbing
            response = response_for_exception(exc)
        return response(environ, start_response)

    def _buffer_body(self, environ):
        """Read the whole body here, in the connection's greenthread and within
        HTTP_BODY_TIMEOUT, so that a worker never waits on a client (gateway/door.py); at most
        ``max_body_bytes`` (413 beyond). The worker then reads it from memory."""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        try:
            declared = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0  # eventlet has answered 400 before we get here
        if not chunked and declared <= 0:
            return
        if declared > self.max_body_bytes:
            close_after_response(environ)  # the body stays unread
            raise http_exceptions.RequestEntityTooLarge()
        wanted = self.max_body_bytes + 1  # one byte more tells "too large" from "just fits"
        try:
            with eventlet.Timeout(self.body_timeout, BodyTimeout()):
                data = environ["wsgi.input"].read(declared if not chunked else wanted)
                if chunked and len(data) < wanted:
                    data += environ["wsgi.input"].read(wanted - len(data))
        except (BodyTimeout, OSError) as exc:  # OSError: HTTP_SOCKET_TIMEOUT, or reset
            close_after_response(environ)
            raise BodyTimeout() from exc
        except ValueError:  # eventlet's ChunkReadError: broken chunked encoding
            close_after_response(environ)
            raise http_exceptions.BadRequest() from None
        if len(data) > self.max_body_bytes:
            close_after_response(environ)
            raise http_exceptions.RequestEntityTooLarge()
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
        environ.pop("HTTP_TRANSFER_ENCODING", None)


class IdConverter(BaseConverter):
    """``<id:name>``: a database id written the one way we write it, ASCII digits without
    leading zeros, 1 to 2**31 - 1 ("0001", "\u0661" or "\u00b2" do not match: 404)."""
    # 1 to 2147483647 exactly (a converter that refuses in to_python makes werkzeug answer
    # 405 instead of 404)
    regex = (r"(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}"
             r"|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}"
             r"|21474836[0-3][0-9]|214748364[0-7])")
    weight = 50
    part_isolating = True

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(int(value))


class JsonWebServer(DoorMixin, WebServer):
    """nameko's web server behind the door (gateway/door.py), serving ``JsonWsgiApp``."""

    def make_url_map(self):
        # merge_slashes off: werkzeug would redirect "//x" to "/x" (JsonWsgiApp: 404 instead)
        url_map = Map(converters={"id": IdConverter}, merge_slashes=False)
        for provider in self._providers:
            rule = provider.get_url_rule()
            rule.endpoint = provider
            url_map.add(rule)
        return url_map

    def get_wsgi_app(self):
        max_body_bytes = MAX_BODY_BYTES.read(self.container.config)
        return JsonWsgiApp(self, max_body_bytes, self.limits[HTTP_BODY_TIMEOUT.key])


class GatewayHttpEntrypoint(HttpRequestHandler):
    """``@http`` of the gateway: JSON errors from ``ERROR_TABLE``; the expected errors are logged
    by nameko as warnings, not as errors with tracebacks."""
    server = JsonWebServer()

    def __init__(self, method, url, expected_exceptions=None, websocket=False, max_concurrent=None,
                 max_wait=None, **kwargs):
        """``websocket``: werkzeug routes upgrade requests only to such rules.
        ``max_concurrent`` and ``max_wait`` (Settings): at most that many requests of this route
        in workers at once (services/kit/turns.py); the others wait (in their connection's
        greenthread, holding no worker) for a turn. One that would wait longer than max_wait
        seconds (estimated from the route's recent requests) is answered 503 with Retry-After at
        once; one whose turn has not come within RPC_TIMEOUT gets a 429 with Retry-After."""
        expected = tuple(entry[0] for entry in ERROR_TABLE)
        super().__init__(method, url, expected_exceptions=expected_exceptions or expected,
                         **kwargs)
        self.websocket = websocket
        self.max_concurrent, self.max_wait = max_concurrent, max_wait
        self.turns = None

    def get_url_rule(self):
        return Rule(self.url, methods=self.method.split(","), websocket=self.websocket)

    def setup(self):
        super().setup()
        if self.max_concurrent is not None:
            limit = self.max_concurrent.read(self.container.config)
            if limit < 1:
                raise ConfigurationError(f"{self.max_concurrent.key} must be at least 1")
            self.turns = Turns(limit, self.max_wait.read(self.container.config),
                               busy_message="too many requests of this kind at once; try again "
                                            "in a moment")
            self.turn_timeout = RPC_TIMEOUT.read(self.container.config)

    def handle_request(self, request):
        if self.turns is None:
            return super().handle_request(request)
        try:
            with self.turns.turn(timeout=self.turn_timeout):  # Busy (503) at once
                return super().handle_request(request)
        except TurnTimeout:
            raise TooManyRequests("too many requests of this kind in progress; try again",
                                  retry_after=1) from None

    def response_from_exception(self, exc):
        return response_for_exception(exc)


http = GatewayHttpEntrypoint.decorator
