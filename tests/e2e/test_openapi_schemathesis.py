"""schemathesis against the running suite, from the gateway's own /api/openapi.json.

For every operation: up to MAX_EXAMPLES valid and as many invalid requests (hypothesis,
no example database, no deadline), sent with a real instructor's token. It must find no 5xx,
no undocumented status, content type or header, and no body that violates the schema; invalid
requests must be refused with a 4xx.
"""
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               negative_data_rejection,
                                               response_headers_conformance,
                                               response_schema_conformance,
                                               status_code_conformance)

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30
PASSWORD = "correct horse battery staple"
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]


def exercise(operation, mode, checks, base_url):
    """Up to MAX_EXAMPLES requests of ``mode`` to ``operation``; raises on the first failure.
    Returns the statuses seen."""
    statuses = set()

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call_and_validate(base_url=base_url, checks=checks, timeout=60)
        statuses.add(response.status_code)

    check()
    return statuses


@pytest.mark.parametrize("database_backend", ["sqlite"])  # the HTTP layer; once is enough
def test_the_api_conforms_to_its_openapi_document(start_suite, database_backend):
    api = start_suite(LOGIN_FREE_FAILURES_PER_ADDRESS=10_000,
                      LOGIN_FREE_FAILURES_PER_ACCOUNT=10_000)
    assert api.register("grace@example.com", PASSWORD, "Grace", role="instructor"
                        ).status_code == 201
    token = api.login("grace@example.com", PASSWORD)
    course = api.post("/api/courses", token=token,
                      json={"title": "Python", "description": "Basics"})
    assert course.status_code == 201
    config = SchemathesisConfig.from_dict({
        # the bearer token for the document's bearerAuth scheme, known to schemathesis as auth
        # (so that a request it made invalid stays invalid)
        "auth": {"openapi": {"bearerAuth": {"bearer": token}}},
        # 413 (the body limit) and 429 are refusals too
        "checks": {"negative_data_rejection": {"expected-statuses": [
            400, 401, 403, 404, 405, 409, 413, 429]}},
    })
    schema = schemathesis.openapi.from_url(api.base_url + "/api/openapi.json", config=config)
    failures, operations, seen = [], [], {}
    for result in schema.get_all_operations():
        operation = result.ok()
        operations.append(operation.label)
        for mode, checks in ((GenerationMode.POSITIVE, CONFORMANCE),
                             (GenerationMode.NEGATIVE, CONFORMANCE + [negative_data_rejection])):

            try:
                seen[operation.label, mode] = exercise(operation, mode, checks, api.base_url)
            except Unsatisfiable:
                # nothing to make invalid (GET /health has no parameters): no negative cases
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # collect them all, then report
                failures.append(f"{operation.label} ({mode.value}): {exc}")

    # every route (schemathesis leaves out the document's own URL, /api/openapi.json)
    assert len(operations) >= 11, " / ".join(operations)
    assert not failures, "\n\n".join(failures)
    # the token was sent: signed-in routes answered, not just 401
    assert 200 in seen["GET /api/users/me", GenerationMode.POSITIVE]
    assert 201 in seen["POST /api/courses", GenerationMode.POSITIVE]


@pytest.mark.parametrize("database_backend", ["sqlite"])
def test_the_event_log_conforms_for_an_admin(runner_factory, suite_config, database_backend,
                                             tmp_path):
    """GET /api/events answers an instructor with 403 before reading its query: the run above
    never reaches the analytics service. Here an admin's token (knowledge-nest create-admin)
    sends every generated filter through to it."""
    from tests.e2e.conftest import SERVICE_CLASSES, Api
    from tests.e2e.test_dashboard import create_admin
    from tests.support.broker import wait_until

    config = suite_config()
    runner_factory(config, *SERVICE_CLASSES).start()
    api = Api("http://" + config["WEB_SERVER_ADDRESS"])
    wait_until(lambda: api.get("/health").status_code == 200, timeout=60,
               message="the suite answering /health")
    create_admin(config, tmp_path)
    token = api.login("admin@example.com", PASSWORD)
    schema = schemathesis.openapi.from_url(
        api.base_url + "/api/openapi.json", config=SchemathesisConfig.from_dict({
            "auth": {"openapi": {"bearerAuth": {"bearer": token}}}}))
    operation = next(result.ok() for result in schema.get_all_operations()
                     if result.ok().label == "GET /api/events")
    positive = exercise(operation, GenerationMode.POSITIVE, CONFORMANCE, api.base_url)
    exercise(operation, GenerationMode.NEGATIVE, CONFORMANCE + [negative_data_rejection],
             api.base_url)
    assert 200 in positive, positive  # the filters reached analytics and came back
