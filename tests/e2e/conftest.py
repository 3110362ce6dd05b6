"""The whole suite for real (broker vhost, each service's migrated database), driven over HTTP."""
import pytest
import requests
from nameko.testing.utils import find_free_port

from gateway.service import GatewayService
from services.analytics.service import AnalyticsService
from services.auth.service import AuthService
from services.course.service import CourseService
from services.notification.service import NotificationService
from services.review.service import ReviewService
from tests.support.broker import wait_until

# argon2id at its cheapest, for tests only (production uses argon2-cffi's defaults)
CHEAP_HASHING = dict(PASSWORD_HASH_TIME_COST=1, PASSWORD_HASH_MEMORY_COST=1024,
                     PASSWORD_HASH_PARALLELISM=1)
JWT_SECRET = "e2e-test-secret-0123456789-0123456789-abcdef"
SERVICE_CLASSES = (AuthService, CourseService, ReviewService, NotificationService, AnalyticsService,
                   GatewayService)


class Api:
    """``requests`` against the running gateway, with an optional bearer token."""

    def __init__(self, base_url):
        self.base_url = base_url

    def request(self, method, path, token=None, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 60)
        return requests.request(method, self.base_url + path, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def register(self, email, password, name, role=None):
        body = {"email": email, "password": password, "name": name}
        if role:
            body["role"] = role
        return self.post("/api/auth/register", json=body)

    def login(self, email, password):
        response = self.post("/api/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return response.json()["access_token"]


@pytest.fixture
def suite_config(services_config):
    def make(**overrides):
        settings = dict(CHEAP_HASHING, WEB_SERVER_ADDRESS=f"127.0.0.1:{find_free_port()}",
                        JWT_SECRET=JWT_SECRET, MAIL_BACKEND="log", MAIL_RETRY_INTERVAL=0.3,
                        HEALTH_TIMEOUT=5)
        settings.update(overrides)
        return services_config("auth", "course", "review", "notification", "analytics",
                               **settings)
    return make


@pytest.fixture
def start_suite(runner_factory, suite_config):
    """``start_suite(*service_classes, **config)``: runs them; returns an ``Api``."""

    def start(*service_classes, **overrides):
        config = suite_config(**overrides)
        runner = runner_factory(config, *(service_classes or SERVICE_CLASSES))
        runner.start()
        api = Api("http://" + config["WEB_SERVER_ADDRESS"])
        if not service_classes:
            wait_until(lambda: api.get("/health").status_code == 200, timeout=60,
                       message="the suite answering /health")
        return api

    return start


@pytest.fixture
def api(start_suite):
    return start_suite()
