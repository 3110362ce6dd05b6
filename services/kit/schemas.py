"""Schemas every service uses: RPC input validation that raises our ValidationError, and pages.

    PageArgs().load_or_raise({"page": page, "per_page": per_page})
    page_of(session, select(Course).order_by(Course.id.desc()), page, per_page, CourseSchema())
"""
from datetime import timezone

import marshmallow
from marshmallow import Schema, fields, validate
from sqlalchemy import func, literal_column, select

from services.kit.errors import ValidationError

MAX_PER_PAGE = 100
DEFAULT_PER_PAGE = 20
# Pages reach the first MAX_PAGE_DEPTH items of a list: a page's OFFSET makes the database step
# over every item before it, so a deeper page would cost in proportion to its depth.
MAX_PAGE_DEPTH = 10_000


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


def page_of(session, query, page, per_page, schema, count_limit=None):
    """One page of ``query`` (a select() with its order) dumped with ``schema``, and the total.

    A page must start within the first MAX_PAGE_DEPTH items. With ``count_limit`` the total
    counts at most that many (for lists that grow without bound: counting all of them would
    cost in proportion to the table).
    """
    args = PageArgs().load_or_raise({"page": page, "per_page": per_page})
    page, per_page = args["page"], args["per_page"]
    if (page - 1) * per_page >= MAX_PAGE_DEPTH:
        raise ValidationError("invalid input", {"page": [
            f"Pages reach the first {MAX_PAGE_DEPTH:,} items; this one starts at item "
            f"{(page - 1) * per_page + 1:,}. Narrow the list (its filters) instead."]})
    # SELECT 1: the count can be answered from an index alone
    counted = query.order_by(None).with_only_columns(literal_column("1"),
                                                     maintain_column_froms=True)
    if count_limit is not None:
        counted = counted.limit(count_limit)
    total = session.execute(select(func.count()).select_from(counted.subquery())).scalar_one()
    items = session.execute(query.limit(per_page).offset((page - 1) * per_page)).scalars().all()
    return {"items": schema.dump(items, many=True), "page": page, "per_page": per_page,
            "total": total}
