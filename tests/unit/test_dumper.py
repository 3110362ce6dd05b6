"""services.kit.schemas.Dumper gives what marshmallow's dump gives, for every schema we dump
(the gateway's response schemas, the services' outputs), on generated answers: well-formed,
with missing and extra keys, None, wrong types, objects instead of dicts."""
import datetime as dt
import inspect
import types

import marshmallow
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import schemas as gateway_schemas
from services.analytics import schemas as analytics_schemas
from services.auth import schemas as auth_schemas
from services.course import schemas as course_schemas
from services.kit.schemas import Dumper, StrictSchema, dumper
from services.notification import schemas as notification_schemas
from services.review import schemas as review_schemas

MODULES = (gateway_schemas, analytics_schemas, auth_schemas, course_schemas,
           notification_schemas, review_schemas)


def output_schemas():
    """Every schema class of those modules that something dumps (not the request/args ones)."""
    found = []
    for module in MODULES:
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and issubclass(cls, marshmallow.Schema)
                    and cls not in (marshmallow.Schema, StrictSchema) and cls not in found
                    and not name.endswith(("Args", "Request", "Query"))):
                found.append(cls)
    return found


SCHEMAS = output_schemas()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
    st.text(max_size=5), st.datetimes(timezones=st.one_of(st.none(), st.just(dt.timezone.utc))),
    st.just("12"), st.just("4.5"))


def values_for(field):
    """Mostly what the field expects, sometimes anything."""
    if isinstance(field, marshmallow.fields.List) and isinstance(field.inner,
                                                                 marshmallow.fields.Nested):
        return st.one_of(st.none(), st.lists(st.one_of(st.none(), answers(field.inner.schema)),
                                             max_size=3))
    if isinstance(field, marshmallow.fields.Nested):
        return st.one_of(st.none(), answers(field.schema))
    if isinstance(field, marshmallow.fields.Dict):
        return st.one_of(st.none(), st.dictionaries(st.text(max_size=3),
                                                    st.integers(0, 9) | st.text(max_size=2),
                                                    max_size=3))
    if isinstance(field, marshmallow.fields.Integer):
        return st.one_of(st.integers(-2**40, 2**40), st.none(), st.booleans(), st.just(3.7))
    if isinstance(field, marshmallow.fields.Float):
        return st.one_of(st.floats(allow_nan=False), st.integers(0, 10), st.none())
    if isinstance(field, marshmallow.fields.DateTime):
        return st.one_of(st.none(), st.datetimes(
            timezones=st.one_of(st.none(), st.just(dt.timezone.utc))))
    if isinstance(field, marshmallow.fields.String):
        return st.one_of(st.text(max_size=8), st.none(), st.integers(0, 9))
    return scalars


def answers(schema):
    """A dict of (some of) the schema's keys, maybe extra ones, maybe as an object."""
    keys = {(f.attribute or name): values_for(f) for name, f in schema.dump_fields.items()}
    dicts = st.fixed_dictionaries({}, optional=keys).flatmap(
        lambda d: st.dictionaries(st.sampled_from(["extra", "x"]), scalars, max_size=1).map(
            lambda extra: {**extra, **d}))
    return st.one_of(dicts, dicts.map(lambda d: types.SimpleNamespace(**d)))


def test_there_are_schemas_to_check():
    names = {cls.__name__ for cls in SCHEMAS}
    assert {"CoursePageSchema", "EventPageSchema", "AnalyticsSummarySchema", "ErrorSchema",
            "EventLogSchema"} <= names


def test_every_schema_takes_the_fast_path():
    """None of them falls back to plain schema.dump: the speed-up applies to all."""
    assert [cls.__name__ for cls in SCHEMAS if Dumper(cls()).plain] == []


@pytest.mark.parametrize("schema_cls", SCHEMAS, ids=lambda cls: f"{cls.__module__}.{cls.__name__}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_as_marshmallow(schema_cls, data):
    schema = schema_cls()
    obj = data.draw(answers(schema))
    try:
        expected = schema.dump(obj)
    except Exception as exc:  # noqa: BLE001 (then the Dumper fails the same way)
        with pytest.raises(type(exc)):
            dumper(schema_cls).dump(obj)
        return
    got = dumper(schema_cls).dump(obj)
    assert got == expected
    assert repr(got) == repr(expected)  # same types (1 vs 1.0 vs True) and key order


def test_many_and_a_schema_with_hooks():
    class Hooked(marshmallow.Schema):
        a = marshmallow.fields.Integer()

        @marshmallow.post_dump
        def add(self, data, **kwargs):
            return dict(data, b=1)

    assert Dumper(Hooked()).plain
    assert Dumper(Hooked()).dump([{"a": "2"}], many=True) == [{"a": 2, "b": 1}]
    courses = [{"id": "1", "rating_average": 4}, {"id": 2}]
    assert (dumper(course_schemas.CourseSchema).dump(courses, many=True)
            == course_schemas.CourseSchema().dump(courses, many=True)
            == [{"id": 1, "rating_average": 4.0}, {"id": 2}])
    assert (dumper(course_schemas.CourseSchema).dump(None, many=True)
            == course_schemas.CourseSchema().dump(None, many=True))
