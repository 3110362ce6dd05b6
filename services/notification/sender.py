"""The mail sender: delivers pending notifications after their handler's transaction committed.

A ``DependencyProvider`` with one background greenthread per service instance. It is woken
right after each event handler's worker ends (its transaction has committed by then) and also
sweeps every ``MAIL_RETRY_INTERVAL`` seconds. For each due notification it:

1. claims it (one UPDATE: ``next_attempt_at`` moves a lease ahead, so another instance of the
   service does not send it too) and commits;
2. sends it through the mail backend, with no database transaction open;
3. marks it ``sent`` with ``sent_at``; or, when the backend failed, keeps it ``pending`` with
   ``attempts`` + 1 and ``next_attempt_at`` = now + ``MAIL_RETRY_INTERVAL`` * 2^(attempts-1)
   (at most ``MAIL_MAX_RETRY_DELAY``), and marks it ``failed`` after ``MAIL_MAX_ATTEMPTS``
   tries (or at once when the server refused it for good, a 5xx).

A redelivered or replayed event never reaches this far twice (the kit's inbox), so each
notification is mailed once; only a crash between the server's "250 OK" and step 3 can mail
it a second time, after the lease (at-least-once, as mail goes).
"""
import logging
from datetime import timedelta

from nameko.extensions import DependencyProvider
from sqlalchemy import or_, select, update

from services.kit.background import BackgroundLoop
from services.kit.db import utcnow
from services.kit.events import EventHandler, find_database
from services.notification.mail import MailError, backend_from_config
from services.notification.models import FAILED, PENDING, SENT, Notification

log = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVAL = 5.0
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_MAX_RETRY_DELAY = 3600.0
DEFAULT_LEASE = 300.0
BATCH_SIZE = 100


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
        self.retry_interval = float(config.get("MAIL_RETRY_INTERVAL") or DEFAULT_RETRY_INTERVAL)
        self.poll_interval = self.retry_interval  # the sweep for mail that is due again
        self.max_attempts = int(config.get("MAIL_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        self.max_retry_delay = float(config.get("MAIL_MAX_RETRY_DELAY")
                                     or DEFAULT_MAX_RETRY_DELAY)
        self.lease = max(DEFAULT_LEASE, 3 * getattr(self.backend, "timeout", 0))

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
            with self.database.Session() as session:
                ids = session.execute(select(Notification.id).where(due(utcnow()))
                                      .order_by(Notification.id).limit(BATCH_SIZE)
                                      ).scalars().all()
                session.rollback()
            for notification_id in ids:
                sent += bool(self.deliver(notification_id))
            if len(ids) < BATCH_SIZE:
                return sent
        return sent

    def deliver(self, notification_id):
        """Claim, send and record one notification; True if it was sent now."""
        now = utcnow()
        with self.database.Session() as session:
            claimed = session.execute(
                update(Notification).where(Notification.id == notification_id, due(now))
                .values(next_attempt_at=now + timedelta(seconds=self.lease))
                .execution_options(synchronize_session=False)).rowcount
            if claimed != 1:  # sent or claimed by someone else meanwhile
                session.rollback()
                return False
            mail = session.execute(
                select(Notification.email, Notification.subject, Notification.body,
                       Notification.attempts, Notification.kind)
                .where(Notification.id == notification_id)).one()
            session.commit()

        try:
            self.backend.send(mail.email, mail.subject, mail.body)
        except Exception as exc:
            self.record_failure(notification_id, mail, exc)
            return False

        with self.database.Session() as session:
            session.execute(update(Notification).where(Notification.id == notification_id)
                            .values(status=SENT, sent_at=utcnow(), attempts=mail.attempts + 1,
                                    next_attempt_at=None, last_error=None)
                            .execution_options(synchronize_session=False))
            session.commit()
        log.info("notification %s (%s) sent to %s", notification_id, mail.kind, mail.email)
        return True

    def record_failure(self, notification_id, mail, exc):
        attempts = mail.attempts + 1
        permanent = isinstance(exc, MailError) and exc.permanent
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if permanent or attempts >= self.max_attempts:
            values = {"status": FAILED, "next_attempt_at": None}
            log.error("notification %s to %s failed for good after %d attempt(s): %s",
                      notification_id, mail.email, attempts, error)
        else:
            delay = retry_delay(attempts, self.retry_interval, self.max_retry_delay)
            values = {"next_attempt_at": utcnow() + timedelta(seconds=delay)}
            log.warning("notification %s to %s not sent (attempt %d of %d), retrying in %gs: %s",
                        notification_id, mail.email, attempts, self.max_attempts, delay, error,
                        exc_info=not isinstance(exc, MailError))
        with self.database.Session() as session:
            session.execute(update(Notification).where(Notification.id == notification_id)
                            .values(attempts=attempts, last_error=error, **values)
                            .execution_options(synchronize_session=False))
            session.commit()
