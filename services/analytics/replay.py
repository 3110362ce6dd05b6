"""``knowledge-nest replay``: publish logged events again, from the analytics event log.

    knowledge-nest replay --since 2026-11-26T00:00:00Z|1h [--until TIME] [--type T ...]
                          [--to-queue Q] [--dry-run]

Reads analytics' database (its ``DB_URIS`` entry, opened read-only) and publishes each matching
event, in log order (the order analytics received them), with its ORIGINAL envelope: the same
event_id, event_type, timestamp, source, version and data, as persistent JSON with
``message_id``/``type``/``app_id`` set as the kit's relay sets them, through the kit's
``ConfirmedPublisher`` (a batch counts only once the broker confirmed all of it).

- By default to ``knowledge_nest_events`` with the routing key it was first published with:
  every subscriber gets it again; those that already had it skip it (their inbox).
- ``--to-queue Q``: to that one queue only (the default exchange routes by queue name), e.g. to
  rebuild a new consumer's state without bothering the others. The queue must exist.

Each replayed message carries ``x-replayed`` (when) and ``x-original-routing-key`` headers.
``--since``/``--until`` select on the event's own timestamp (since inclusive, until exclusive).
"""
import contextlib
import json
import os
import sqlite3
import sys
from datetime import datetime, timezone
from urllib.parse import quote

import amqp
from sqlalchemy import create_engine, event, func, inspect, select

from services.analytics.models import EventLog
from services.kit import topology
from services.kit.amqp import PublishFailed, event_message, make_connection, new_publisher
from services.kit.trust import broker_user
# HEADER_REPLAYED: the kit's consumers look such an event up in their inbox before the handler
from services.kit.constants import EVENTS_EXCHANGE, HEADER_ORIGINAL_ROUTING_KEY, HEADER_REPLAYED
from services.kit.db import database_uri, normalize_url
from services.kit.settings import AMQP_SSL, AMQP_URI

BATCH_SIZE = 200
SERVICE_NAME = "analytics"


@contextlib.contextmanager
def no_progress(label, total):
    """Progress shown to no one (bench, tests); ``knowledge-nest replay`` passes its own bar
    (operations/cli.py: ``progress(label, total)`` yielding something with ``update(n)``)."""
    class Silent:
        def update(self, count):
            pass
    yield Silent()


class ReplayError(Exception):
    """What a user must fix before anything can be replayed; nothing was published."""


def as_utc(moment):
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def open_log(db_uri):
    """A read-only engine on analytics' database; ReplayError if it is missing or unmigrated."""
    url = normalize_url(db_uri)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if not path or path == ":memory:" or not os.path.isfile(path):
            raise ReplayError(f"no analytics database at {path!r}: has analytics run here? "
                              f"(knowledge-nest migrate analytics, then run the service)")
        location = f"file:{quote(os.path.abspath(path))}?mode=ro"  # SQLite refuses any write
        engine = create_engine("sqlite://",
                               creator=lambda: sqlite3.connect(location, uri=True))
    else:
        engine = create_engine(url, pool_pre_ping=True)

        @event.listens_for(engine, "connect")
        def read_only(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cursor.close()
            dbapi_connection.commit()  # a SET in a transaction rolled back would be undone
    try:
        has_log = inspect(engine).has_table(EventLog.__tablename__)
    except Exception as exc:
        engine.dispose()
        raise ReplayError(f"cannot read the analytics database: {type(exc).__name__}: "
                          f"{exc}") from None
    if not has_log:
        engine.dispose()
        raise ReplayError("the analytics database has no event log yet: "
                          "run `knowledge-nest migrate analytics`")
    return engine


def selection(since, until=None, event_types=()):
    """The WHERE clause of what to replay."""
    conditions = [EventLog.timestamp >= since]
    if until is not None:
        conditions.append(EventLog.timestamp < until)
    if event_types:
        conditions.append(EventLog.event_type.in_(list(event_types)))
    return conditions


def count_events(connection, conditions):
    return connection.execute(select(func.count()).select_from(EventLog).where(*conditions)
                              ).scalar_one()


def iter_events(connection, conditions, batch_size=BATCH_SIZE):
    """The selected log rows in log (id) order, a batch at a time (keyset, not offset)."""
    last_id = 0
    while True:
        rows = connection.execute(select(EventLog).where(EventLog.id > last_id, *conditions)
                                  .order_by(EventLog.id).limit(batch_size)).all()
        if not rows:
            return
        yield rows
        last_id = rows[-1].id


def envelope(row):
    """The event's envelope as it was published (services/kit/envelope.py's field order)."""
    return {"event_id": row.event_id, "event_type": row.event_type,
            "timestamp": as_utc(row.timestamp).isoformat(), "source": row.source,
            "version": row.version, "data": row.data}


def replay_message(row, options, replayed_at, user_id=None):
    body = json.dumps(envelope(row), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    headers = {HEADER_REPLAYED: replayed_at, HEADER_ORIGINAL_ROUTING_KEY: row.routing_key}
    return event_message(body, row.event_id, row.event_type, row.source or "unknown",
                         headers=headers, user_id=user_id, **options(row.event_type))


def check_destination(config, to_queue):
    """ReplayError unless the exchange (or ``to_queue``) exists on the broker."""
    try:
        with make_connection(AMQP_URI.read(config), heartbeat=0,
                             ssl=AMQP_SSL.read(config)) as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.connection.channel()
            try:
                if to_queue:
                    channel.queue_declare(to_queue, passive=True)
                else:
                    channel.exchange_declare(EVENTS_EXCHANGE, "topic", passive=True)
            finally:
                if channel.is_open:
                    channel.close()
    except amqp.exceptions.NotFound:
        what = f"queue {to_queue!r}" if to_queue else f"exchange {EVENTS_EXCHANGE!r}"
        raise ReplayError(f"no {what} on the broker (start its service, or run "
                          f"`knowledge-nest declare`)") from None
    except (OSError, amqp.exceptions.AMQPError) as exc:
        raise ReplayError(f"cannot reach the broker: {type(exc).__name__}: {exc}") from None


def replay(config, since, until=None, event_types=(), to_queue=None, dry_run=False,
           out=sys.stdout, progress=no_progress, batch_size=BATCH_SIZE):
    """Replay (or with ``dry_run`` list) the selected events; return how many."""
    if until is not None and until < since:
        raise ReplayError("--until is before --since")
    try:
        db_uri = database_uri(config, SERVICE_NAME)
    except KeyError:
        raise ReplayError("no analytics database configured (DB_URIS: analytics:Base)") from None
    destination = f"queue {to_queue}" if to_queue else f"exchange {EVENTS_EXCHANGE}"
    engine = open_log(db_uri)
    try:
        with engine.connect() as connection:
            conditions = selection(since, until, event_types)
            total = count_events(connection, conditions)
            if dry_run:
                for rows in iter_events(connection, conditions, batch_size):
                    for row in rows:
                        out.write(f"{row.id}\t{as_utc(row.timestamp).isoformat()}\t"
                                  f"{row.event_type}\t{row.routing_key}\t{row.event_id}\n")
                out.write(f"dry run: would replay {total} event(s) to {destination}\n")
                return total
            if total == 0:
                out.write("nothing to replay\n")
                return 0
            check_destination(config, to_queue)
            return _publish(config, connection, conditions, total, to_queue, destination, out,
                            progress, batch_size)
    finally:
        engine.dispose()


def _publish(config, connection, conditions, total, to_queue, destination, out,
             progress, batch_size):
    options = topology.message_options(config)  # EVENT_PRIORITY, EVENT_TTL, as the relay does
    replayed_at = datetime.now(timezone.utc).isoformat()
    user = broker_user(AMQP_URI.read(config))  # the operator's (EVENT_OPERATORS)
    publisher = new_publisher(config)
    published = unroutable = 0
    try:
        with progress("replay", total) as bar:
            for rows in iter_events(connection, conditions, batch_size):
                batch = [("", to_queue, replay_message(row, options, replayed_at, user))
                         if to_queue
                         else (EVENTS_EXCHANGE, row.routing_key,
                               replay_message(row, options, replayed_at, user))
                         for row in rows]
                try:
                    unroutable += len(publisher.publish_batch(batch))  # all confirmed, or raises
                except (PublishFailed, OSError, amqp.exceptions.AMQPError) as exc:
                    raise ReplayError(
                        f"publishing failed after {published} of {total} event(s) were "
                        f"confirmed: {type(exc).__name__}: {exc}. Running the same replay again "
                        f"is safe: consumers skip the events they already had") from None
                published += len(rows)
                bar.update(len(rows))
    finally:
        publisher.close()
    out.write(f"replayed {published} event(s) to {destination}\n")
    if unroutable:
        out.write(f"warning: {unroutable} of them reached no queue (nothing is bound to their "
                  f"routing key)\n")
    return published
