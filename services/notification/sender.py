"""The mail sender: delivers pending notifications after their handler's transaction committed.

A ``DependencyProvider`` with one background greenthread per service instance. It is woken
right after each event handler's worker ends (its transaction has committed by then) and also
sweeps every ``MAIL_RETRY_INTERVAL`` seconds. For each batch of due notifications (up to 20):

1. claims them (one UPDATE: ``next_attempt_at`` moves a lease ahead, so another instance of
   the service does not send them too), one commit for the batch;
2. sends them through the mail backend, over one SMTP connection for the batch, with no
   database transaction open;
3. marks the sent ones ``sent`` with ``sent_at`` (one UPDATE for the batch); for one the
   backend failed on, keeps it ``pending`` with
   ``attempts`` + 1 and ``next_attempt_at`` = now + ``MAIL_RETRY_INTERVAL`` * 2^(attempts-1)
   (at most ``MAIL_MAX_RETRY_DELAY``), and marks it ``failed`` after ``MAIL_MAX_ATTEMPTS``
   tries (or at once when the server refused it for good, a 5xx).

A redelivered or replayed event never reaches this far twice (the kit's inbox), so each
notification is mailed once; only a crash between the server's "250 OK" and step 3 can mail
it a second time, after the lease (at-least-once, as mail goes). The sender's own commits (the
claim, the marking, a failed try) therefore do not wait for PostgreSQL's WAL flush
(``commit_without_flush_wait``): a database server crash that loses one mails again (or tries
again sooner), too.
"""
import logging
from datetime import timedelta

from nameko.extensions import DependencyProvider
from sqlalchemy import or_, select, update

from services.kit.background import BackgroundLoop
from services.kit.db import commit_without_flush_wait, find_database, utcnow
from services.kit.handlers import EventHandler
from services.notification.mail import MailError, backend_from_config
from services.notification.models import FAILED, PENDING, SENT, Notification
from services.notification.settings import (
    MAIL_BATCH_DELAY, MAIL_MAX_ATTEMPTS, MAIL_MAX_RETRY_DELAY, MAIL_RETRY_INTERVAL,
)

log = logging.getLogger(__name__)

DEFAULT_LEASE = 300.0
BATCH_SIZE = 20  # claimed together; the lease covers sending all of them


def retry_delay(attempts, interval, maximum):
    """Seconds to wait after the ``attempts``-th failed try: doubling from ``interval``."""
    return min(interval * 2 ** max(attempts - 1, 0), maximum)


def due(now):
    return (Notification.status == PENDING) & or_(Notification.next_attempt_at.is_(None),
                                                   Notification.next_attempt_at <= now)


class MailSender(BackgroundLoop, DependencyProvider):

    def setup(self):
        config = self.container.config
        self.database = find_database(self.container, "MailSender")
        self.backend = backend_from_config(config)
        self.retry_interval = MAIL_RETRY_INTERVAL.read(config)
        self.poll_interval = self.retry_interval  # the sweep for mail that is due again
        # mail can wait 50 ms: a burst of events is then claimed and marked sent in batches
        self.settle_delay = MAIL_BATCH_DELAY.read(config)
        self.max_attempts = MAIL_MAX_ATTEMPTS.read(config)
        self.max_retry_delay = MAIL_MAX_RETRY_DELAY.read(config)
        # a claimed batch must be sent before its lease ends, even if every send times out
        self.lease = max(DEFAULT_LEASE, 2 * BATCH_SIZE * getattr(self.backend, "timeout", 0))

    def get_dependency(self, worker_ctx):
        return self

    def worker_teardown(self, worker_ctx):
        # after an event handler's worker: its commit (and its new notification) is done
        if isinstance(worker_ctx.entrypoint, EventHandler):
            self.wake()

    def run_once(self):
        self.deliver_due()

    def deliver_due(self):
        """Send every notification that is due now; return how many were sent."""
        sent = 0
        while self._running or self._thread is None:
            mails = self.claim_due()
            delivered = []
            if mails:
                with self.backend.session() as mail_session:  # one connection per batch
                    for mail in mails:
                        try:
                            mail_session.send(mail.email, mail.subject, mail.body)
                        except Exception as exc:
                            self.record_failure(mail, exc)
                            continue
                        delivered.append(mail)
            self.record_sent(delivered)
            sent += len(delivered)
            if len(mails) < BATCH_SIZE:
                return sent
        return sent

    # Plain connections, not ORM sessions: the sender runs a few statements per mail, on the
    # one SQLite connection the event handlers wait for, and a session costs more per statement.

    def claim_due(self):
        """Claim up to BATCH_SIZE due notifications in one transaction; return their mails.

        The claim is a conditional UPDATE (``next_attempt_at`` moves a lease ahead), so a row
        another instance claimed meanwhile is skipped. One UPDATE .. RETURNING for the batch
        where the database has it (PostgreSQL, SQLite 3.35+; it was a round trip per mail),
        else one per row in id order. Two instances' claims lock rows in their plan's order (the
        same statement, the same index); were PostgreSQL to see a cycle, it fails one claim,
        which rolls back and is tried again at the next pass.
        """
        now = utcnow()
        lease_until = now + timedelta(seconds=self.lease)
        columns = (Notification.id, Notification.email, Notification.subject, Notification.body,
                   Notification.attempts, Notification.kind)
        with self.database.engine.begin() as connection:
            commit_without_flush_wait(connection)  # lost in a crash: mailed again
            ids = connection.execute(select(Notification.id).where(due(now))
                                     .order_by(Notification.id).limit(BATCH_SIZE)).scalars().all()
            if not ids:
                return []
            if connection.dialect.update_returning:
                return sorted(connection.execute(
                    update(Notification).where(Notification.id.in_(ids), due(now))
                    .values(next_attempt_at=lease_until).returning(*columns)).all(),
                    key=lambda mail: mail.id)
            claimed = [notification_id for notification_id in ids if connection.execute(
                update(Notification).where(Notification.id == notification_id, due(now))
                .values(next_attempt_at=lease_until)).rowcount == 1]
            return connection.execute(
                select(*columns).where(Notification.id.in_(claimed)).order_by(Notification.id)
            ).all() if claimed else []

    def record_sent(self, mails):
        """Mark the sent mails ``sent``: one UPDATE and one commit for the whole batch."""
        if not mails:
            return
        with self.database.engine.begin() as connection:
            commit_without_flush_wait(connection)  # lost in a crash: mailed again
            connection.execute(update(Notification)
                               .where(Notification.id.in_([mail.id for mail in mails]))
                               .values(status=SENT, sent_at=utcnow(),
                                       attempts=Notification.attempts + 1,
                                       next_attempt_at=None, last_error=None))
        for mail in mails:
            log.info("notification %s (%s) sent to %s", mail.id, mail.kind, mail.email)

    def record_failure(self, mail, exc):
        attempts = mail.attempts + 1
        permanent = isinstance(exc, MailError) and exc.permanent
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if permanent or attempts >= self.max_attempts:
            values = {"status": FAILED, "next_attempt_at": None}
            log.error("notification %s to %s failed for good after %d attempt(s): %s",
                      mail.id, mail.email, attempts, error)
        else:
            delay = retry_delay(attempts, self.retry_interval, self.max_retry_delay)
            values = {"next_attempt_at": utcnow() + timedelta(seconds=delay)}
            log.warning("notification %s to %s not sent (attempt %d of %d), retrying in %gs: %s",
                        mail.id, mail.email, attempts, self.max_attempts, delay, error,
                        exc_info=not isinstance(exc, MailError))
        with self.database.engine.begin() as connection:
            commit_without_flush_wait(connection)  # lost in a crash: tried again sooner
            connection.execute(update(Notification).where(Notification.id == mail.id)
                               .values(attempts=attempts, last_error=error, **values))
