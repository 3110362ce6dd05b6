"""The event contract (contracts/): its rules, its evolution, its routing and its AsyncAPI document."""
import importlib
import inspect
import json
import os
import shutil
import subprocess

import pytest

from contracts import CONTRACTS, OWNERS, SUBSCRIPTIONS, ContractViolation, contract_for
from contracts.asyncapi import render, subscribers, topic_matches
from services.kit.envelope import InvalidEvent

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASYNCAPI_FILE = os.path.join(ROOT, "docs", "asyncapi.json")
VALIDATOR = os.path.join(ROOT, "tools", "asyncapi", "validate.mjs")

# Every version ever published, with its fields and their JSON types. A version's fields may
# grow; none may go or change type: that takes a new version (and a new line here).
PUBLISHED = {
    ("user.registered", 1): {"user_id": "integer", "email": "string", "name": "string"},
    ("course.created", 1): {"course_id": "integer", "title": "string",
                            "instructor_id": "integer"},
    ("course.enrolled", 1): {"enrollment_id": "integer", "user_id": "integer",
                             "course_id": "integer", "course_title": "string"},
    ("review.created", 1): {"review_id": "integer", "user_id": "integer", "course_id": "integer",
                            "rating": "integer", "has_comment": "boolean"},
}

ENROLLED = {"enrollment_id": 456, "user_id": 123, "course_id": 789,
            "course_title": "Python Fundamentals"}


def current_fields(contract):
    document = json.loads(render())
    name = next(key for key, message in document["components"]["messages"].items()
                if message["name"] == contract.event_type)
    properties = document["components"]["schemas"][f"{name}Data"]["properties"]
    return {field: schema["type"] for field, schema in properties.items()}


@pytest.mark.parametrize("event_type, version", sorted(PUBLISHED))
def test_no_published_field_is_removed_renamed_or_retyped_within_its_version(event_type,
                                                                              version):
    contract = contract_for(event_type)
    if contract.version != version:
        return  # an older version: its consumers read it by its own line above
    fields = current_fields(contract)
    for field, json_type in PUBLISHED[(event_type, version)].items():
        assert field in fields, (f"{event_type} v{version} lost {field!r}: removing or renaming "
                                 f"a field needs version {version + 1}")
        assert fields[field] == json_type, (f"{event_type} v{version}.{field} changed type: "
                                            f"that needs version {version + 1}")


def test_every_contract_version_is_recorded_as_published():
    assert {(contract.event_type, contract.version) for contract in CONTRACTS.values()} <= set(
        PUBLISHED), "a new version: add its fields to PUBLISHED"


def test_the_producer_check_wants_exactly_the_declared_fields_well_typed():
    contract = contract_for("course.enrolled")
    assert contract.check(ENROLLED) == ENROLLED
    with pytest.raises(ContractViolation, match="enrollment_id"):
        contract.check({key: value for key, value in ENROLLED.items() if key != "enrollment_id"})
    with pytest.raises(ContractViolation, match="course_id"):
        contract.check(dict(ENROLLED, course_id="789"))
    with pytest.raises(ContractViolation, match="surprise"):
        contract.check(dict(ENROLLED, surprise=1))  # a new field goes into the contract first
    with pytest.raises(ContractViolation, match="rating"):
        contract_for("review.created").check({"review_id": 1, "user_id": 2, "course_id": 3,
                                              "rating": 6, "has_comment": False})


def test_a_consumer_reads_liberally_but_never_without_what_it_needs():
    contract = contract_for("course.enrolled")
    seed_like = {"user_id": 123, "course_id": 789, "course_title": "Python", "extra": True}
    assert contract.read(seed_like) == {"enrollment_id": None, "user_id": 123, "course_id": 789,
                                        "course_title": "Python"}
    with pytest.raises(InvalidEvent, match="course_id"):
        contract.read({"user_id": 123, "course_title": "Python"})


def test_personal_data_never_reaches_the_public_view():
    registered = contract_for("user.registered")
    assert registered.personal == {"email", "name"}
    assert registered.public({"user_id": 7, "email": "ada@example.com", "name": "Ada",
                              "unknown": "x"}) == {"user_id": 7}
    assert contract_for("course.enrolled").public(ENROLLED) == ENROLLED


def test_each_event_type_has_one_owning_service():
    assert OWNERS == {"user.registered": "auth", "course.created": "course",
                      "course.enrolled": "course", "review.created": "review"}
    with pytest.raises(KeyError, match="no contract for event type 'course.deleted'"):
        contract_for("course.deleted")


def declared_handlers():
    """{queue: binding keys} of every event handler in the services' own classes."""
    from services.kit.handlers import EventHandler
    found = {}
    for name in sorted(os.listdir(os.path.join(ROOT, "services"))):
        if not os.path.isfile(os.path.join(ROOT, "services", name, "service.py")):
            continue
        module = importlib.import_module(f"services.{name}.service")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not hasattr(cls, "name"):
                continue
            for method_name, method in inspect.getmembers(cls, inspect.isfunction):
                for entrypoint in getattr(method, "nameko_entrypoints", ()):
                    if isinstance(entrypoint, EventHandler):
                        found[f"{cls.name}.{method_name}"] = entrypoint.binding_keys
    return found


def test_every_handler_queue_is_in_the_routing_contract_and_nothing_else_is():
    assert declared_handlers() == SUBSCRIPTIONS


def test_topic_matching_and_subscribers():
    assert topic_matches("#", "course.enrolled") and topic_matches("course.*", "course.enrolled")
    assert not topic_matches("course.*", "review.created")
    assert not topic_matches("*", "course.enrolled")
    assert subscribers("review.created") == ["analytics.record_event", "course.update_rating",
                                             "notification.notify_instructor_of_review"]


def test_the_checked_in_asyncapi_document_is_the_generated_one():
    with open(ASYNCAPI_FILE) as checked_in:
        assert checked_in.read() == render(), (
            "docs/asyncapi.json is stale: python -m contracts.asyncapi > docs/asyncapi.json")


def test_the_asyncapi_document_passes_the_official_parser():
    if shutil.which("node") is None:
        pytest.skip("node is not installed (the parser is @asyncapi/parser, from npm)")
    if not os.path.isdir(os.path.join(ROOT, "tools", "asyncapi", "node_modules", "@asyncapi")):
        pytest.fail("the AsyncAPI parser is not installed: make test installs it "
                    "(npm ci --prefix tools/asyncapi)")
    result = subprocess.run(["node", VALIDATOR, ASYNCAPI_FILE], capture_output=True, text=True,
                            timeout=120)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line.get("severity") in (0, 1)]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr
    assert lines[-1] == {"ok": True, "channels": 4, "operations": 13, "messages": 4}
