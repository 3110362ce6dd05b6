"""gateway: the HTTP API (docs in gateway/openapi.py, served at /api/openapi.json).

Routes only: parse (gateway/schemas.py), find who acts (the bearer token, gateway/auth.py), call
a service over RPC with a timeout, dump the answer. Errors become JSON in one table
(gateway/http.py).
"""
import functools
import json
import os

import eventlet
from kombu import Connection
from nameko.dependency_providers import Config
from werkzeug.wrappers import Response

from gateway import schemas
from gateway.auth import KnownUsersCache, TokenAuth
from gateway.http import BadRequest, http, json_response, read_body
from gateway.live import LiveFeed, StreamBody, WebSocketStream
from gateway.metrics import HttpMetrics
from contracts.asyncapi import document as asyncapi_document
from gateway.openapi import openapi_document
from gateway.settings import (HEALTH_TIMEOUT, LOGIN_MAX_CONCURRENT, LOGIN_MAX_WAIT,
                              TRUSTED_PROXY_HOPS)
from services.kit import metrics
from services.kit.amqp import connect
from services.kit.errors import Forbidden, NotFound, ServiceUnavailable, Unauthorized
from services.kit.rpc import TimedRpcProxy
from services.kit.schemas import dumper
from services.kit.settings import AMQP_URI

ID = "<id:course_id>"  # ASCII digits, no leading zero, at most schemas.MAX_ID (gateway/http.py)
SERVICES = ("auth", "course", "review", "notification", "analytics")


def _json_body(request):
    """The request's JSON object, or BadRequest."""
    if request.mimetype != "application/json":
        raise BadRequest("expected a JSON body with Content-Type: application/json")
    raw = read_body(request)  # RequestEntityTooLarge over MAX_BODY_BYTES
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    schemas.check_unicode(body)  # 400 naming the field of a lone surrogate
    return body


def _load_body(request, schema_cls):
    return schema_cls.shared().load_or_raise(_json_body(request))


STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DASHBOARD_ASSETS = {  # name -> content type; the page loads nothing from anywhere else
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                 "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@functools.lru_cache(maxsize=None)
def _asset(name):
    """A dashboard file's bytes, read once per process."""
    with open(os.path.join(STATIC_DIR, name), "rb") as asset:
        return asset.read()


def _static(name):
    return Response(_asset(name), status=200, content_type=DASHBOARD_ASSETS[name],
                    headers={"Cache-Control": "no-cache", "Content-Security-Policy":
                             DASHBOARD_CSP, "X-Content-Type-Options": "nosniff"})


def _page_args(request):
    return schemas.PageQuery.shared().load_or_raise(request.args.to_dict(flat=True),
                                                    message="invalid query parameters")


def _cursor(args):
    """``after`` for a list RPC, only when the request gave one: a service instance not yet
    upgraded (a rolling deploy) still answers numbered pages."""
    return {"after": args["after"]} if "after" in args else {}


class GatewayService:
    name = "gateway"

    auth = TimedRpcProxy("auth")
    course = TimedRpcProxy("course")
    review = TimedRpcProxy("review")
    notification = TimedRpcProxy("notification")
    analytics = TimedRpcProxy("analytics")

    tokens = TokenAuth()
    known_users = KnownUsersCache()  # a token's user must exist (gateway/auth.py)
    config = Config()
    http_metrics = HttpMetrics()  # requests by route and status, latency; access log
    live = LiveFeed()  # every event, as it happens, for /api/events/stream and /api/events/ws

    # -- accounts --------------------------------------------------------------------------

    @http("POST", "/api/auth/register")
    def register(self, request):
        args = _load_body(request, schemas.RegisterRequest)
        user = self.auth.register(args["email"], args["password"], args["name"], args["role"])
        return json_response(dumper(schemas.UserSchema).dump(user), 201)

    # at most LOGIN_MAX_CONCURRENT logins hold a worker at once (each waits on auth's argon2);
    # more wait their turn outside the worker pool, so a burst leaves workers for other routes,
    # and those that would wait over LOGIN_MAX_WAIT are told to come back at once (503)
    @http("POST", "/api/auth/login", max_concurrent=LOGIN_MAX_CONCURRENT, max_wait=LOGIN_MAX_WAIT)
    def login(self, request):
        args = _load_body(request, schemas.LoginRequest)
        # throttled by auth, by this client address and by account (services/auth/throttle.py)
        user = self.auth.authenticate(args["email"], args["password"], self._client(request))
        # a bearer token must not be kept by a browser's or a proxy's cache (RFC 6749, 5.1)
        return json_response(dumper(schemas.TokenSchema).dump(self.tokens.issue(user)),
                             headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @http("GET", "/api/users/me")
    def me(self, request):
        principal = self.tokens.principal(request)
        try:
            user = self.auth.get_user(principal.user_id)
        except NotFound:
            raise Unauthorized("the token's user no longer exists") from None
        return json_response(dumper(schemas.UserSchema).dump(user))

    @http("GET", "/api/users/me/notifications")
    def my_notifications(self, request):
        principal = self._principal(request)
        page = _page_args(request)
        result = self.notification.list_notifications(principal.user_id, page["page"],
                                                      page["per_page"], **_cursor(page))
        return json_response(dumper(schemas.NotificationPageSchema).dump(result))

    # -- courses ---------------------------------------------------------------------------

    @http("POST", "/api/courses")
    def create_course(self, request):
        principal = self._principal(request)  # course decides who may (only instructors)
        args = _load_body(request, schemas.CourseCreateRequest)
        course = self.course.create_course(principal.user_id, args["title"],
                                           args["description"])
        return json_response(dumper(schemas.CourseSchema).dump(course), 201)

    @http("GET", "/api/courses")
    def list_courses(self, request):
        page = _page_args(request)
        result = self.course.list_courses(page["page"], page["per_page"], **_cursor(page))
        return json_response(dumper(schemas.CoursePageSchema).dump(result))

    @http("GET", f"/api/courses/{ID}")
    def get_course(self, request, course_id):
        course = self.course.get_course(course_id)
        return json_response(dumper(schemas.CourseSchema).dump(course))

    @http("POST", f"/api/courses/{ID}/enroll")
    def enroll(self, request, course_id):
        principal = self._principal(request)
        enrollment = self.course.enroll(principal.user_id, course_id)
        return json_response(dumper(schemas.EnrollmentSchema).dump(enrollment), 201)

    @http("POST", f"/api/courses/{ID}/reviews")
    def create_review(self, request, course_id):
        principal = self._principal(request)
        args = _load_body(request, schemas.ReviewCreateRequest)
        review = self.review.create_review(principal.user_id, course_id, args["rating"],
                                           args["comment"])
        return json_response(dumper(schemas.ReviewSchema).dump(review), 201)

    @http("GET", f"/api/courses/{ID}/reviews")
    def list_reviews(self, request, course_id):
        page = _page_args(request)
        result = self.review.list_reviews(course_id, page["page"], page["per_page"],
                                          **_cursor(page))
        if not result["total"]:
            self.course.get_course(course_id)  # NotFound (404) when there is no such course
        return json_response(dumper(schemas.ReviewPageSchema).dump(result))

    # -- analytics and the live dashboard -----------------------------------------------------

    @http("GET", "/api/events")
    def list_events(self, request):
        """The event log (admins): filter by type, time, user, course; newest first."""
        principal = self._principal(request)
        if not principal.is_admin:
            raise Forbidden("only admins can read the event log")
        args = schemas.EventQuery.shared().load_or_raise(request.args.to_dict(flat=True),
                                                         message="invalid query parameters")
        result = self.analytics.list_events(
            event_type=args.get("type"),
            since=args["since"].isoformat() if "since" in args else None,
            until=args["until"].isoformat() if "until" in args else None,
            user_id=args.get("user_id"), course_id=args.get("course_id"),
            page=args["page"], per_page=args["per_page"], **_cursor(args))
        return json_response(dumper(schemas.EventPageSchema).dump(result))

    @http("GET", "/api/analytics/summary")
    def analytics_summary(self, request):
        summary = self.analytics.summary()
        return json_response(dumper(schemas.AnalyticsSummarySchema).dump(summary))

    @http("GET", "/api/events/stream")
    def event_stream(self, request):
        """Server-sent events: each event as this gateway sees it (gateway/live.py)."""
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        content_type = "text/event-stream; charset=utf-8"
        if request.method == "HEAD":  # the headers a GET would get; no stream, no slot
            return Response(status=200, content_type=content_type, headers=headers)
        subscription = self.live.subscribe()  # 503 beyond LIVE_MAX_STREAMS
        # eventlet's WSGI server buffers a streamed body until 4 KiB by default: send each
        # event as soon as it is yielded
        request.environ["eventlet.minimum_write_chunk_size"] = 0
        return Response(StreamBody(self.live, subscription, environ=request.environ),
                        status=200, content_type=content_type, headers=headers)

    @http("GET", "/api/events/ws", websocket=True)  # a plain GET: 400
    def event_websocket(self, request):
        """The same feed over WebSocket (gateway/live.py); the same LIVE_MAX_STREAMS."""
        return WebSocketStream(self.live, self.live.subscribe())  # 503 beyond LIVE_MAX_STREAMS

    @http("GET", "/dashboard")
    def dashboard(self, request):
        return _static("dashboard.html")

    @http("GET", "/dashboard/<any(dashboard.js, dashboard.css):asset>")
    def dashboard_asset(self, request, asset):
        return _static(asset)

    # -- operations ------------------------------------------------------------------------

    @http("GET", "/api/openapi.json")
    def openapi(self, request):
        return json_response(openapi_document())

    @http("GET", "/api/asyncapi.json")
    def asyncapi(self, request):
        return json_response(asyncapi_document())

    @http("GET", "/metrics")
    def prometheus_metrics(self, request):
        """Prometheus metrics of this process (under make run: every service's)."""
        body, content_type = metrics.latest()
        return Response(body, status=200, content_type=content_type)

    @http("GET", "/health/live")
    def health_live(self, request):
        """Liveness (container healthchecks, Kubernetes' livenessProbe): this process serves
        HTTP. Asks nothing else, so a broker outage does not get every gateway restarted."""
        return json_response({"status": "ok"})

    @http("GET", "/health")
    def health(self, request):
        timeout = HEALTH_TIMEOUT.read(self.config)
        checks = {"broker": self._broker_state(timeout)}
        replies = {}
        for name in SERVICES:
            try:
                with eventlet.Timeout(timeout):
                    replies[name] = getattr(self, name).health.call_async()
            except (Exception, eventlet.Timeout):
                replies[name] = None
        deadline = eventlet.hubs.get_hub().clock() + timeout
        for name, reply in replies.items():
            state = {"service": "unavailable", "database": "unknown"}
            if reply is not None:
                remaining = max(0.05, deadline - eventlet.hubs.get_hub().clock())
                try:
                    with eventlet.Timeout(remaining):
                        answer = reply.result()
                    state = {"service": "ok",
                             "database": "ok" if answer.get("database") == "ok"
                             else "unavailable"}
                except ServiceUnavailable:
                    # From the service itself: it answered, its database did not.
                    state = {"service": "ok", "database": "unavailable"}
                except (Exception, eventlet.Timeout):
                    pass
            checks[name] = state["service"]
            checks[f"{name}.database"] = state["database"]
        unavailable = sorted(key for key, value in checks.items() if value != "ok")
        body = {"status": "unavailable" if unavailable else "ok", "checks": checks,
                "unavailable": unavailable}
        return json_response(dumper(schemas.HealthSchema).dump(body), 503 if unavailable else 200)

    def _client(self, request):
        """The client's address: the TCP peer, or behind TRUSTED_PROXY_HOPS reverse proxies
        the address the outermost of them saw (X-Forwarded-For, counted from the right)."""
        hops = TRUSTED_PROXY_HOPS.read(self.config)
        if hops > 0:
            forwarded = [part.strip() for part in
                         request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
            if len(forwarded) >= hops:
                return forwarded[-hops][:100]
        return request.remote_addr

    def _principal(self, request):
        """Who ``request`` acts for: a valid token whose user exists (else 401)."""
        return self.known_users.check(self.tokens.principal(request), self.auth.get_user)

    def _broker_state(self, timeout):
        try:
            with eventlet.Timeout(timeout):
                with Connection(AMQP_URI.read(self.config), connect_timeout=timeout) as connection:
                    connect(connection)  # each node of RABBITMQ_HOSTS once
            return "ok"
        except (Exception, eventlet.Timeout):
            return "unavailable"
