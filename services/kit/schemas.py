"""Schemas every service uses: RPC input validation that raises our ValidationError, and pages.

    PageArgs.shared().load_or_raise({"page": page, "per_page": per_page, "after": after})
    page_of(session, select(Course), (Course.id,), page, per_page, dumper(CourseSchema),
            after=after)    # or a CourseSchema(): anything with dump(items, many=True)

A page is reached by number (``page``: an OFFSET, so only within the first MAX_PAGE_DEPTH items)
or by the cursor the page before it returned (``after``: a keyset, ``WHERE key < last key``,
an index range read at any depth). Every page returns ``next``, the cursor of the page after it
(``None`` on the last one).
"""
import base64
import binascii
import functools
import json
from datetime import datetime, timezone

import marshmallow
from marshmallow import Schema, fields, utils, validate
from marshmallow.decorators import POST_DUMP, PRE_DUMP
from sqlalchemy import DateTime, func, literal, literal_column, select, tuple_

from services.kit.errors import ValidationError

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
# Numbered pages reach the first MAX_PAGE_DEPTH items of a list: a page's OFFSET makes the
# database step over every item before it, so a deeper page would cost in proportion to its
# depth. Cursors (``after``) reach any depth at the cost of the first page.
MAX_PAGE_DEPTH = 10_000
# A page's total counts at most MAX_COUNT items (MAX_COUNT means "at least that many"):
# counting a whole list costs in proportion to it (PostgreSQL's index-only COUNT of 10,000
# courses took 2 ms, 4 ms once updates had touched their pages; of 10,000 events of a 1M-event
# log ~15 ms, of 1,000 under 1 ms), and cursors need no total.
MAX_COUNT = 1_000
MAX_CURSOR_LENGTH = 200
MAX_KEY = 2 ** 63 - 1  # a BIGINT: a larger number in a cursor would fail in PostgreSQL


class UtcDateTime(fields.DateTime):
    """ISO 8601 with an offset: SQLite hands back naive datetimes, and we store UTC."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class Dumper:
    """``schema.dump(obj)``, the same output, without marshmallow's per-field machinery.

    marshmallow calls four functions per field of each item (serialize, get_value, the schema's
    get_attribute, utils.get_value) before the field's own ``_serialize``; with a page of 20
    items that was most of the dump's cost, on the service and again at the gateway. A Dumper
    reads each value the way marshmallow's ``utils.get_value`` does (``obj[key]``, else the
    attribute), skips it when missing, and converts it as the field's ``_serialize`` does:
    inline for the plain Integer, Float, String and Raw fields (exactly their ``_serialize``,
    checked by identity of that method so a subclass that overrides it is not inlined), nested
    schemas through their own Dumper, and every other field through its ``_serialize``. A schema
    with dump hooks, ``many``, a custom ``get_attribute`` or a field with a dotted attribute or
    a ``dump_default`` gets plain ``schema.dump``. tests/unit/test_dumper.py compares both on
    every response schema. ``dumper(schema_cls)`` keeps one per schema class.
    """

    def __init__(self, schema):
        self.schema = schema
        self.plain = (schema.many or schema._hooks[PRE_DUMP] or schema._hooks[POST_DUMP]
                      or type(schema).get_attribute is not Schema.get_attribute)
        self.plan = [] if self.plain else [self._step(attr, field)
                                          for attr, field in schema.dump_fields.items()]
        self.plain = self.plain or None in self.plan

    @staticmethod
    def _step(attr, field):
        """(attribute to read, key to write, conversion, general?), or None: a field this does
        not do (the whole schema then gets plain ``schema.dump``)."""
        name = field.attribute if field.attribute is not None else attr
        if not field._CHECK_ATTRIBUTE or "." in name or field.dump_default is not utils.missing:
            return None
        key = field.data_key if field.data_key is not None else attr
        convert = _conversion(field)
        if convert is None:  # the field's own _serialize, with None and the object too
            return name, key, field._serialize, attr
        return name, key, convert, None

    def dump(self, obj, many=False):
        if self.plain:
            return self.schema.dump(obj, many=many)
        if many and obj is not None:  # as marshmallow: many with None dumps None as one item
            return [self._one(item) for item in obj]
        return self._one(obj)

    def _one(self, obj, missing=utils.missing):
        out = {}
        keyed = hasattr(obj, "__getitem__")
        for name, key, convert, general in self.plan:
            # as marshmallow.utils._get_value_for_key
            if keyed:
                try:
                    value = obj[name]
                except (KeyError, IndexError, TypeError, AttributeError):
                    value = getattr(obj, name, missing)
            else:
                value = getattr(obj, name, missing)
            if value is missing:
                continue
            if general is not None:
                out[key] = convert(value, general, obj)
            else:  # every _serialize inlined here returns None for None
                out[key] = None if value is None else convert(value)
        return out


@functools.lru_cache(maxsize=None)
def dumper(schema_cls):
    """The one Dumper of ``schema_cls()``: a Schema's fields are deep-copied at every
    instantiation (more than the dump of one item costs), and dumping keeps no state."""
    return Dumper(schema_cls())


def _as_is(value):
    return value


def _conversion(field):
    """What ``field._serialize`` does to a value that is not None, for the fields whose
    ``_serialize`` is marshmallow's own (compared by identity: a subclass that overrides it is
    not inlined); None for any other field."""
    method = type(field)._serialize
    if (method is fields.Number._serialize and not field.as_string
            and type(field)._format_num is fields.Number._format_num
            and field.num_type in (int, float)):  # Integer, Float: num_type(value)
        return field.num_type
    if method is fields.String._serialize:
        return utils.ensure_text_type
    if method is fields.Raw._serialize:
        return _as_is
    if method is fields.Nested._serialize:
        return _nested(field)
    inner = getattr(field, "inner", None)
    if method is fields.List._serialize and type(inner)._serialize is fields.Nested._serialize:
        each = _nested(inner)
        return lambda value: [None if item is None else each(item) for item in value]
    return None


def _nested(field):
    dumper, many = Dumper(field.schema), bool(field.schema.many or field.many)
    return lambda value: dumper.dump(value, many=many)


class StrictSchema(Schema):
    """Refuses unknown fields; ``load_or_raise`` turns marshmallow's error into ours."""

    class Meta:
        unknown = marshmallow.RAISE

    @classmethod
    def shared(cls):
        """One instance per class for every request: loading keeps no state on the schema,
        and an instantiation deep-copies every field."""
        instance = cls.__dict__.get("_shared")
        if instance is None:
            instance = cls()
            cls._shared = instance
        return instance

    def load_or_raise(self, data, message="invalid input"):
        try:
            return self.load(data)
        except marshmallow.ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
            raise ValidationError(message, messages) from None


class PageArgs(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000),
                          strict=True)
    per_page = fields.Integer(load_default=DEFAULT_PER_PAGE,
                              validate=validate.Range(min=1, max=MAX_PER_PAGE), strict=True)
    after = fields.String(load_default=None, allow_none=True,
                          validate=validate.Length(min=1, max=MAX_CURSOR_LENGTH))


def page_of(session, query, key, page, per_page, schema, after=None):
    """One page of ``query`` (a select() without an order), newest first, dumped with
    ``schema`` (a Schema, or its ``dumper``); the total; and ``next``, the cursor of the page
    after it.

    ``key``: the mapped columns the list is ordered by, each descending, the last one unique
    (``(Course.id,)``, ``(EventLog.timestamp, EventLog.id)``); an index on them makes a
    cursor's page a range read. A numbered page must start within the first MAX_PAGE_DEPTH
    items; ``after`` (a cursor, with ``page`` left at 1) reaches any depth, and its page has
    ``page`` None. The total counts at most MAX_COUNT items.
    """
    args = PageArgs.shared().load_or_raise({"page": page, "per_page": per_page, "after": after})
    page, per_page, after = args["page"], args["per_page"], args["after"]
    if after is not None and page != 1:
        raise ValidationError("invalid input", {"after": [
            "Give a page number or a cursor, not both."]})
    if (page - 1) * per_page >= MAX_PAGE_DEPTH:
        raise ValidationError("invalid input", {"page": [
            f"Pages reach the first {MAX_PAGE_DEPTH:,} items; this one starts at item "
            f"{(page - 1) * per_page + 1:,}. Follow the pages' `next` cursors (`after`) to go "
            f"deeper, or narrow the list (its filters)."]})
    listed = page_query(query, key, page, per_page, after)  # a bad cursor fails here, first
    # SELECT 1: the count can be answered from an index alone
    counted = query.with_only_columns(literal_column("1"), maintain_column_froms=True)
    counted = counted.limit(MAX_COUNT)
    total = session.execute(select(func.count()).select_from(counted.subquery())).scalar_one()
    items = session.execute(listed).scalars().all()
    more = len(items) > per_page
    items = items[:per_page]
    return {"items": schema.dump(items, many=True), "page": None if after else page,
            "per_page": per_page, "total": total,
            "next": cursor_for(key, items[-1]) if more else None}


def page_query(query, key, page, per_page, after=None):
    """``query``'s page: ordered by ``key`` (each column descending), from the OFFSET of
    ``page`` or after the cursor ``after``; one item more than ``per_page``, which says
    whether there is a next page."""
    listed = query.order_by(*(column.desc() for column in key)).limit(per_page + 1)
    if after is None:
        return listed.offset((page - 1) * per_page)
    values = read_cursor(after, key)
    if len(key) == 1:
        return listed.where(key[0] < literal(values[0], key[0].type))
    return listed.where(tuple_(*key) < tuple_(*(literal(v, c.type) for c, v in zip(key, values))))


# -- cursors: the last item's key, as JSON in URL-safe base64 ---------------------------------
# Not signed: a cursor only says where a list the reader may read anyway resumes. Whatever it
# holds is checked against the key's types before it reaches SQL.

def cursor_for(key, item):
    values = []
    for column in key:
        value = getattr(item, column.key)
        if isinstance(value, datetime):
            if value.tzinfo is None:  # SQLite's naive datetimes are UTC
                value = value.replace(tzinfo=timezone.utc)
            value = value.isoformat()
        values.append(value)
    text = json.dumps(values, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def read_cursor(cursor, key):
    """The key values ``cursor`` holds, typed as ``key``'s columns; ValidationError naming
    ``after`` when it is not a cursor of this list."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != len(key):
        raise _bad_cursor()
    return [_key_value(column, value) for column, value in zip(key, values)]


def _key_value(column, value):
    if isinstance(column.type, DateTime):
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise _bad_cursor() from None
        if moment.tzinfo is None:
            raise _bad_cursor()
        try:
            return moment.astimezone(timezone.utc)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC equivalent
            raise _bad_cursor() from None
    if type(value) is not int or not 0 <= value <= MAX_KEY:
        raise _bad_cursor()
    return value


def _bad_cursor():
    return ValidationError("invalid input", {"after": [
        "Not a cursor of this list: pass the `next` of the page before, unchanged."]})
