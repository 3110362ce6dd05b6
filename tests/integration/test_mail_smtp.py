"""services/notification/mail.py against a real SMTP server (aiosmtpd in a subprocess on
loopback; no broker): one connection per batch, STARTTLS with login, implicit TLS (SMTP_SSL),
and headers a CR/LF in a title or name cannot break. The TLS certificate is made for the test
by openssl and trusted through SMTP_CA_FILE."""
import email
import email.policy
import json
import os
import shutil
import subprocess
import sys

import pytest

from services.notification.mail import MailError, SmtpMailBackend, backend_from_config
from tests.integration.test_notification import accepts_connections, free_port
from tests.support import processes
from tests.support.broker import wait_until

SMTP_SERVER = r'''
import json, os, ssl, sys, time, uuid
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, outdir, mode, cert, key = sys.argv[1:6]


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        name = "%020d-%s.json" % (time.time_ns(), uuid.uuid4().hex)
        with open(os.path.join(outdir, name + ".tmp"), "w") as out:
            tls = (session.ssl is not None
                   or server.transport.get_extra_info("ssl_object") is not None)
            json.dump({"peer": list(session.peer), "tls": tls,
                       "login": session.auth_data.decode() if session.auth_data else None,
                       "rcpt_tos": envelope.rcpt_tos,
                       "content": envelope.content.decode("utf-8", "replace")}, out)
        os.rename(os.path.join(outdir, name + ".tmp"), os.path.join(outdir, name))
        return "250 OK"


def authenticate(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"kn", b"secret"),
                      auth_data=auth_data.login)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
options = dict(hostname="127.0.0.1", port=int(port))
if mode == "ssl":
    options.update(ssl_context=context)
elif mode == "starttls":
    options.update(tls_context=context, require_starttls=True, authenticator=authenticate,
                   auth_require_tls=True)
controller = Controller(Recorder(), **options)
controller.start()
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
'''

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class Server:
    def __init__(self, directory, mode, certificate):
        self.port = free_port()
        self.inbox = directory / f"inbox-{mode}"
        self.inbox.mkdir()
        script = directory / "smtp_server.py"
        script.write_text(SMTP_SERVER)
        self.process = processes.Popen([sys.executable, str(script), str(self.port),
                                        str(self.inbox), mode, *map(str, certificate)])
        wait_until(lambda: accepts_connections(self.port), timeout=30,
                   message="SMTP server listening")

    def messages(self):
        received = []
        for name in sorted(os.listdir(self.inbox)):
            if name.endswith(".json"):
                raw = json.loads((self.inbox / name).read_text())
                raw["message"] = email.message_from_string(raw["content"],
                                                           policy=email.policy.default)
                received.append(raw)
        return received

    def stop(self):
        self.process.terminate()
        processes.wait(self.process, timeout=10)


@pytest.fixture
def smtp(tmp_path, certificate):
    servers = []

    def start(mode="plain"):
        servers.append(Server(tmp_path, mode, certificate))
        return servers[-1]
    yield start
    for server in servers:
        server.stop()


def test_a_batch_of_mail_goes_over_one_connection(smtp):
    server = smtp()
    backend = SmtpMailBackend(host="127.0.0.1", port=server.port)
    with backend.session() as session:
        for n in range(5):
            session.send(f"user{n}@example.com", f"Mail {n}", f"Body {n}")
    with backend.session() as session:
        session.send("later@example.com", "Another batch", "Body")
    received = wait_until(lambda: len(server.messages()) == 6 and server.messages(),
                          message="six mails received")
    peers = [tuple(mail["peer"]) for mail in received]
    assert len(set(peers[:5])) == 1  # the first five: one connection
    assert peers[5] != peers[0]  # the next batch: its own
    assert [mail["rcpt_tos"] for mail in received[:5]] == [[f"user{n}@example.com"]
                                                           for n in range(5)]


def test_a_title_with_cr_lf_cannot_add_a_header(smtp):
    server = smtp()
    backend = SmtpMailBackend(host="127.0.0.1", port=server.port)
    backend.send("ada@example.com", 'Your course "Evil\r\nBcc: x@evil" is live',
                 "Hi Ada,\n\nA body keeps its lines.\n")
    [mail] = wait_until(lambda: server.messages(), message="the mail received")
    assert mail["rcpt_tos"] == ["ada@example.com"]  # nobody else
    message = mail["message"]
    assert message["Bcc"] is None
    assert message["Subject"] == 'Your course "Evil Bcc: x@evil" is live'
    assert "\nBcc:" not in mail["content"].split("\n\n", 1)[0]
    assert message.get_content().replace("\r\n", "\n") == "Hi Ada,\n\nA body keeps its lines.\n"


def test_starttls_with_login(smtp, certificate):
    server = smtp("starttls")
    cert, _ = certificate
    backend = backend_from_config({
        "MAIL_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": server.port,
        "SMTP_STARTTLS": "true", "SMTP_USER": "kn", "SMTP_PASSWORD": "secret",
        "SMTP_CA_FILE": str(cert)})
    backend.send("ada@example.com", "Over STARTTLS", "Hi")
    [mail] = wait_until(lambda: server.messages(), message="the mail received")
    assert mail["tls"] is True and mail["login"] == "kn"


def test_implicit_tls_on_its_own_port(smtp, certificate):
    server = smtp("ssl")
    cert, _ = certificate
    backend = backend_from_config({
        "MAIL_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": server.port,
        "SMTP_SSL": "true", "SMTP_CA_FILE": str(cert)})
    with backend.session() as session:
        session.send("ada@example.com", "Over TLS", "Hi")
        session.send("alan@example.com", "Over TLS too", "Hi")
    received = wait_until(lambda: len(server.messages()) == 2 and server.messages(),
                          message="two mails received")
    assert all(mail["tls"] for mail in received)
    assert received[0]["peer"] == received[1]["peer"]


def test_an_untrusted_certificate_is_refused(smtp):
    server = smtp("ssl")
    backend = SmtpMailBackend(host="127.0.0.1", port=server.port, implicit_tls=True)
    with pytest.raises(MailError, match="CERTIFICATE_VERIFY_FAILED") as raised:
        backend.send("ada@example.com", "Not sent", "Hi")
    assert raised.value.permanent is False
    assert server.messages() == []


def test_a_server_that_is_away_fails_the_batch_with_one_attempt(tmp_path):
    backend = SmtpMailBackend(host="127.0.0.1", port=free_port())  # nobody listens
    errors = []
    with backend.session() as session:
        for n in range(3):
            try:
                session.send(f"u{n}@example.com", "x", "y")
            except MailError as exc:
                errors.append(exc)
    assert len(errors) == 3 and errors[0] is errors[1] is errors[2]  # connected once
    assert "unavailable" in str(errors[0]) and not errors[0].permanent


def test_starttls_and_ssl_together_are_refused():
    with pytest.raises(ValueError, match="SMTP_STARTTLS and SMTP_SSL"):
        backend_from_config({"MAIL_BACKEND": "smtp", "SMTP_STARTTLS": "true",
                             "SMTP_SSL": "true"})
