"""The gateway's HTTP metrics, in prometheus_client's default registry beside the kit's event
metrics (services/kit/metrics.py; ``GET /metrics`` serves both):

    knowledge_nest_http_requests_total{method, route, status}
    knowledge_nest_http_request_duration_seconds{method, route}   a histogram

``route`` is the URL rule (``/api/courses/<int:course_id>``), never the raw path.
"""
import logging
import time
import weakref

from nameko.extensions import DependencyProvider
from prometheus_client import Counter, Histogram

from gateway.http import ERROR_TABLE

access_log = logging.getLogger("gateway.access")

HTTP_REQUESTS = Counter(
    "knowledge_nest_http_requests_total", "HTTP requests answered by the gateway",
    ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "knowledge_nest_http_request_duration_seconds", "Time to answer an HTTP request",
    ["method", "route"])


class HttpMetrics(DependencyProvider):
    """Counts and times each request a gateway route answered, by route and status, and logs it
    (logger ``gateway.access``) with the request's call id."""

    def setup(self):
        self._started = weakref.WeakKeyDictionary()

    def worker_setup(self, worker_ctx):
        self._started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        status = getattr(result, "status_code", None)
        if status is None:
            status = 500
            if exc_info is not None:  # the status the gateway answers with
                status = next((row[1] for row in ERROR_TABLE if isinstance(exc_info[1], row[0])),
                              500)
        entrypoint = worker_ctx.entrypoint
        route = getattr(entrypoint, "url", entrypoint.method_name)
        method = getattr(entrypoint, "method", "")
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        started = self._started.pop(worker_ctx, None)
        if started is not None:
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
        request = worker_ctx.args[0] if worker_ctx.args else None
        access_log.info("%s %s -> %s", method, getattr(request, "full_path", route).rstrip("?"),
                        status)
