"""HTTP plumbing of the gateway: one table from exception to (status, error code), JSON everywhere.

Every response the gateway sends is JSON, errors included:

    {"error": "<code>", "message": "...", "fields": {...}}

That holds for the errors of a route (``response_from_exception`` below), for werkzeug's own
404/405 (unknown path, wrong method: ``JsonWsgiApp``), for a body over ``MAX_BODY_BYTES`` (413)
and for anything unexpected (500 ``internal_error``, logged here with its traceback, never sent).
"""
import json
import logging

from nameko.exceptions import UnknownService
from nameko.web.handlers import HttpRequestHandler
from nameko.web.server import WebServer, WsgiApp
from werkzeug import exceptions as http_exceptions
from werkzeug.routing import RequestRedirect
from werkzeug.wrappers import Request, Response

from services.kit.errors import (Conflict, Forbidden, NotFound, ServiceError, ServiceUnavailable,
                                 Unauthorized, ValidationError)
from services.kit.rpc import BROKER_ERRORS

log = logging.getLogger(__name__)

MAX_BODY_BYTES_CONFIG_KEY = "MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 64 * 1024


class BadRequest(ServiceError):
    """The request itself is unusable: not JSON, wrong content type, a body that is no object."""
    code = "bad_request"


class TooManyRequests(ServiceError):
    code = "too_many_requests"

    def __init__(self, message, retry_after):
        super().__init__(message)
        self.retry_after = int(retry_after)


# THE table: exception class -> (HTTP status, error code). First match wins (subclasses first).
# A service's message is passed on for the expected errors (it is written for users: "course 7
# does not exist"); for the rest a fixed message is sent (None: use the exception's message).
ERROR_TABLE = (
    (ValidationError, 400, "validation_error", None),
    (BadRequest, 400, "bad_request", None),
    (http_exceptions.BadRequest, 400, "bad_request", "the request could not be understood"),
    (Unauthorized, 401, "unauthorized", None),
    (Forbidden, 403, "forbidden", None),
    (NotFound, 404, "not_found", None),
    (http_exceptions.NotFound, 404, "not_found", "no such resource"),
    (http_exceptions.MethodNotAllowed, 405, "method_not_allowed",
     "method not allowed on this resource"),
    (Conflict, 409, "conflict", None),
    (http_exceptions.RequestEntityTooLarge, 413, "payload_too_large",
     "request body too large"),
    (TooManyRequests, 429, "too_many_requests", None),
    (ServiceUnavailable, 503, "service_unavailable",
     "a service did not answer in time; try again later"),
    # The target service is not running at all (nameko: no queue bound for it).
    (UnknownService, 503, "service_unavailable",
     "a service did not answer in time; try again later"),
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
    if len(data) > getattr(request, "max_body_bytes", DEFAULT_MAX_BODY_BYTES):
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
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(max(1, exc.retry_after))
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    if isinstance(exc, http_exceptions.MethodNotAllowed) and exc.valid_methods:
        headers["Allow"] = ", ".join(exc.valid_methods)
    return json_response(error_body(code, message, fields), status, headers)


class JsonWsgiApp(WsgiApp):
    """nameko's WSGI app, with werkzeug's HTML error pages (404, 405, 413) replaced by JSON, a
    body size limit, and a last guard so that no traceback ever reaches a client."""

    def __init__(self, server, max_body_bytes):
        super().__init__(server)
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ, start_response):
        try:
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                # eventlet's wsgi.input decodes chunks and ends at the last one; tell werkzeug,
                # which otherwise reads a body without Content-Length as empty. The size limit
                # still applies (werkzeug counts what it reads).
                environ["wsgi.input_terminated"] = True
            request = Request(environ, shallow=True)
            # werkzeug stops reading a chunked body at max_content_length without an error:
            # read one byte more, so that read_body() can tell "too large" from "just fits".
            request.max_content_length = self.max_body_bytes + 1
            request.max_body_bytes = self.max_body_bytes
            adapter = self.url_map.bind_to_environ(environ)
            try:
                provider, values = adapter.match()
            except RequestRedirect as redirect:
                return redirect(environ, start_response)
            if (request.content_length or 0) > self.max_body_bytes:
                raise http_exceptions.RequestEntityTooLarge()
            request.path_values = values
            response = provider.handle_request(request)
        except Exception as exc:  # 404/405/413 from werkzeug, or a bug in the plumbing
            response = response_for_exception(exc)
        return response(environ, start_response)


class JsonWebServer(WebServer):
    def get_wsgi_app(self):
        max_body_bytes = int(self.container.config.get(MAX_BODY_BYTES_CONFIG_KEY,
                                                       DEFAULT_MAX_BODY_BYTES))
        return JsonWsgiApp(self, max_body_bytes)


class GatewayHttpEntrypoint(HttpRequestHandler):
    """``@http`` of the gateway: JSON errors from ``ERROR_TABLE``; the expected errors are logged
    by nameko as warnings, not as errors with tracebacks."""
    server = JsonWebServer()

    def __init__(self, method, url, expected_exceptions=None, **kwargs):
        expected = tuple(entry[0] for entry in ERROR_TABLE)
        super().__init__(method, url, expected_exceptions=expected_exceptions or expected,
                         **kwargs)

    def response_from_exception(self, exc):
        return response_for_exception(exc)


http = GatewayHttpEntrypoint.decorator
