"""Schemas every service uses: RPC input validation that raises our ValidationError, and pages.

    PageArgs().load_or_raise({"page": page, "per_page": per_page, "after": after})
    page_of(session, select(Course), (Course.id,), page, per_page, CourseSchema(), after=after)

A page is reached by number (``page``: an OFFSET, so only within the first MAX_PAGE_DEPTH items)
or by the cursor the page before it returned (``after``: a keyset, ``WHERE key < last key``,
an index range read at any depth). Every page returns ``next``, the cursor of the page after it
(``None`` on the last one).
"""
import base64
import binascii
import json
from datetime import datetime, timezone

import marshmallow
from marshmallow import Schema, fields, validate
from sqlalchemy import DateTime, func, literal, literal_column, select, tuple_

from services.kit.errors import ValidationError

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
# Numbered pages reach the first MAX_PAGE_DEPTH items of a list: a page's OFFSET makes the
# database step over every item before it, so a deeper page would cost in proportion to its
# depth. Cursors (``after``) reach any depth at the cost of the first page.
MAX_PAGE_DEPTH = 10_000
MAX_CURSOR_LENGTH = 200
MAX_KEY = 2 ** 63 - 1  # a BIGINT: a larger number in a cursor would fail in PostgreSQL


class UtcDateTime(fields.DateTime):
    """ISO 8601 with an offset: SQLite hands back naive datetimes, and we store UTC."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return super()._serialize(value, attr, obj, **kwargs)


class StrictSchema(Schema):
    """Refuses unknown fields; ``load_or_raise`` turns marshmallow's error into ours."""

    class Meta:
        unknown = marshmallow.RAISE

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


def page_of(session, query, key, page, per_page, schema, count_limit=None, after=None):
    """One page of ``query`` (a select() without an order), newest first, dumped with
    ``schema``; the total; and ``next``, the cursor of the page after it.

    ``key``: the mapped columns the list is ordered by, each descending, the last one unique
    (``(Course.id,)``, ``(EventLog.timestamp, EventLog.id)``); an index on them makes a
    cursor's page a range read. A numbered page must start within the first MAX_PAGE_DEPTH
    items; ``after`` (a cursor, with ``page`` left at 1) reaches any depth, and its page has
    ``page`` None. With ``count_limit`` the total counts at most that many (for lists that grow
    without bound: counting all of them would cost in proportion to the table).
    """
    args = PageArgs().load_or_raise({"page": page, "per_page": per_page, "after": after})
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
    if count_limit is not None:
        counted = counted.limit(count_limit)
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
