"""Real alert receivers on loopback: an SMTP server (aiosmtpd) and a Slack-like webhook server."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from hospitaldb_testing.prefect_servers import free_port

SMTP_USER = "alerts"
SMTP_PASSWORD = "smtp-Pa55"


def save_email_block(name: str, port: int) -> None:
    """An EmailServerCredentials block for a plain-SMTP server on loopback."""
    from prefect_email import EmailServerCredentials

    EmailServerCredentials(
        smtp_server="127.0.0.1",
        smtp_port=port,
        smtp_type="INSECURE",
        username=SMTP_USER,
        password=SMTP_PASSWORD,
    ).save(name, overwrite=True)


@dataclass
class ReceivedMail:
    mail_from: str
    recipients: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        return self.message.get_body(preferencelist=("plain",)).get_content()


@dataclass
class SmtpServer:
    """Accepts AUTH LOGIN/PLAIN without TLS (as a loopback test server may) and keeps every mail."""

    port: int = field(default_factory=free_port)
    received: list[ReceivedMail] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"

    def start(self) -> SmtpServer:
        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                SMTP_USER.encode(),
                SMTP_PASSWORD.encode(),
            )
            return AuthResult(success=ok)

        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, authenticator=authenticate, auth_require_tls=False
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


class WebhookServer(ThreadingHTTPServer):
    """Records each POST (path and JSON body) and answers with `status` (once `answer` is set, if held)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.status = 200
        self.answer: threading.Event | None = None  # set: every post is answered only once this is set
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/services/T000/B000/XoXoSECRETtoken"

    def texts(self) -> list[str]:
        return [body.get("text", "") for _, body in self.posts]


class _WebhookHandler(BaseHTTPRequestHandler):
    server: WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.posts.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
        if self.server.answer is not None:
            self.server.answer.wait(120)
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok" if self.server.status < 400 else b"server_error")

    def log_message(self, *args: Any) -> None:
        pass


def accept_each(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Hand every connection the listener accepts to handle, until the listener is closed."""
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        handle(connection)


class SilentServer:
    """Accepts TCP connections and never answers: a hung SMTP server."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=accept_each, args=(self.socket, self.connections.append), daemon=True).start()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.socket.close()
