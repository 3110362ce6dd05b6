"""Mail backends: how a notification leaves the building. Chosen by ``MAIL_BACKEND`` in config.

- ``log`` (the default): one readable log line per mail, on the ``services.notification.mail``
  logger; nothing leaves the machine.
- ``smtp``: a real SMTP server (``SMTP_HOST``, ``SMTP_PORT``, ``SMTP_USER``, ``SMTP_PASSWORD``,
  ``SMTP_STARTTLS``, ``MAIL_FROM``, ``SMTP_TIMEOUT``), through ``smtplib``: its sockets are
  green under eventlet's monkey patching, so a slow server does not stall the service.

``backend.send(to, subject, body)`` returns when the mail was accepted, or raises ``MailError``
(``permanent`` set when retrying cannot help, e.g. a 5xx refusal of the recipient).
"""
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

log = logging.getLogger(__name__)

DEFAULT_MAIL_FROM = "KnowledgeNest <no-reply@knowledgenest.local>"
DEFAULT_SMTP_TIMEOUT = 10.0


class MailError(Exception):
    def __init__(self, message, permanent=False):
        super().__init__(message)
        self.permanent = permanent


def _text(value, default=""):
    """A config value as a string: nameko's ``${VAR:}`` yields None or "" for an empty default."""
    if value is None:
        return default
    return str(value)


def _flag(value):
    if isinstance(value, bool):
        return value
    return _text(value).strip().lower() in ("1", "true", "yes", "on")


class LogMailBackend:
    name = "log"

    def __init__(self, mail_from=DEFAULT_MAIL_FROM):
        self.mail_from = mail_from

    def send(self, to, subject, body):
        log.info("mail to=%s subject=%r body=%r", to, subject, " ".join(body.split()))


class SmtpMailBackend:
    name = "smtp"

    def __init__(self, host="localhost", port=25, user="", password="", starttls=False,
                 mail_from=DEFAULT_MAIL_FROM, timeout=DEFAULT_SMTP_TIMEOUT):
        self.host = host
        self.port = int(port)
        self.user = user
        self.password = password
        self.starttls = starttls
        self.mail_from = mail_from
        self.timeout = float(timeout)

    def message(self, to, subject, body):
        message = EmailMessage()
        message["From"] = self.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="knowledgenest")
        message.set_content(body)
        return message

    def send(self, to, subject, body):
        message = self.message(to, subject, body)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if self.user:
                    smtp.login(self.user, self.password)
                smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise MailError(f"recipient refused: {exc.recipients}",
                            permanent=all(code >= 500 for code in codes)) from exc
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except smtplib.SMTPResponseException as exc:
            # 5xx to the message itself (too big, rejected content) will not change on retry
            raise MailError(f"SMTP server said {exc.smtp_code} {exc.smtp_error!r}",
                            permanent=exc.smtp_code >= 500 and exc.smtp_code != 530) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, dropped, TLS
            raise MailError(f"SMTP {self.host}:{self.port} unavailable: "
                            f"{type(exc).__name__}: {exc}") from exc


def backend_from_config(config):
    """The backend ``MAIL_BACKEND`` names (``log`` unless set)."""
    name = _text(config.get("MAIL_BACKEND"), "log").strip().lower() or "log"
    mail_from = _text(config.get("MAIL_FROM"), DEFAULT_MAIL_FROM) or DEFAULT_MAIL_FROM
    if name == "log":
        return LogMailBackend(mail_from=mail_from)
    if name == "smtp":
        return SmtpMailBackend(
            host=_text(config.get("SMTP_HOST"), "localhost") or "localhost",
            port=int(config.get("SMTP_PORT") or 25),
            user=_text(config.get("SMTP_USER")),
            password=_text(config.get("SMTP_PASSWORD")),
            starttls=_flag(config.get("SMTP_STARTTLS")),
            mail_from=mail_from,
            timeout=float(config.get("SMTP_TIMEOUT") or DEFAULT_SMTP_TIMEOUT))
    raise ValueError(f"MAIL_BACKEND must be 'log' or 'smtp', not {name!r}")
