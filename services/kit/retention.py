"""Bounded growth: sent outbox rows and old inbox records are deleted, a small batch at a time.

Without it every event a service ever published stays in its ``outbox_events`` and every event a
consumer ever handled stays in its ``inbox_records``: a million enrollments leave a million rows
in each. One ``RetentionSweeper`` per service instance (a shared extension of ``EventDispatcher``
and ``event_handler``) wakes every ``RETENTION_INTERVAL`` seconds and deletes

- outbox rows sent more than ``OUTBOX_RETENTION`` seconds ago (never an unsent row: the relay
  still owes it to the broker);
- inbox records processed more than ``INBOX_RETENTION`` seconds ago,

in transactions of at most ``RETENTION_BATCH_SIZE`` rows, so a sweep never holds a long lock
on the table the hot path writes to. Instances of a service may sweep at the same time: a row
deleted twice is deleted once.

Why the inbox retention is safe. The inbox turns an event delivered twice into one effect, so
a record must outlive every way the same event can arrive again:

- a redelivery or a retry comes within seconds to ``sum(EVENT_RETRY_DELAYS)``: the retention is
  refused at start unless it exceeds that by far (``MIN_INBOX_RETENTION``);
- a relay that republishes after a crash does so right away;
- ``knowledge-nest replay`` can send an event of any age. So each sweep also records, per
  consumer, its horizon (``inbox_horizons.pruned_before``): records processed before it may be
  gone. A replayed event whose timestamp is before that horizon (less ``CLOCK_SKEW_MARGIN``) and
  that the inbox does not know cannot be told apart from one handled long ago: the consumer
  parks it in its DLQ with that reason instead of risking a second effect
  (``Inbox.may_have_forgotten``, inbox.py). A consumer that
  never pruned (a new one, fed its history with ``replay --to-queue``) has no horizon and
  handles the whole history.

    every RETENTION_INTERVAL s:
      DELETE outbox_events  WHERE sent_at      < now - OUTBOX_RETENTION  (batches)
      inbox_horizons[consumer] = now - INBOX_RETENTION
      DELETE inbox_records  WHERE processed_at < now - INBOX_RETENTION   (batches)
"""
import logging
from datetime import timedelta

import eventlet
from nameko.extensions import SharedExtension
from sqlalchemy import delete, select, tuple_, update

from services.kit import metrics
from services.kit.background import BackgroundLoop
from services.kit.db import find_database, utcnow
from services.kit.settings import (
    EVENT_RETRY_DELAYS, INBOX_RETENTION, OUTBOX_RETENTION, RETENTION_BATCH_SIZE, RETENTION_INTERVAL,
)

log = logging.getLogger(__name__)

# An inbox record must outlive a message's retries by far; below this a start is refused.
MIN_INBOX_RETENTION = 3600.0
# Event timestamps come from the producer's clock, processed_at from the consumer's.
CLOCK_SKEW_MARGIN = timedelta(minutes=5)


def retention_settings(config):
    """(outbox seconds, inbox seconds, interval seconds, batch size), validated."""
    outbox, inbox = OUTBOX_RETENTION.read(config), INBOX_RETENTION.read(config)
    interval, batch_size = RETENTION_INTERVAL.read(config), RETENTION_BATCH_SIZE.read(config)
    if outbox <= 0 or interval <= 0 or batch_size < 1:
        raise ValueError("OUTBOX_RETENTION and RETENTION_INTERVAL must be > 0 seconds and "
                         "RETENTION_BATCH_SIZE >= 1")
    floor = max(MIN_INBOX_RETENTION, 10 * sum(EVENT_RETRY_DELAYS.read(config)))
    if inbox < floor:
        raise ValueError(
            f"INBOX_RETENTION ({inbox:g}s) must be at least {floor:g}s: an inbox record must "
            f"outlive every redelivery and retry of its event (EVENT_RETRY_DELAYS) by far")
    return outbox, inbox, interval, batch_size


def delete_in_batches(engine, model, key_columns, condition, batch_size, pause=0.0):
    """DELETE the rows of ``model`` matching ``condition``, ``batch_size`` per transaction.

    Returns how many went. Each batch selects its keys first (an index range scan), so no
    statement touches more than ``batch_size`` rows.
    """
    deleted = 0
    while True:
        with engine.begin() as connection:
            keys = connection.execute(
                select(*key_columns).where(condition).limit(batch_size)).all()
            if not keys:
                return deleted
            if len(key_columns) == 1:
                where = key_columns[0].in_([key[0] for key in keys])
            else:
                where = tuple_(*key_columns).in_([tuple(key) for key in keys])
            deleted += connection.execute(delete(model).where(where)).rowcount
        if len(keys) < batch_size:
            return deleted
        eventlet.sleep(pause)  # let the service's workers at the database between batches


class RetentionSweeper(BackgroundLoop, SharedExtension):
    """Deletes what the retention settings let go, for the one Database of its container."""

    def setup(self):
        (self.outbox_retention, self.inbox_retention, self.poll_interval,
         self.batch_size) = retention_settings(self.container.config)
        self.database = find_database(self.container, "RetentionSweeper")
        if self.database.inbox_model is not None and self.database.inbox_horizon_model is None:
            # without a horizon a replay could not tell a pruned record from a new event
            log.warning("%s keeps its inbox records forever: its models have no "
                        "InboxHorizonMixin table (services/kit/db.py)",
                        self.container.service_name)

    def start(self):
        super().start()
        self.wake()  # a first sweep at start: a service that was down a while catches up

    def run_once(self):
        self.sweep()

    def sweep(self, now=None):
        """One pass; returns {"outbox": n, "inbox": n} rows deleted."""
        now = now or utcnow()
        service = self.container.service_name
        deleted = {"outbox": 0, "inbox": 0}
        outbox = self.database.outbox_model
        if outbox is not None:
            deleted["outbox"] = delete_in_batches(
                self.database.engine, outbox, [outbox.id],
                outbox.sent_at < now - timedelta(seconds=self.outbox_retention),
                self.batch_size)
        inbox = self.database.inbox_model
        if inbox is not None and self.database.inbox_horizon_model is not None:
            cutoff = now - timedelta(seconds=self.inbox_retention)
            self._advance_horizons(cutoff)
            deleted["inbox"] = delete_in_batches(
                self.database.engine, inbox, [inbox.consumer, inbox.event_id],
                inbox.processed_at < cutoff, self.batch_size)
        for table, count in deleted.items():
            if count:
                metrics.rows_pruned(service, table, count)
        if any(deleted.values()):
            log.info("retention: deleted %d sent outbox row(s) and %d inbox record(s)",
                     deleted["outbox"], deleted["inbox"])
        return deleted

    def _advance_horizons(self, cutoff):
        """Before any record older than ``cutoff`` goes, say so for each consumer that has one."""
        inbox, horizon = self.database.inbox_model, self.database.inbox_horizon_model
        with self.database.engine.begin() as connection:
            consumers = connection.execute(
                select(inbox.consumer).where(inbox.processed_at < cutoff).distinct()).scalars()
            known = set(connection.execute(select(horizon.consumer)).scalars())
            for consumer in consumers:
                if consumer in known:
                    connection.execute(update(horizon).where(
                        horizon.consumer == consumer, horizon.pruned_before < cutoff)
                        .values(pruned_before=cutoff))
                else:
                    connection.execute(horizon.__table__.insert().values(
                        consumer=consumer, pruned_before=cutoff))

