"""The event envelope (docs/architecture.md, and its schema in docs/asyncapi.json): build one,
serialize it, and read one liberally.

On the wire an event is a JSON object::

    {"event_id": "...", "event_type": "course.enrolled", "timestamp": "...+00:00",
     "source": "course", "version": 1, "data": {...}}

``event_type``, ``timestamp`` and ``data`` are the seed's fields in the seed's places, so a plain
AMQP client that publishes only those three (with a naive timestamp, no event_id) is understood:
a stable event_id is derived from the body, so a redelivery of the same bytes still dedupes.
"""
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from services.kit.constants import ENVELOPE_VERSION

# Namespace for event ids derived from a body that carried none (uuid5 of its canonical JSON).
DERIVED_ID_NAMESPACE = uuid.UUID("6f1c5a43-4d0e-4a53-9b0e-6b1d3c4a2f10")
MAX_EVENT_TYPE_LENGTH = 255


class InvalidEvent(ValueError):
    """A message that is not an event: it is dead-lettered with this reason, never retried."""


@dataclass(frozen=True)
class Event:
    event_type: str
    data: dict
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    source: str = "unknown"
    version: int = ENVELOPE_VERSION

    def to_dict(self):
        return {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp.isoformat(),
            "source": self.source,
            "version": self.version,
            "data": self.data,
        }

    def to_json(self):
        """UTF-8 JSON bytes; raises TypeError at dispatch time if ``data`` is not JSON-able."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def new_event(event_type, data, source):
    if not isinstance(event_type, str) or not event_type or len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
    if not isinstance(data, dict):
        raise TypeError(f"event data must be a dict, got {type(data).__name__}")
    return Event(event_type=event_type, data=data, source=source)


def parse_event(body, message_id=None, app_id=None):
    """Read an event from raw message bytes; raise InvalidEvent saying what is wrong.

    ``message_id`` and ``app_id`` are the AMQP properties: used when the body lacks
    ``event_id`` or ``source``.
    """
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"body is not UTF-8: {exc}") from None
    elif isinstance(body, str):
        text = body
    else:
        raise InvalidEvent(f"body is {type(body).__name__}, not bytes")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidEvent(f"body is a JSON {type(document).__name__}, not an object")

    event_type = document.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent("body has no event_type (a non-empty string)")
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise InvalidEvent("event_type is too long")
    data = document.get("data")
    if not isinstance(data, dict):
        raise InvalidEvent("body has no data object")

    timestamp = _parse_timestamp(document.get("timestamp"))

    version = document.get("version", ENVELOPE_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidEvent(f"version must be a positive integer, got {version!r}")

    event_id = document.get("event_id") or message_id
    if event_id is None:
        event_id = derive_event_id(event_type, document.get("timestamp"), data)
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
        raise InvalidEvent("event_id must be a string of 1 to 64 characters")

    source = document.get("source") or app_id or "unknown"
    if not isinstance(source, str):
        raise InvalidEvent("source must be a string")

    return Event(event_type=event_type, data=data, event_id=event_id, timestamp=timestamp,
                 source=source, version=version)


def derive_event_id(event_type, raw_timestamp, data):
    """A stable id for an event published without one: the same body always gives the same id."""
    canonical = json.dumps([event_type, raw_timestamp, data], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return uuid.uuid5(DERIVED_ID_NAMESPACE, digest).hex


def _parse_timestamp(raw):
    if raw is None:
        # The seed always sends one; tolerate its absence rather than park a usable event.
        return datetime.now(timezone.utc)
    if not isinstance(raw, str):
        raise InvalidEvent(f"timestamp must be an ISO 8601 string, got {raw!r}")
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"timestamp is not ISO 8601: {raw!r}") from None
    if parsed.tzinfo is None:
        # The seed publishes datetime.utcnow().isoformat(): naive, and meant as UTC.
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed
