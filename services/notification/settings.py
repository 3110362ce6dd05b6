"""notification's settings: the mail backend and the sender's retries (the reader:
services/kit/settings.py)."""
from services.kit.settings import Setting, flag, integer, one_of, seconds, text

MAIL_BACKEND = Setting("MAIL_BACKEND", one_of("log", "smtp"), "log",
                       "log (one log line per mail) or smtp")
MAIL_FROM = Setting("MAIL_FROM", text, "KnowledgeNest <no-reply@knowledgenest.local>",
                    "the From: address")
SMTP_HOST = Setting("SMTP_HOST", text, "localhost", "the SMTP server")
SMTP_PORT = Setting("SMTP_PORT", integer, 1025, "its port")
SMTP_USER = Setting("SMTP_USER", text, "", "its login (empty: none)")
SMTP_PASSWORD = Setting("SMTP_PASSWORD", text, "", "its password")
SMTP_STARTTLS = Setting("SMTP_STARTTLS", flag, False, "upgrade the connection with STARTTLS")
SMTP_SSL = Setting("SMTP_SSL", flag, False, "implicit TLS from the first byte (port 465)")
SMTP_CA_FILE = Setting("SMTP_CA_FILE", text, "",
                       "a CA bundle to trust for the server's certificate (empty: the system's)")
SMTP_TIMEOUT = Setting("SMTP_TIMEOUT", seconds, 10.0, "seconds per SMTP connection")
MAIL_RETRY_INTERVAL = Setting("MAIL_RETRY_INTERVAL", seconds, 5.0,
                              "seconds before a failed mail's first retry; the sweep's period")
MAIL_BATCH_DELAY = Setting("MAIL_BATCH_DELAY", seconds, 0.05,
                           "seconds the sender waits after a new notification, to batch a burst")
MAIL_MAX_RETRY_DELAY = Setting("MAIL_MAX_RETRY_DELAY", seconds, 3600.0,
                               "the longest delay between tries of a mail")
MAIL_MAX_ATTEMPTS = Setting("MAIL_MAX_ATTEMPTS", integer, 8, "tries before a mail is failed")
