"""Mail backends: how a notification leaves the building. Chosen by ``MAIL_BACKEND`` in config.

- ``log`` (the default): one readable log line per mail, on the ``services.notification.mail``
  logger; nothing leaves the machine.
- ``smtp``: a real SMTP server (``SMTP_HOST``, ``SMTP_PORT``, ``SMTP_USER``, ``SMTP_PASSWORD``,
  ``SMTP_STARTTLS`` or ``SMTP_SSL`` (implicit TLS, usually port 465), ``SMTP_CA_FILE``,
  ``MAIL_FROM``, ``SMTP_TIMEOUT``), through ``smtplib``: its sockets are green under eventlet's
  monkey patching, so a slow server does not stall the service.

``with backend.session() as mail: mail.send(to, subject, body)`` sends a batch of mail over one
connection (SMTP: opened at the first mail, reopened only after a failure that lost it);
``send`` returns when the mail was accepted, or raises ``MailError`` (``permanent`` set when
retrying cannot help, e.g. a 5xx refusal of the recipient). ``backend.send(...)`` is a session
of one mail.

Messages are ``EmailMessage`` under the default policy, and every header value is one line: a
CR or LF in a course title or a person's name becomes a space, so no value can add a header.
"""
import logging
import smtplib
import ssl
from contextlib import contextmanager
from email.message import EmailMessage
from email.utils import make_msgid

from services.notification.settings import (
    MAIL_BACKEND, MAIL_FROM, SMTP_CA_FILE, SMTP_HOST, SMTP_PASSWORD, SMTP_PORT, SMTP_SSL,
    SMTP_STARTTLS, SMTP_TIMEOUT, SMTP_USER,
)

log = logging.getLogger(__name__)


class MailError(Exception):
    def __init__(self, message, permanent=False):
        super().__init__(message)
        self.permanent = permanent


def one_line(value):
    """A header value without CR, LF or other control characters (each becomes a space)."""
    return " ".join("".join(" " if ord(char) < 32 or ord(char) == 127 else char
                            for char in str(value)).split())


class LogMailBackend:
    name = "log"

    def __init__(self, mail_from=MAIL_FROM.default):
        self.mail_from = mail_from

    @contextmanager
    def session(self):
        yield self

    def send(self, to, subject, body):
        log.info("mail to=%s subject=%r body=%r", to, one_line(subject), " ".join(body.split()))


class SmtpMailBackend:
    name = "smtp"

    def __init__(self, host="localhost", port=25, user="", password="", starttls=False,
                 mail_from=MAIL_FROM.default, timeout=SMTP_TIMEOUT.default, implicit_tls=False,
                 ca_file=""):
        if starttls and implicit_tls:
            raise ValueError("SMTP_STARTTLS and SMTP_SSL exclude each other: SMTP_SSL is TLS "
                             "from the first byte (port 465), SMTP_STARTTLS upgrades a plain "
                             "connection (port 587)")
        self.host = host
        self.port = int(port)
        self.user = user
        self.password = password
        self.starttls = starttls
        self.implicit_tls = implicit_tls
        self.ca_file = ca_file
        self.mail_from = mail_from
        self.timeout = float(timeout)

    def message(self, to, subject, body):
        message = EmailMessage()  # policy: email.policy.default
        message["From"] = one_line(self.mail_from)
        message["To"] = one_line(to)
        message["Subject"] = one_line(subject)
        message["Message-ID"] = make_msgid(domain="knowledgenest")
        message.set_content(body)
        return message

    def tls_context(self):
        return ssl.create_default_context(cafile=self.ca_file or None)

    def connect(self):
        """A logged-in SMTP connection (TLS as configured); MailError if there is none."""
        try:
            if self.implicit_tls:
                smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout,
                                        context=self.tls_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=self.tls_context())
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self.password)
            except BaseException:
                smtp.close()
                raise
            return smtp
        except Exception as exc:
            raise mail_error(exc, self.host, self.port) from exc

    @contextmanager
    def session(self):
        session = SmtpSession(self)
        try:
            yield session
        finally:
            session.close()

    def send(self, to, subject, body):
        with self.session() as session:
            session.send(to, subject, body)


class SmtpSession:
    """One connection for a batch of mail. A mail whose sending lost the connection leaves the
    next one to connect afresh; a connection that could not be made is not tried again for the
    rest of the batch (each of its mails fails with the same error, to be retried later)."""

    def __init__(self, backend):
        self.backend = backend
        self.smtp = None
        self.connect_error = None

    def send(self, to, subject, body):
        message = self.backend.message(to, subject, body)
        if self.connect_error is not None:
            raise self.connect_error
        if self.smtp is None:
            try:
                self.smtp = self.backend.connect()
            except MailError as exc:
                self.connect_error = exc
                raise
        try:
            self.smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:  # the server is closing this connection
                self.close()
            raise mail_error(exc, self.backend.host, self.backend.port) from exc
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
            raise mail_error(exc, self.backend.host, self.backend.port) from exc
        except Exception as exc:  # disconnected, timed out, reset: this connection is done
            self.close()
            raise mail_error(exc, self.backend.host, self.backend.port) from exc

    def close(self):
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except Exception:  # already gone: nothing to say goodbye to
                smtp.close()


def mail_error(exc, host, port):
    """The MailError for what smtplib raised: permanent for a 5xx, except 530 (not logged in)."""
    if isinstance(exc, MailError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return MailError(f"recipient refused: {exc.recipients}",
                         permanent=all(code >= 500 for code in codes))
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return MailError(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}")
    if isinstance(exc, smtplib.SMTPResponseException):
        # 5xx to the message itself (too big, rejected content) will not change on retry
        return MailError(f"SMTP server said {exc.smtp_code} {exc.smtp_error!r}",
                         permanent=exc.smtp_code >= 500 and exc.smtp_code != 530)
    return MailError(f"SMTP {host}:{port} unavailable: {type(exc).__name__}: {exc}")


def backend_from_config(config):
    """The backend ``MAIL_BACKEND`` names (``log`` unless set)."""
    mail_from = MAIL_FROM.read(config)
    if MAIL_BACKEND.read(config) == "log":
        return LogMailBackend(mail_from=mail_from)
    return SmtpMailBackend(
        host=SMTP_HOST.read(config), port=SMTP_PORT.read(config), user=SMTP_USER.read(config),
        password=SMTP_PASSWORD.read(config), starttls=SMTP_STARTTLS.read(config),
        implicit_tls=SMTP_SSL.read(config), ca_file=SMTP_CA_FILE.read(config),
        mail_from=mail_from, timeout=SMTP_TIMEOUT.read(config))
